"""prometheus_client's multiprocess values without a system call per update.

In multiprocess mode (the workers of ``mlport serve --workers N``) every counter increment and histogram
observation checks the process id (``os.getpid()``: a system call) to notice a fork.  A worker's id changes
only when it forks, and a fork is seen here as it happens, so the id is kept and read from memory;
the values, their files and their format stay prometheus_client's own
(``values.MultiProcessValue(process_identifier=...)``, the library's documented way to name the process).
Call :func:`use_kept_pid` in a worker before any metric is created.
"""

from __future__ import annotations

import os

__all__ = ["use_kept_pid"]

_pid = os.getpid()


def _kept_pid() -> int:
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def use_kept_pid() -> None:
    """Make the metrics created from now on keep their values in the shared files under the kept process id."""
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue(process_identifier=_kept_pid)  # type: ignore[no-untyped-call]
