"""Batch scoring throughput: ``mlport score`` against a plain pandas + onnxruntime script (the floor).

    python bench/score.py                      # 1,000,000 rows, 3 rounds (iris and titanic; CSV and Parquet)
    python bench/score.py --rows 200000 --rounds 1
    python bench/score.py --gigabytes 1        # also the peak RSS on a 1 GB CSV

Two models: iris (ONNX, four numeric inputs) and the ``titanic`` preset (a scikit-learn pipeline as ONNX:
two numeric and three string inputs). Both scorers read the same file, run the same ONNX model in chunks of
10,000 rows and write the same Parquet columns (``id``, the label text, the probabilities). The floor is
the least a batch scorer must do (read a chunk with pandas, one ``InferenceSession.run``, write); mlport adds
column mapping, bad-row checks, checkpoints and the temporary-name rename. Each round runs the floor and
``mlport score`` with 1 and 2 workers one after the other, as commands (start-up and model loading
included), in a rotating order; the table gives the medians over the rounds (a shared machine's load moves
every figure: read the ratios), mlport's own run time (from its summary) and the peak RSS of the process
tree. Start-up alone: both scorers on a 10-row file. Results go to stdout and ``bench/results/<date>-score.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
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
IRIS_YAML = ("fields:\n  input: {sepal_length: 0, sepal_width: 1, petal_length: 2, petal_width: 3}\n"
             "labels:\n  label: [setosa, versicolor, virginica]\n")

FLOOR = r'''
import sys, numpy as np, pandas as pd, onnxruntime as ort, pyarrow as pa, pyarrow.parquet as pq
model, src, dst, chunk, kind = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
so = ort.SessionOptions(); so.intra_op_num_threads = 1
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
names = np.array({"iris": ["setosa", "versicolor", "virginica"], "titanic": ["died", "survived"]}[kind], object)
def feed(df):
    if kind == "iris":
        return {"input": df[["sepal_length", "sepal_width", "petal_length", "petal_width"]].to_numpy(np.float32)}
    f = {c: df[c].to_numpy(np.float32).reshape(-1, 1) for c in ("fare", "age")}
    f.update({c: df[c].astype(str).to_numpy(object).reshape(-1, 1) for c in ("sex", "embarked", "pclass")})
    return f
if src.endswith(".csv"):
    chunks = pd.read_csv(src, chunksize=chunk)
else:
    chunks = (b.to_pandas() for b in pq.ParquetFile(src).iter_batches(batch_size=chunk))
writer = None
for df in chunks:
    label, probs = sess.run(None, feed(df))
    t = pa.table({"id": df["id"].to_numpy(), "label": names[label.reshape(-1)],
                  "probabilities": pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel()), probs.shape[1])})
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


def _iris_table(rows: int, seed: int = 0) -> object:
    import pyarrow as pa

    x = np.random.default_rng(seed).uniform(0, 8, (rows, 4)).round(2)
    return pa.table({"id": np.arange(rows), **{f: x[:, i] for i, f in enumerate(FIELDS)}})


def _titanic_table(rows: int) -> object:
    """Passengers: fare and age as numbers, sex, port and class (``1``..``3``) as text."""
    import pyarrow as pa

    rng = np.random.default_rng(2)
    pclass = rng.choice(["1", "2", "3"], rows, p=[0.25, 0.2, 0.55])
    return pa.table({"id": np.arange(rows), "fare": rng.lognormal(2.7, 0.9, rows).round(2),
                     "sex": rng.choice(["male", "female"], rows), "embarked": rng.choice(["C", "Q", "S"], rows),
                     "pclass": pa.array(pclass.tolist(), pa.string()), "age": rng.uniform(1, 80, rows).round(1)})


def _write(table: object, folder: Path, stem: str) -> tuple[Path, Path]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    csv, parquet = folder / f"{stem}.csv", folder / f"{stem}.parquet"
    pacsv.write_csv(table, csv)
    pq.write_table(table, parquet)
    return csv, parquet


def _models(folder: Path) -> dict[str, Path]:
    """``{kind: model folder}``: iris written here, titanic built from mlport's preset."""
    from mlport import presets

    iris = iris_onnx(folder / "iris" / "1" / "model.onnx").parent.parent
    (iris / "model.yaml").write_text(IRIS_YAML)
    return {"iris": iris, "titanic": presets.build("titanic", root=folder / "presets")}


def _onnx(model: Path) -> Path:
    return next(model.glob("1/*.onnx"))


