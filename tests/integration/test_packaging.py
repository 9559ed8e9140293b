"""``mlport build``: real images built with buildah on a base made from Debian packages, pushed to a real OCI
registry (docker-registry), inspected with skopeo, pulled back by digest and run with ``buildah run``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.builders import ort_run, scale_onnx
from tests.conftest import free_port
from tests.s3server import S3Server, make_bucket, s3_client, s3_server  # noqa: F401 - the session fixture
from tests.tools.oci import ensure_debian_base, image_command, missing_tools, registry, run_image

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(missing_tools()) and not os.environ.get("CI"),
                                                    reason=f"needs {', '.join(missing_tools())}")]

X = np.array([[1.0, -2.0, 0.5], [3.0, 4.0, -1.5]], dtype=np.float32)


def mlport(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlport.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def build(source: Path, tag: str, base: str, cache: Path, *extra: str) -> dict[str, Any]:
    done = mlport("build", str(source), "--tag", tag, "--base", base, "--pip-cache", str(cache), "--output",
                  "json", *extra)
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def inspect(image: str) -> dict[str, Any]:
    out = subprocess.run(["buildah", "inspect", "--type", "image", image], check=True, capture_output=True,
                         text=True).stdout
    return dict(json.loads(out)["OCIv1"])


def assert_serves_scale(image: str, root: Path, factor: float) -> None:
    """Run ``image``'s server (``buildah run``, loopback ports) and check its OIP answer is ``X * factor``."""
    http = free_port()
    argv = ["mlport", "serve", "/models", "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", "0"]
    url = f"http://127.0.0.1:{http}"
    with run_image(image, argv, root, url + "/v2/health/ready"):
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": X.ravel().tolist()}]}
        answer = httpx.post(url + "/v2/models/scale/infer", json=body).json()
        np.testing.assert_allclose(np.array(answer["outputs"][0]["data"]).reshape(2, 3), X * factor, rtol=1e-6)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Debian base, two versions of an ONNX model and their images (built once for the module)."""
    root = tmp_path_factory.mktemp("images")
    base = ensure_debian_base(root)
    cache = root / "pip-cache"
    models = {}
    for version, factor in ((1, 2.0), (2, 3.0)):
        folder = root / f"scale-v{version}"
        folder.mkdir()
        models[version] = scale_onnx(folder / "scale.onnx", factor)
    images = {v: build(models[v], f"localhost/mlport-test-scale:{v}", base, cache, "--model-version", str(v))
              for v in models}
    return {"root": root, "base": base, "cache": cache, "models": models, "images": images}


def test_layers_labels_and_reproducible_model_layer(work: dict[str, Any]) -> None:
    v1, v2 = (inspect(f"localhost/mlport-test-scale:{v}") for v in (1, 2))
    layers1, layers2 = v1["rootfs"]["diff_ids"], v2["rootfs"]["diff_ids"]
    # the second version shares every layer of the first but its own model layer
    assert layers1[:-1] == layers2[:-1] and layers1[-1] != layers2[-1]
    assert work["images"][1]["base"] == work["images"][2]["base"]
    assert layers1[-1] == work["images"][1]["model_layer"]
    labels = v2["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    for key in ("created", "source", "title"):
        assert labels[f"org.opencontainers.image.{key}"]
    assert labels["dev.mlport.model.name"] == "scale" and labels["dev.mlport.model.version"] == "2"
    assert labels["dev.mlport.model.format"] == "onnx"
    assert labels["dev.mlport.model.sha256"] == work["images"][2]["sha256"]
    signature = json.loads(labels["dev.mlport.model.signature"])
    assert [i["name"] for i in signature["inputs"]] == ["x"] and [o["name"] for o in signature["outputs"]] == ["y"]
    assert v2["config"]["User"] == "1000:1000"
    assert v2["config"]["Entrypoint"] == ["mlport"]
    assert v2["config"]["Cmd"] == ["serve", "/models", "--host", "0.0.0.0", "--http-port", "8080",
                                   "--grpc-port", "8081"]
    # the same inputs give the same model layer, even after the file's time changes
    os.utime(work["models"][1], (1_000_000, 1_000_000))
    again = build(work["models"][1], "localhost/mlport-test-scale:1-again", work["base"], work["cache"],
                  "--model-version", "1")
    assert again["model_layer"] == work["images"][1]["model_layer"]


def test_each_image_serves_as_uid_1000_and_stops_cleanly(work: dict[str, Any]) -> None:
    for version, factor in ((1, 2.0), (2, 3.0)):
        http, grpc = free_port(), free_port()
        argv = image_command(f"localhost/mlport-test-scale:{version}")
        argv = [*argv[:argv.index("--host")], "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc)]
        url = f"http://127.0.0.1:{http}"
        with run_image(f"localhost/mlport-test-scale:{version}", argv, work["root"], url + "/v2/health/ready") as run:
            pid = run.server_pid()
            status = Path(f"/proc/{pid}/status").read_text()
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert uid_line.split()[1:] == ["1000"] * 4, uid_line
            described = httpx.get(url + "/models/scale/describe").json()
            assert [i["name"] for i in described["inputs"]] == ["x"]
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": X.ravel().tolist()}]}
            answer = httpx.post(url + "/v2/models/scale/infer", json=body).json()
            want = ort_run(work["models"][version], {"x": X})["y"]
            np.testing.assert_allclose(np.array(answer["outputs"][0]["data"]).reshape(2, 3), want, rtol=1e-6)
            np.testing.assert_allclose(want, X * factor, rtol=1e-6)
            os.kill(pid, signal.SIGTERM)
            assert run.proc.wait(30) == 0, run.log.read_text()[-3000:]


@pytest.mark.skipif(shutil.which("podman") is None and not os.environ.get("CI"), reason="needs podman")
def test_podman_builds_the_same_image_as_buildah(work: dict[str, Any]) -> None:
    """``--builder podman`` (podman's build, chroot isolation) builds the base layer (RUN steps, the pip cache
    mount, build args) and the model layer; the model layer and the labels equal buildah's, and it serves."""
    parent = "localhost/mlport-test-debian:podman"  # a parent of its own, so podman builds a base of its own
    tag = "localhost/mlport-test-scale:1-podman"
    subprocess.run(["buildah", "tag", work["base"], parent], check=True, capture_output=True)
    built: dict[str, Any] = {}
    try:
        built = build(work["models"][1], tag, parent, work["cache"], "--builder", "podman", "--rebuild-base",
                      "--model-version", "1")
        assert built["base"] != work["images"][1]["base"]
        assert built["model_layer"] == work["images"][1]["model_layer"]
        by_podman, by_buildah = inspect(tag), inspect("localhost/mlport-test-scale:1")
        assert by_podman["rootfs"]["diff_ids"][-1] == built["model_layer"]
        for config in (by_podman["config"], by_buildah["config"]):
            config["Labels"].pop("org.opencontainers.image.created")
        for key in ("Labels", "User", "Entrypoint", "Cmd", "ExposedPorts", "Env", "WorkingDir", "StopSignal"):
            assert by_podman["config"].get(key) == by_buildah["config"].get(key), key
        assert_serves_scale(tag, work["root"], 2.0)
    finally:
        for image in (tag, built.get("base"), parent):
            if image:
                subprocess.run(["podman", "rmi", "--force", image], capture_output=True, check=False)


