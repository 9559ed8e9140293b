"""Progress of a run: a rich progress bar (rows, rows/s, ETA) on a terminal, plain lines now and then otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "make_progress"]


class Progress:
    """Counts rows; the base class says nothing (``--quiet``)."""

    def __init__(self) -> None:
        self.rows = 0
        self.failed = 0
        self.started = time.monotonic()

    def start(self, total: int | None) -> None:
        self.total = total

    def advance(self, rows: int, failed: int) -> None:
        self.rows += rows
        self.failed += failed

    def close(self) -> None:
        pass


class _Lines(Progress):
    """One line every ``interval`` seconds: rows done, failed, rows/s and (when the total is known) ETA."""

    def __init__(self, out: TextIO, interval: float) -> None:
        super().__init__()
        self.out = out
        self.interval = interval
        self.last = time.monotonic()
        self.total: int | None = None

    def advance(self, rows: int, failed: int) -> None:
        super().advance(rows, failed)
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.rows / elapsed
        total = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total is not None and rate > 0:
            eta = f", ETA {max(self.total - self.rows, 0) / rate:.0f} s"
        print(f"scored {self.rows}{total} rows ({self.failed} failed), {rate:,.0f} rows/s{eta}",
              file=self.out, flush=True)


class _Bar(Progress):
    def __init__(self, out: TextIO) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar: Any = RichProgress(
            TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
            TextColumn("{task.fields[rate]} rows/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=Console(file=out), transient=False)
        self._task: Any = None

    def start(self, total: int | None) -> None:
        self._bar.start()
        self._task = self._bar.add_task("scoring", total=total, rate="-")

    def advance(self, rows: int, failed: int) -> None:
        super().advance(rows, failed)
        rate = self.rows / max(time.monotonic() - self.started, 1e-9)
        self._bar.update(self._task, advance=rows, rate=f"{rate:,.0f}")

    def close(self) -> None:
        self._bar.stop()


def make_progress(mode: str = "auto", out: TextIO | None = None, interval: float = 10.0) -> Progress:
    """``auto``: a bar on a terminal, lines otherwise; ``bar``, ``lines`` or ``none`` to choose."""
    stream = out or sys.stderr
    if mode == "auto":
        mode = "bar" if stream.isatty() else "lines"
    if mode == "bar":
        return _Bar(stream)
    if mode == "lines":
        return _Lines(stream, interval)
    return Progress()
