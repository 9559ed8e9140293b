"""The protocol definition (``inference.proto``) and its generated Python modules (scripts/gen_grpc.sh)."""