def test_a_manifest_file_takes_the_files_it_uses_into_its_image(work: dict[str, Any]) -> None:
    folder = work["root"] / "flow"
    (folder / "steps").mkdir(parents=True)
    scale_onnx(folder / "steps" / "x2.onnx", 2.0)
    scale_onnx(folder / "steps" / "x3.onnx", 3.0)
    scale_onnx(folder / "unused.onnx", 5.0)
    (folder / "chain.yaml").write_text("flow:\n  - {model: steps/x2.onnx, outputs: {y: doubled}}\n"
                                       "  - {model: steps/x3.onnx, inputs: {x: doubled}}\n")
    built = build(folder / "chain.yaml", "localhost/mlport-test-chain:1", work["base"], work["cache"])
    assert built["model"] == "chain" and built["formats"] == ["manifest", "onnx"]
    http = free_port()
    argv = ["mlport", "serve", "/models", "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", "0"]
    url = f"http://127.0.0.1:{http}"
    with run_image("localhost/mlport-test-chain:1", argv, work["root"], url + "/v2/health/ready"):
        assert [m["name"] for m in httpx.post(url + "/v2/repository/index", json={}, timeout=30).json()] == ["chain"]
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": X.ravel().tolist()}]}
        answer = httpx.post(url + "/v2/models/chain/infer", json=body, timeout=30).json()
        np.testing.assert_allclose(np.array(answer["outputs"][0]["data"]).reshape(2, 3), X * 6.0, rtol=1e-6)


