"""Values shared by worker processes under a kept process id: summed over processes, and a forked child still
writes to files of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = '''
import os, sys
from mlport.observability.sharedvalues import use_kept_pid
use_kept_pid()
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess

counter = Counter("c", "c", ["a"], registry=CollectorRegistry()).labels("x")
histogram = Histogram("h", "h", registry=CollectorRegistry())
counter.inc(3)
histogram.observe(0.5)
child = os.fork()
if child == 0:
    counter.inc(2)
    histogram.observe(0.25)
    os._exit(0)
os.waitpid(child, 0)
counter.inc(1)
summed = CollectorRegistry()
multiprocess.MultiProcessCollector(summed)
print(summed.get_sample_value("c_total", {"a": "x"}), summed.get_sample_value("h_sum"),
      summed.get_sample_value("h_count"), os.getpid(), child)
'''


def test_values_are_summed_and_a_fork_writes_its_own_files(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    total, total_sum, count, parent, child = out.stdout.split()
    assert (float(total), float(total_sum), float(count)) == (6.0, 0.75, 2.0)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted([f"counter_{parent}.db", f"counter_{child}.db", f"histogram_{parent}.db",
                            f"histogram_{child}.db"])
