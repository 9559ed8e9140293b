"""Image figures: base and model layer build times, layer sizes in a registry, and start-to-ready time.

    python bench/images.py [--base IMAGE]

Builds (with buildah) a base for the ONNX format and an iris model image on top, rebuilds the model image for a
second tag, pushes one to a local docker-registry on 127.0.0.1, reads the compressed layer sizes with skopeo,
and times `buildah run` of the image's command until /v2/health/ready answers.  Without --base, a Debian bookworm
base is made with mmdebstrap (as the tests do).  Writes bench/results/images-<date>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models as bench_models  # noqa: E402
from tests.tools.oci import ensure_debian_base, image_command, registry, run_image  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlport(*args: str) -> dict[str, object]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "mlport.cli.main", *args, "--output", "json"], capture_output=True,
                          text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def layer_sizes(ref: str) -> list[int]:
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], check=True,
                         capture_output=True, text=True).stdout
    return [int(layer["size"]) for layer in json.loads(raw)["layers"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", help="parent image of the base layer (default: a Debian base made here)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlport-bench-images-") as tmp_name:
        tmp = Path(tmp_name)
        parent = args.base or ensure_debian_base(tmp)
        cache = tmp / "pip-cache"
        (tmp / "v1").mkdir()
        v1 = bench_models.iris_onnx(tmp / "v1" / "iris.onnx")
        first = mlport("build", str(v1), "--tag", "localhost/bench-iris:1", "--base", parent, "--pip-cache",
                       str(cache), "--rebuild-base")
        model_only = mlport("build", str(v1), "--tag", "localhost/bench-iris:1b", "--base", parent, "--pip-cache",
                            str(cache))
        rows = [("base + model layer (base rebuilt)", f"{first['wall_s']} s"),
                ("model layer only (base reused)", f"{model_only['wall_s']} s")]
        with registry(tmp) as reg:
            subprocess.run(["buildah", "push", "--tls-verify=false", "-q", "localhost/bench-iris:1",
                            f"docker://{reg.host}/bench-iris:1"], check=True, capture_output=True, timeout=1800)
            sizes = layer_sizes(f"{reg.host}/bench-iris:1")
        rows += [("base layers, compressed in the registry", f"{sum(sizes[:-1]) / 1e6:.1f} MB"),
                 ("model layer, compressed in the registry", f"{sizes[-1] / 1e3:.1f} kB")]
        http = free_port()
        argv = image_command("localhost/bench-iris:1")
        argv = [*argv[:argv.index("--host")], "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", "0"]
        started = time.monotonic()
        with run_image("localhost/bench-iris:1", argv, tmp, f"http://127.0.0.1:{http}/v2/health/ready"):
            ready = time.monotonic() - started
            assert httpx.get(f"http://127.0.0.1:{http}/v2/models/iris").status_code == 200
        rows.append(("start to ready (buildah run, iris)", f"{ready:.2f} s"))
    lines = ["| figure | value |", "|---|---:|", *(f"| {a} | {b} |" for a, b in rows)]
    text = "\n".join(lines)
    print(text)
    out = HERE / "results" / f"images-{dt.datetime.now(dt.UTC):%Y-%m-%d-%H%M}.md"
    out.write_text(f"# Image figures\n\nbase: {parent}\n\n{text}\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
