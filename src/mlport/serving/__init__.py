"""Running the runtime server (``mlport serve``): one process, or several worker processes sharing the ports.

- :mod:`mlport.serving.sockets`: binding the ports, with one clear error when one is taken;
- :mod:`mlport.serving.process`: one server process (HTTP and gRPC on one event loop);
- :mod:`mlport.serving.workers`: ``--workers N``, the supervisor and its worker processes.

Everything the server needs arrives as arguments (:class:`~mlport.settings.Settings` and what the supervisor
adds); nothing is passed through environment variables.  This package imports no metrics library at
import time: a worker process must choose prometheus_client's multiprocess mode before it is imported.
"""

from __future__ import annotations

import logging
from typing import Literal

from mlport.settings import Settings

__all__ = ["EXIT_MODEL_FAILED", "configure_logging", "serve"]

#: The exit status of a server that stopped because a model failed to load (``--exit-on-error``).
EXIT_MODEL_FAILED = 3


def configure_logging(level: str, role: str | Literal[False] = False) -> None:
    tag = f" [{role}]" if role else ""
    logging.basicConfig(level=level.upper(), format=f"%(asctime)s %(levelname)s{tag} %(name)s: %(message)s")


def serve(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM (which drain in-flight requests first); returns the exit status."""
    configure_logging(settings.log_level, settings.workers > 1 and "parent")
    if settings.workers > 1:
        from mlport.serving.workers import Supervisor

        return Supervisor(settings).run()
    from mlport.serving.process import serve_process

    return serve_process(settings)