def test_push_inspect_pull_by_digest_and_run(work: dict[str, Any]) -> None:
    with registry(work["root"]) as reg:
        pushed = {}
        for version in (1, 2):
            ref = f"{reg.host}/scale:{version}"
            done = mlport("build", str(work["models"][version]), "--tag", ref, "--base", work["base"],
                          "--pip-cache", str(work["cache"]), "--model-version", str(version), "--push",
                          "--no-tls-verify", "--output", "json")
            assert done.returncode == 0, done.stderr[-3000:]
            pushed[version] = json.loads(done.stdout.strip().splitlines()[-1])
            assert pushed[version]["digest"].startswith("sha256:")
        seen = {}
        for version in (1, 2):
            out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{reg.host}/scale:{version}"],
                                 check=True, capture_output=True, text=True).stdout
            seen[version] = json.loads(out)
            assert seen[version]["Digest"] == pushed[version]["digest"]
            assert seen[version]["Labels"]["dev.mlport.model.version"] == str(version)
        # in the registry too, version 2 added one layer of its own
        assert seen[1]["Layers"][:-1] == seen[2]["Layers"][:-1] and seen[1]["Layers"][-1] != seen[2]["Layers"][-1]
        by_digest = f"{reg.host}/scale@{pushed[2]['digest']}"
        subprocess.run(["buildah", "rmi", "-f", f"{reg.host}/scale:2"], capture_output=True, check=False)
        subprocess.run(["buildah", "pull", "--tls-verify=false", "-q", by_digest], check=True, capture_output=True,
                       timeout=600)
        assert_serves_scale(by_digest, work["root"], 3.0)


def test_the_manifest_args_ports_and_probes_are_what_the_image_answers_on(work: dict[str, Any]) -> None:
    """The image started with exactly the args of the rendered Deployment answers the probes on its ports."""
    import yaml

    done = mlport("k8s", "render", "--name", "scale", "--image", "localhost/mlport-test-scale:1")
    assert done.returncode == 0, done.stderr
    deployment = next(o for o in yaml.safe_load_all(done.stdout) if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    entrypoint = image_command("localhost/mlport-test-scale:1")[:1]
    with run_image("localhost/mlport-test-scale:1", [*entrypoint, *container["args"]], work["root"],
                   f"http://127.0.0.1:{ports['http']}{container['readinessProbe']['httpGet']['path']}"):
        live = container["livenessProbe"]["httpGet"]["path"]
        assert httpx.get(f"http://127.0.0.1:{ports['http']}{live}").status_code == 200
        import grpc

        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)


def test_a_sklearn_model_image(work: dict[str, Any]) -> None:
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    path = work["root"] / "iris.skops"
    sio.dump(model, path)
    built = build(path, "localhost/mlport-test-iris:1", work["base"], work["cache"])
    assert built["formats"] == ["sklearn"] and built["base"] != work["images"][1]["base"]
    http = free_port()
    argv = ["mlport", "serve", "/models", "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", "0"]
    url = f"http://127.0.0.1:{http}"
    with run_image("localhost/mlport-test-iris:1", argv, work["root"], url + "/v2/health/ready"):
        rows = x[[0, 60, 120]].astype(np.float32)
        answer = httpx.post(url + "/models/iris/eval", json={"input": rows.tolist()}).json()
        assert answer["label"] == model.predict(rows).tolist()


