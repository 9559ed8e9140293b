"""The hub as an operator runs it: failures that show, one hub per data folder, readable output, signature checks
for experiments, and the CLI's commands, against a real hub process and real CLI processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.builders import iris_onnx, scale_onnx, slow_onnx
from tests.hubutil import ADMIN_PASSWORD, HubProc, cli, cli_login, start_hub
from tests.hubutil import cli_ok as ok

pytestmark = pytest.mark.slow

ISO = re.compile(r"\b20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ\b")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProc]:
    # a long gateway timeout: a request to a failed version must not wait for it
    proc = start_hub(tmp_path_factory.mktemp("hub"), env={"MLPORT_HUB_GATEWAY_TIMEOUT_S": "600"})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def home(hub: HubProc, tmp_path: Path) -> Path:
    """A config folder logged in to the hub as admin."""
    return cli_login(hub, tmp_path)


def ok_json(home: Path, *args: str) -> Any:
    return json.loads(ok(home, *args, "-o", "json"))


def test_a_version_that_fails_to_load_is_reported_everywhere(hub: HubProc, home: Path) -> None:
    broken = home / "broken.onnx"
    broken.write_bytes(b"this is not an onnx graph" * 10)
    ok(home, "models", "create", "broken")
    up = cli(home, "versions", "upload", "broken", str(broken), "-o", "json")
    assert up.returncode == 0, up.stderr
    assert "warning" in json.loads(up.stdout) and "warning:" in up.stderr and "signature" in up.stderr

    r = cli(home, "deploy", "broken-prod", "--model", "broken", "--wait", "--timeout", "240")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "not ready" in r.stderr and "broken" in r.stderr and "load" in r.stderr, r.stderr

    text = ok(home, "status", "broken-prod")
    assert "v1 failed:" in text, text
    assert "v1 failed:" in ok(home, "status")
    assert "v1 failed:" in ok(home, "deploy", "broken-prod", "--model", "broken")

    with httpx.Client(base_url=hub.url, timeout=30,
                      headers={"authorization": f"Bearer {hub.login()}"}) as client:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
        resp = client.post("/deployments/broken-prod/v2/models/broken/infer", json=body)
    assert resp.status_code == 503, resp.text
    assert "no ready replica" in resp.json()["error"] and "load" in resp.json()["error"]
    ok(home, "undeploy", "broken-prod")


def test_deploy_wait_returns_once_ready_and_replicas_name_the_hubs_version(hub: HubProc, home: Path,
                                                                           tmp_path: Path) -> None:
    ok(home, "models", "create", "iris-w")
    ok(home, "versions", "upload", "iris-w", str(iris_onnx(tmp_path / "m" / "iris.onnx")))
    folder = tmp_path / "folder"
    iris_onnx(folder / "model.onnx", c=0.1)
    (folder / "model.yaml").write_text("batching: {max_batch_size: 8, max_delay_ms: 1}\n")
    ok(home, "versions", "upload", "iris-w", str(folder))
    d = ok_json(home, "deploy", "iris-w-prod", "--model", "iris-w", "--version", "2", "--wait", "--timeout", "240")
    rows = d["replicas"]["versions"]
    assert [(v["version"], v["ready"] >= 1) for v in rows] == [(2, True)]
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
    api = hub.client(hub.login())
    resp = api.post("/deployments/iris-w-prod/v2/models/iris-w/infer", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model_version"] == "2" and resp.headers["x-mlport-version"] == "2"
    config = api.get("/deployments/iris-w-prod/v2/models/iris-w-prod/versions/2")
    assert config.status_code == 200, config.text
    replica_log = Path(rows[0]["replicas"][0]["log"]).read_text()
    assert "model iris-w-prod version 2 ready" in replica_log and "version 1" not in replica_log
    ok(home, "undeploy", "iris-w-prod")


def test_upload_records_the_users_file_name_and_warns_without_a_signature(hub: HubProc, home: Path,
                                                                          tmp_path: Path) -> None:
    import pickle

    from sklearn.linear_model import LinearRegression

    ok(home, "models", "create", "names")
    v1 = ok_json(home, "versions", "upload", "names", str(iris_onnx(tmp_path / "a" / "my-iris.onnx")))
    assert v1["source"] == "my-iris.onnx" and "warning" not in v1
    folder = tmp_path / "my-folder"
    iris_onnx(folder / "model.onnx")
    assert ok_json(home, "versions", "upload", "names", str(folder))["source"] == "my-folder"

    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])))
    r = cli(home, "versions", "upload", "names", str(pkl))
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "--trusted" in r.stderr, r.stderr
    resp = hub.client(hub.login()).post("/api/v1/models/names/versions", params={"filename": "model.pkl"},
                                        content=pkl.read_bytes(),
                                        headers={"content-type": "application/octet-stream"})
    assert resp.status_code == 201 and "trusted" in resp.json()["warning"]
    assert resp.json()["source"] == "model.pkl"


def test_text_output_is_readable_and_json_keeps_raw_values(hub: HubProc, home: Path, tmp_path: Path) -> None:
    ok(home, "models", "create", "readable")
    ok(home, "versions", "upload", "readable", str(iris_onnx(tmp_path / "iris.onnx")))
    ok(home, "versions", "upload", "readable", str(slow_onnx(tmp_path / "big.onnx", size=100, repeats=1)))
    text = ok(home, "versions", "list", "readable")
    raw = ok_json(home, "versions", "list", "readable")["versions"]
    assert isinstance(raw[0]["created_at"], float) and isinstance(raw[1]["size"], int) and raw[1]["size"] > 10_000
    assert len(ISO.findall(text)) == 2 and str(raw[0]["created_at"]) not in text, text
    assert re.search(r"\d+ B ", text) and re.search(r"\d+\.\d (KiB|MiB) ", text), text
    assert str(raw[1]["size"]) not in text
    shown = ok(home, "versions", "get", "readable", "2")
    assert ISO.search(shown) and re.search(r"size: +\d+\.\d (KiB|MiB)", shown) and "inputs:" in shown, shown
    assert ISO.search(ok(home, "models", "get", "readable"))

    # history numbers count per deployment, whatever the other deployments did
    ok(home, "deploy", "readable-a", "--model", "readable")
    ok(home, "deploy", "readable-a", "--model", "readable", "--min-replicas", "0", "--scale-to-zero")
    ok(home, "deploy", "readable-b", "--model", "readable", "--min-replicas", "0", "--scale-to-zero")
    history = ok(home, "status", "readable-b", "--history")
    assert re.search(r"#1 20\d\d-\S+ create", history), history
    assert "#2" not in history
    assert [e["number"] for e in ok_json(home, "status", "readable-a", "--history")["history"]] == [3, 2, 1]
    ok(home, "undeploy", "readable-a")
    ok(home, "undeploy", "readable-b")


def test_an_experiment_with_another_signature_is_refused_unless_forced(hub: HubProc, home: Path,
                                                                         tmp_path: Path) -> None:
    ok(home, "models", "create", "sig")
    ok(home, "versions", "upload", "sig", str(scale_onnx(tmp_path / "a" / "s.onnx", 2.0)))
    ok(home, "versions", "upload", "sig", str(scale_onnx(tmp_path / "b" / "s.onnx", 3.0)))
    ok(home, "versions", "upload", "sig", str(scale_onnx(tmp_path / "c" / "s.onnx", 3.0, shape=(None, 5))))
    ok(home, "deploy", "sig-prod", "--model", "sig", "--version", "1", "--min-replicas", "0", "--scale-to-zero")
    ok(home, "deploy", "sig-prod", "--canary", "10", "--version", "2")  # same signature: accepted
    ok(home, "rollback", "sig-prod")
    for strategy in (["--canary", "10"], ["--ab", "50"], ["--shadow"]):
        r = cli(home, "deploy", "sig-prod", *strategy, "--version", "3")
        assert r.returncode == 1 and "409" in r.stderr, r.stderr
        assert "input 'x' shape is [-1, 5], not [-1, 3]" in r.stderr, r.stderr
    forced = ok_json(home, "deploy", "sig-prod", "--canary", "10", "--version", "3", "--force")
    assert forced["target"]["candidate"] == 3
    api = hub.client(hub.login())
    ok(home, "rollback", "sig-prod")
    assert api.post("/api/v1/deployments/sig-prod/ab", json={"version": 3}).status_code == 409
    assert api.post("/api/v1/deployments/sig-prod/ab", json={"version": 3, "force": True}).status_code == 200
    ok(home, "undeploy", "sig-prod")


def test_a_second_hub_on_the_same_data_folder_refuses_to_start(hub: HubProc, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "mlport.cli.main", "hub", "--data-dir", str(hub.data_dir),
                        "--port", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert f"pid {hub.proc.pid}" in r.stderr and hub.url in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert httpx.get(hub.url + "/healthz").status_code == 200


def test_the_lock_goes_with_the_hub(tmp_path: Path) -> None:
    first = start_hub(tmp_path / "hub")
    first.stop()
    second = start_hub(tmp_path / "hub")  # the first one's lock went with it
    second.stop()


def test_identity_commands(hub: HubProc, home: Path) -> None:
    me = ok_json(home, "whoami")
    assert me["subject"] == "admin" and "admin" in me["roles"]
    assert "admin (user)" in ok(home, "whoami")
    token = ok(home, "token").strip()
    assert httpx.get(hub.url + "/api/v1/whoami", headers={"authorization": f"Bearer {token}"}).status_code == 200

    r = cli(home, "users", "create", "carol", "--role", "viewer", "--password-stdin", stdin="carol-password-long\n")
    assert r.returncode == 0, r.stderr
    assert "carol" in ok(home, "users", "list") and hub.login("carol", "carol-password-long")
    sa = ok_json(home, "service-accounts", "create", "scorer", "--role", "predictor", "--deployment", "x")
    scorer = {"authorization": f"Bearer {sa['access_token']}"}
    assert httpx.get(hub.url + "/api/v1/whoami", headers=scorer).json()["deployments"] == ["x"]
    assert ok_json(home, "token", "revoke", "--revoke-token", sa["access_token"])["revoked"] == sa["jti"]
    assert httpx.get(hub.url + "/api/v1/whoami", headers=scorer).status_code == 401
    ok(home, "users", "delete", "carol")
    assert "carol" not in ok(home, "users", "list")

    ok(home, "logout")
    assert httpx.get(hub.url + "/api/v1/whoami", headers={"authorization": f"Bearer {token}"}).status_code == 401
    r = cli(home, "whoami")
    assert r.returncode == 3 and "not logged in" in r.stderr


def test_login_without_a_terminal_says_what_to_do(hub: HubProc, tmp_path: Path) -> None:
    r = cli(tmp_path, "login", "--hub", hub.url)
    assert r.returncode == 2 and "--password-stdin" in r.stderr and "MLPORT_HUB_PASSWORD" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "EOFError" not in r.stderr
    r = cli(tmp_path, "login", "--hub", hub.url, "-o", "json", "--show-token",
            env={"MLPORT_HUB_PASSWORD": ADMIN_PASSWORD})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["access_token"] == ok(tmp_path, "token").strip()


def test_scale_download_and_delete_with_confirmation(hub: HubProc, home: Path, tmp_path: Path) -> None:
    model = iris_onnx(tmp_path / "iris.onnx")
    ok(home, "models", "create", "ops")
    ok(home, "versions", "upload", "ops", str(model))
    out = tmp_path / "out"
    out.mkdir()
    got = ok_json(home, "versions", "download", "ops", "1", "--dest", str(out))
    assert Path(got["path"]).read_bytes() == model.read_bytes()

    ok(home, "deploy", "ops-prod", "--model", "ops", "--min-replicas", "0", "--scale-to-zero")
    scaled = ok_json(home, "scale", "ops-prod", "--max-replicas", "3", "--no-scale-to-zero", "--min-replicas", "1")
    assert scaled["policy"]["max_replicas"] == 3 and scaled["policy"]["scale_to_zero"] is False
    ok(home, "undeploy", "ops-prod")

    r = cli(home, "models", "delete", "ops")
    assert r.returncode == 2 and "--yes" in r.stderr
    assert ok_json(home, "models", "get", "ops")["name"] == "ops"
    ok(home, "models", "delete", "ops", "--yes")
    assert cli(home, "models", "get", "ops").returncode == 1


def test_a_silent_hub_is_reported_after_the_timeout(tmp_path: Path) -> None:
    with socket.socket() as sock:  # accepts connections (the backlog) and never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        started = time.monotonic()
        r = cli(tmp_path, "models", "list", "--hub", url, "--token", "x", "--timeout", "1")
        assert time.monotonic() - started < 60
    assert r.returncode == 3 and "did not answer within 1 s" in r.stderr, r.stderr


def test_help_names_every_argument_and_gives_examples(tmp_path: Path) -> None:
    import argparse

    from mlport.cli.main import build_parser

    commands = ["login", "logout", "whoami", "token", "users", "service-accounts", "models", "versions", "deploy",
                "promote", "rollback", "scale", "status", "undeploy", "hub"]
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in commands:
        parser = sub.choices[command]
        assert parser.epilog and "examples:" in parser.epilog and "mlport " in parser.epilog, command
        for action in parser._actions:
            assert action.help, (command, action.dest)
    r = cli(tmp_path, "deploy", "--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "--wait" in r.stdout
    models = cli(tmp_path, "models", "--help").stdout
    assert "create, get or delete models" in models and "{list,create,get,delete}" in models
    hub_help = cli(tmp_path, "hub", "--help").stdout
    for flag in ("--http-port", "--port", "--serve-http-port", "--serve-grpc-port"):
        assert flag in hub_help


def test_a_taken_hub_port_is_one_line_and_no_banner(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "mlport.cli.main", "hub", "--data-dir", str(tmp_path / "hub"),
                               "--http-port", str(port)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "MLPORT_HUB_ADMIN_PASSWORD": ADMIN_PASSWORD})
    assert done.returncode == 2, done.stderr
    assert f"cannot listen for the hub's HTTP on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr and "mlport hub on" not in done.stdout
