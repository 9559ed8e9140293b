"""Values shared by worker processes in files prometheus_client's collector reads: summed over processes, a
forked child writes files of its own, files grow, threads add up, gauges keep their modes, a process id that
comes again goes on from its values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = '''
import os, sys
from mlport.observability.sharedvalues import use_shared_values
use_shared_values()
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


GROWTH = '''
from mlport.observability.sharedvalues import use_shared_values
use_shared_values()
import threading
from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess

counter = Counter("c", "c", ["a"], registry=CollectorRegistry())
for i in range(3000):  # keys of ~60 bytes each: the file grows past its first 64 KiB
    counter.labels(f"label-{i:05d}").inc(i)
shared = counter.labels("shared")
def add():
    for _ in range(20000):
        shared.inc()
threads = [threading.Thread(target=add) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
live = Gauge("g", "g", registry=CollectorRegistry(), multiprocess_mode="livesum")
live.set(7)
recent = Gauge("r", "r", registry=CollectorRegistry(), multiprocess_mode="mostrecent")
recent.set(3)
recent.set(5)
summed = CollectorRegistry()
multiprocess.MultiProcessCollector(summed)
samples = {(s.name, s.labels.get("a")): s.value for m in summed.collect() for s in m.samples}
print(sum(samples["c_total", f"label-{i:05d}"] for i in range(3000)), samples["c_total", "shared"],
      samples["g", None], samples["r", None])
'''


def test_files_grow_threads_add_up_and_gauges_keep_their_modes(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", GROWTH], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    labelled, shared, live, recent = map(float, out.stdout.split())
    assert (labelled, shared, live, recent) == (sum(range(3000)), 80000.0, 7.0, 5.0)
    sizes = {p.name.split("_")[0]: p.stat().st_size for p in tmp_path.iterdir()}
    assert sizes["counter"] > 1 << 16, sizes
    assert sorted(p.name.rsplit("_", 1)[0] for p in tmp_path.iterdir()) == ["counter", "gauge_livesum",
                                                                           "gauge_mostrecent"]


def test_a_restarted_process_with_the_same_id_goes_on_from_its_values(tmp_path: Path) -> None:
    """A process id can come again (a container's first process): the values in its file are read back and
    added to, as prometheus_client does."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    again = '''
import os
os.getpid = lambda: 4242
from mlport.observability import sharedvalues
sharedvalues._pid = 4242
sharedvalues.use_shared_values()
from prometheus_client import CollectorRegistry, Counter, multiprocess
counter = Counter("c", "c", ["a"], registry=CollectorRegistry()).labels("x")
counter.inc(2)
for name in ("y", "z"):
    Counter("c", "c", ["a"], registry=CollectorRegistry()).labels(name).inc(1)
summed = CollectorRegistry()
multiprocess.MultiProcessCollector(summed)
print(summed.get_sample_value("c_total", {"a": "x"}), summed.get_sample_value("c_total", {"a": "z"}))
'''
    first = subprocess.run([sys.executable, "-c", again], env=env, capture_output=True, text=True, timeout=60)
    second = subprocess.run([sys.executable, "-c", again], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.split() == ["2.0", "1.0"]
    assert second.stdout.split() == ["4.0", "2.0"]
    assert [p.name for p in tmp_path.iterdir()] == ["counter_4242.db"]
