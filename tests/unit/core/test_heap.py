"""A server process settles its heap once started: what is alive is frozen, young collections far apart."""

from __future__ import annotations

import subprocess
import sys


def test_settle_freezes_the_heap_and_spaces_young_collections() -> None:
    code = ("import gc\nfrom mlport.core import heap\nassert gc.get_freeze_count() == 0\nheap.settle()\n"
            "print(gc.get_freeze_count() > 0, gc.get_threshold()[0] == heap.YOUNG_THRESHOLD,"
            " gc.get_threshold()[1:] == (10, 10))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "True", "True"], out.stderr
