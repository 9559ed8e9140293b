"""The inference service and the codecs of every wire protocol."""