@pytest.mark.parametrize("bad", ["scale\nRUN id", "scale:1; id", "$(id)", "scale:`id`", "Scale:1", "scale:a b"])
def test_hostile_tags_and_names_are_refused(work: dict[str, Any], bad: str) -> None:
    done = mlport("build", str(work["models"][1]), "--tag", bad, "--base", work["base"], timeout=120)
    assert done.returncode == 2 and "image reference" in done.stderr and "Traceback" not in done.stderr
    done = mlport("build", str(work["models"][1]), "--tag", "localhost/ok:1", "--name", bad, timeout=120)
    assert done.returncode == 2 and "name" in done.stderr and "Traceback" not in done.stderr
    done = mlport("build", str(work["models"][1]), "--tag", "localhost/ok:1", "--base", bad, timeout=120)
    assert done.returncode == 2 and "image reference" in done.stderr


def test_the_runtime_only_image_serves_models_from_s3(work: dict[str, Any], s3_server: S3Server) -> None:  # noqa: F811
    done = mlport("build", "--runtime-only", "--format", "onnx", "--tag", "localhost/mlport-test-runtime:1",
                  "--base", work["base"], "--pip-cache", str(work["cache"]), "--output", "json")
    assert done.returncode == 0, done.stderr[-3000:]
    runtime = json.loads(done.stdout.strip().splitlines()[-1])
    assert runtime["base"] == work["images"][1]["base"]  # the same formats reuse the same base layer
    labels = inspect("localhost/mlport-test-runtime:1")["config"]["Labels"]
    assert labels["dev.mlport.runtime-only"] == "true" and "dev.mlport.model.name" not in labels
    bucket = make_bucket(s3_server)
    s3_client(s3_server).upload_file(str(work["models"][2]), bucket, "models/scale/2/scale.onnx")
    http = free_port()
    argv = ["mlport", "serve", f"s3://{bucket}/models/scale/2", "--s3-endpoint-url", s3_server.endpoint_url,
            "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", "0"]
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
           "AWS_DEFAULT_REGION": s3_server.region}
    url = f"http://127.0.0.1:{http}"
    with run_image("localhost/mlport-test-runtime:1", argv, work["root"], url + "/v2/health/ready", env=env):
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": X.ravel().tolist()}]}
        answer = httpx.post(url + "/v2/models/scale/infer", json=body).json()
        np.testing.assert_allclose(np.array(answer["outputs"][0]["data"]).reshape(2, 3), X * 3.0, rtol=1e-6)


