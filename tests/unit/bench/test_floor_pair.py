"""The side-by-side bench's CPU accounting: the time of every process of a server's session."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.waiting import wait_for

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture(scope="module")
def pair() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("floor_pair")
    finally:
        sys.path.remove(str(BENCH))


def test_a_stat_line_is_read_after_the_name_even_with_parentheses_in_it(pair: ModuleType) -> None:
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    fields = ["S", "1", "4242", "4242", "0", "-1", "4194304", "0", "0", "0", "0", "150", "50", "7", "3"]
    line = f"4243 (py (worker) 2) {' '.join(fields)} 20 0 1"
    session, seconds = pair.stat_cpu(line)
    assert session == 4242 and seconds == pytest.approx(210 * tick)  # its own time and its waited children's


def test_the_cpu_of_a_session_counts_its_children_alive_or_ended(pair: ModuleType) -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    parent = ("import subprocess, sys, time\n"
              f"child = subprocess.Popen([sys.executable, '-c', {burn!r}])\n"
              f"exec({burn!r})\nsys.stdin.read()\nchild.wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdin=subprocess.PIPE, start_new_session=True)
    try:
        # both processes' 0.3 s, the child's also once it ended
        wait_for(lambda: pair.session_cpu(proc.pid) >= 0.55, timeout=60, what="0.55 s of CPU in the session")
    finally:
        proc.communicate(b"", timeout=60)
