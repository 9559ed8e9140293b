"""Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), served beside HTTP.

Importing this package is cheap: the generated protocol modules load only with
:mod:`mlport.protocols.grpc.server`, when a server starts.
"""
