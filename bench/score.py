"""Batch scoring throughput: ``mlport score`` against a plain pandas + onnxruntime script (the floor) on iris.

    python bench/score.py                 # 1,000,000 rows (CSV and Parquet)
    python bench/score.py --rows 200000   # a quicker run
    python bench/score.py --gigabytes 1   # also the peak RSS on a 1 GB CSV

Both read the same file, run the same ONNX model in mini-batches and write Parquet. The floor is the least
a batch scorer must do (read the chunk, one predict, write); mlport adds column mapping, labels, bad-row
checks, checkpoints and the temporary-name rename. Each point runs ``mlport score`` as a command (model
loading included) with 1 and 2 workers, and the time it reports for the run itself; peak RSS of the
process tree is sampled. Results go to stdout and to ``bench/results/<date>-score.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import iris_onnx

FIELDS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CHUNK = 10_000

FLOOR = r'''
import sys, pandas as pd, numpy as np, onnxruntime as ort, pyarrow as pa, pyarrow.parquet as pq
model, src, dst, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
so = ort.SessionOptions(); so.intra_op_num_threads = 1
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
cols = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
if src.endswith(".csv"):
    chunks = pd.read_csv(src, chunksize=chunk)
else:
    chunks = (b.to_pandas() for b in pq.ParquetFile(src).iter_batches(batch_size=chunk))
writer = None
for df in chunks:
    label, probs = sess.run(None, {"input": df[cols].to_numpy(np.float32)})
    t = pa.table({"id": df["id"].to_numpy(), "label": label,
                  "probabilities": pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel()), 3)})
    writer = writer or pq.ParquetWriter(dst, t.schema)
    writer.write_table(t)
writer.close()
'''


def _peak_rss(proc: subprocess.Popen[bytes]) -> tuple[float, int]:
    """Wait for ``proc``; return its wall time and the peak RSS (bytes) of it and its children, sampled."""
    started = time.perf_counter()
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.05)
    return time.perf_counter() - started, peak


def _tree_rss(pid: int) -> int:
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def _run(cmd: list[str]) -> tuple[float, int, str]:
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        seconds, peak = _peak_rss(proc)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{text}")
    return seconds, peak, text


def _scoring_seconds(stderr: str) -> float | None:
    """The time ``mlport score`` reports for the run itself (after start-up and model loading)."""
    found = re.search(r" in ([0-9.]+) s ", stderr)
    return float(found.group(1)) if found else None


def _data(folder: Path, rows: int) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    x = np.random.default_rng(0).uniform(0, 8, (rows, 4)).round(2)
    table = pa.table({"id": np.arange(rows), **{f: x[:, i] for i, f in enumerate(FIELDS)}})
    csv, parquet = folder / "rows.csv", folder / "rows.parquet"
    pacsv.write_csv(table, csv)
    pq.write_table(table, parquet)
    return csv, parquet


def _big_csv(path: Path, gigabytes: float) -> int:
    """A CSV of iris rows of about ``gigabytes`` GB, written a million rows at a time; its row count."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rows, rng = 0, np.random.default_rng(1)
    with pacsv.CSVWriter(path, pa.schema([("id", pa.int64()), *[(f, pa.float64()) for f in FIELDS]])) as out:
        while path.stat().st_size < gigabytes * 1e9:
            x = rng.uniform(0, 8, (1_000_000, 4)).round(2)
            out.write_table(pa.table({"id": np.arange(rows, rows + len(x)), **{f: x[:, i] for i, f in
                                                                              enumerate(FIELDS)}}))
            rows += len(x)
    return rows


def _memory_point(folder: Path, model: Path, gigabytes: float) -> str:
    """``mlport score`` on a CSV of ``gigabytes`` GB with one worker: its time and peak RSS (memory stays bounded
    by a few chunks whatever the input size)."""
    src = folder / "big.csv"
    rows = _big_csv(src, gigabytes)
    seconds, rss, _ = _run([sys.executable, "-m", "mlport.cli.main", "score", str(model), str(src), "-o",
                            str(folder / "big.parquet"), "--keep", "id", "--batch-size", str(CHUNK), "--workers",
                            "1", "--progress", "none"])
    return (f"{src.stat().st_size / 1e9:.2f} GB CSV ({rows:,} rows), 1 worker: {seconds:.1f} s, "
            f"{rows / seconds:,.0f} rows/s, peak RSS {rss / 2**20:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--gigabytes", type=float, default=0.0, help="also score a CSV of this size (peak RSS)")
    args = p.parse_args(argv)
    lines = [f"# mlport score vs pandas + onnxruntime: iris, {args.rows} rows, chunks of {CHUNK}",
             f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores", "",
             "| input | scorer | seconds | rows/s | x floor | run alone, s (after start-up) | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="mlport-bench-score-") as tmp:
        folder = Path(tmp)
        model = iris_onnx(folder / "iris" / "1" / "model.onnx").parent.parent
        (model / "model.yaml").write_text("fields:\n  input: {sepal_length: 0, sepal_width: 1, petal_length: 2, "
                                          "petal_width: 3}\nlabels:\n  label: [setosa, versicolor, virginica]\n")
        for src in _data(folder, args.rows):
            out = str(folder / "out.parquet")
            floor, floor_rss, _ = _run([sys.executable, "-c", FLOOR, str(model / "1" / "model.onnx"), str(src), out,
                                     str(CHUNK)])
            points: list[tuple[str, float, int, float | None]] = [("floor (pandas + onnxruntime)", floor, floor_rss,
                                                                  None)]
            for workers in (1, 2):
                seconds, rss, err = _run([sys.executable, "-m", "mlport.cli.main", "score", str(model), str(src),
                                          "-o", out, "--keep", "id", "--batch-size", str(CHUNK),
                                          "--workers", str(workers), "--progress", "none"])
                points.append((f"mlport score, {workers} worker{'s' if workers > 1 else ''}", seconds, rss,
                               _scoring_seconds(err)))
            for name, seconds, rss, inner in points:
                own = f"{inner:.2f} ({args.rows / inner:,.0f} rows/s)" if inner else "-"
                lines.append(f"| {src.suffix[1:]} | {name} | {seconds:.2f} | {args.rows / seconds:,.0f} | "
                             f"{floor / seconds:.2f} | {own} | {rss / 2**20:.0f} |")
                print(lines[-1], flush=True)
        if args.gigabytes > 0:
            lines += ["", _memory_point(folder, model, args.gigabytes)]
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"{dt.datetime.now(dt.UTC):%Y-%m-%d-%H%M}-score.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
