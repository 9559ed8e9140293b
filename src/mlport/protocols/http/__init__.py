"""The ASGI application: describe/eval, Open Inference Protocol v2 and TF Serving REST."""

from mlport.protocols.http.app import build_app

__all__ = ["build_app"]