def _mlport(model: Path, src: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "mlport.cli.main", "score", str(model), str(src), "-o", str(out), "--keep", "id",
            "--batch-size", str(CHUNK), "--workers", str(workers), "--progress", "none"]


def _rounds(kind: str, model: Path, src: Path, folder: Path, rounds: int) -> dict[str, list[tuple[float, int, float]]]:
    """``{scorer: [(seconds, peak RSS, run alone seconds or 0), ...]}`` over ``rounds`` rotating rounds."""
    out = folder / "out.parquet"
    cmds = {"floor": [sys.executable, "-c", FLOOR, str(_onnx(model)), str(src), str(out), str(CHUNK), kind],
            "1 worker": _mlport(model, src, out, 1), "2 workers": _mlport(model, src, out, 2)}
    got: dict[str, list[tuple[float, int, float]]] = {name: [] for name in cmds}
    names = list(cmds)
    for r in range(rounds):
        for name in names[r % 3:] + names[:r % 3]:
            seconds, rss, err = _run(cmds[name])
            got[name].append((seconds, rss, _scoring_seconds(err) or 0.0))
    return got


def _lines(kind: str, fmt: str, rows: int, got: dict[str, list[tuple[float, int, float]]]) -> list[str]:
    floor = statistics.median(s for s, _, _ in got["floor"])
    lines = []
    for name, runs in got.items():
        seconds = statistics.median(s for s, _, _ in runs)
        inner = statistics.median(i for _, _, i in runs)
        own = f"{inner:.2f} ({rows / inner:,.0f} rows/s)" if inner else "-"
        scorer = "floor (pandas + onnxruntime)" if name == "floor" else f"mlport score, {name}"
        lines.append(f"| {kind} | {fmt} | {scorer} | {seconds:.2f} | {rows / seconds:,.0f} | {floor / seconds:.2f} | "
                     f"{own} | {max(r for _, r, _ in runs) / 2**20:.0f} |")
    return lines


def _startup(folder: Path, models: dict[str, Path], rounds: int) -> str:
    """Both scorers on a 10-row CSV: their start-up (imports, model loading) with almost no rows."""
    src, _ = _write(_iris_table(10), folder, "ten")
    out = folder / "ten.parquet"
    floor, mlport = [], []
    for _ in range(max(rounds, 3)):
        floor.append(_run([sys.executable, "-c", FLOOR, str(_onnx(models["iris"])), str(src), str(out), "10",
                           "iris"])[0])
        mlport.append(_run(_mlport(models["iris"], src, out, 1))[0])
    return (f"Start-up (iris, a 10-row CSV, medians): floor {statistics.median(floor):.2f} s, "
            f"mlport score {statistics.median(mlport):.2f} s")


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
    seconds, rss, _ = _run(_mlport(model, src, folder / "big.parquet", 1))
    return (f"{src.stat().st_size / 1e9:.2f} GB CSV ({rows:,} rows), 1 worker: {seconds:.1f} s, "
            f"{rows / seconds:,.0f} rows/s, peak RSS {rss / 2**20:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3, help="rounds of floor, 1 worker, 2 workers (medians)")
    p.add_argument("--models", nargs="+", default=["iris", "titanic"], choices=["iris", "titanic"])
    p.add_argument("--gigabytes", type=float, default=0.0, help="also score a CSV of this size (peak RSS)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    lines = [f"# mlport score vs pandas + onnxruntime: {args.rows} rows, chunks of {CHUNK}, medians of "
             f"{args.rounds} rounds",
             f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load {load:.1f} at the start", "",
             "| model | input | scorer | seconds | rows/s | x floor | run alone, s (after start-up) | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory(prefix="mlport-bench-score-") as tmp:
        folder = Path(tmp)
        models = _models(folder)
        tables = {"iris": _iris_table, "titanic": _titanic_table}
        for kind in args.models:
            for src in _write(tables[kind](args.rows), folder, kind):
                for line in _lines(kind, src.suffix[1:], args.rows, _rounds(kind, models[kind], src, folder,
                                                                             args.rounds)):
                    lines.append(line)
                    print(line, flush=True)
                src.unlink()
        lines += ["", _startup(folder, models, args.rounds)]
        print(lines[-1], flush=True)
        if args.gigabytes > 0:
            lines += ["", _memory_point(folder, models["iris"], args.gigabytes)]
            print(lines[-1], flush=True)
    lines += ["", f"load {os.getloadavg()[0]:.1f} at the end"]
    text = "\n".join(lines) + "\n"
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"{dt.datetime.now(dt.UTC):%Y-%m-%d-%H%M}-score.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