def test_hub_builds_a_version_as_a_job_and_renders_its_manifests(work: dict[str, Any], tmp_path: Path) -> None:
    import yaml

    from tests.hubutil import cli, start_hub, wait_for

    env = {"MLPORT_HUB_BUILD_BASE": work["base"], "MLPORT_HUB_BUILD_PIP_CACHE": str(work["cache"])}
    hub = start_hub(tmp_path / "hub", env=env)
    try:
        with registry(work["root"]) as reg:
            admin = hub.client(hub.login())
            assert admin.post("/api/v1/models", json={"name": "scale"}).status_code == 201
            r = admin.post("/api/v1/models/scale/versions", params={"filename": "scale.onnx"},
                           content=work["models"][1].read_bytes(),
                           headers={"content-type": "application/octet-stream"})
            assert r.status_code == 201, r.text
            bad = admin.post("/api/v1/models/scale/versions/1/build", json={"tag": "x$(id)"})
            assert bad.status_code == 400 and "image reference" in bad.json()["error"]
            # the CLI asks the hub to build, waits for the job, and fails if it fails
            done = cli(tmp_path / "home", "versions", "build", "scale", "1", "--tag", f"{reg.host}/scale:1",
                       "--no-tls-verify", "--wait", "-o", "json", "--hub", hub.url, "--token", hub.login(),
                       timeout=1500)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            job = json.loads(done.stdout)
            job_id = job["id"]
            log = admin.get(f"/api/v1/jobs/{job_id}/log").text
            assert job["state"] == "succeeded" and "mlport.cli.main build" in log, (job, log[-3000:])
            digest = job["result"]["digest"]
            seen = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                                              f"docker://{reg.host}/scale:1"], check=True, capture_output=True,
                                             text=True).stdout)
            assert seen["Digest"] == digest
            assert seen["Labels"]["dev.mlport.model.name"] == "scale"
            images = admin.get("/api/v1/models/scale/versions/1/images").json()["images"]
            assert images[0]["image"] == f"{reg.host}/scale:1" and images[0]["digest"] == digest
            r = admin.post("/api/v1/deployments", json={"name": "scale-prod", "model": "scale", "version": 1})
            assert r.status_code == 201, r.text
            manifests = list(yaml.safe_load_all(admin.get("/api/v1/deployments/scale-prod/manifests").text))
            deployment = next(o for o in manifests if o["kind"] == "Deployment")
            assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"{reg.host}/scale@{digest}"
            # a hub version built on this machine by the CLI (fetched, verified): the hub records the pushed image
            done = mlport("build", "hub://scale/1", "--tag", f"{reg.host}/scale:cli", "--push", "--no-tls-verify",
                          "--hub", hub.url, "--token", hub.login(), "--base", work["base"], "--pip-cache",
                          str(work["cache"]), "--output", "json")
            assert done.returncode == 0, done.stderr[-3000:]
            built = json.loads(done.stdout.strip().splitlines()[-1])
            assert built["recorded"] == "hub://scale/1" and built["model"] == "scale"
            assert built["sha256"] == admin.get("/api/v1/models/scale/versions/1").json()["sha256"]
            images = admin.get("/api/v1/models/scale/versions/1/images").json()["images"]
            assert images[0]["image"] == f"{reg.host}/scale:cli" and images[0]["digest"] == built["digest"]
            # a job cancelled while it runs ends "cancelled"; the job list shows both
            r = admin.post("/api/v1/models/scale/versions/1/build", json={"tag": f"{reg.host}/scale:again",
                                                                          "tls_verify": False})
            second = r.json()["id"]
            wait_for(lambda: admin.get(f"/api/v1/jobs/{second}").json()["state"] == "running", what="running")
            assert admin.post(f"/api/v1/jobs/{second}/cancel").json()["state"] == "cancelled"
            assert admin.post(f"/api/v1/jobs/{second}/cancel").status_code == 409
            states = {j["id"]: j["state"] for j in admin.get("/api/v1/jobs").json()["jobs"]}
            assert states == {job_id: "succeeded", second: "cancelled"}
    finally:
        hub.stop()


def test_push_to_a_registry_that_needs_a_login(work: dict[str, Any], tmp_path: Path) -> None:
    """Credentials come from the container tools' auth file (--authfile); without them the push is refused."""
    import base64

    import bcrypt

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"ci:{bcrypt.hashpw(b'secret-pass', bcrypt.gensalt(rounds=5)).decode()}\n")
    with registry(work["root"], htpasswd=htpasswd) as reg:
        ref = f"{reg.host}/private/scale:1"
        common = ("build", str(work["models"][1]), "--tag", ref, "--base", work["base"], "--pip-cache",
                  str(work["cache"]), "--push", "--no-tls-verify", "--output", "json")
        (tmp_path / "none.json").write_text(json.dumps({"auths": {}}))
        refused = mlport(*common, "--authfile", str(tmp_path / "none.json"))
        assert refused.returncode != 0 and "pushing" in refused.stderr and "Traceback" not in refused.stderr
        assert "unauthorized" in refused.stderr.lower() or "authentication required" in refused.stderr.lower()
        auth = tmp_path / "auth.json"
        token = base64.b64encode(b"ci:secret-pass").decode()
        auth.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
        done = mlport(*common, "--authfile", str(auth))
        assert done.returncode == 0, done.stderr[-3000:]
        digest = json.loads(done.stdout.strip().splitlines()[-1])["digest"]
        seen = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--authfile", str(auth), f"docker://{ref}"],
                              capture_output=True, text=True)
        assert seen.returncode == 0 and json.loads(seen.stdout)["Digest"] == digest
        anonymous = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--authfile",
                                    str(tmp_path / "none.json"), f"docker://{ref}"], capture_output=True, text=True)
        assert anonymous.returncode != 0
