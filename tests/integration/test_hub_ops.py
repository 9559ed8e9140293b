"""Hub operations under load: autoscaling up and back down, a replica killed mid-traffic, a hub restart."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.builders import iris_onnx, slow_onnx
from tests.hubutil import HubProc, ready_versions, start_hub, version_status, wait_for

pytestmark = pytest.mark.slow

IRIS_ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


def _upload(admin: httpx.Client, model: str, path: Path) -> None:
    assert admin.post("/api/v1/models", json={"name": model}).status_code == 201
    r = admin.post(f"/api/v1/models/{model}/versions", params={"filename": path.name}, content=path.read_bytes(),
                   headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text


def _pids(admin: httpx.Client, deployment: str, version: int) -> list[int]:
    return [int(p) for p in version_status(admin, deployment, version).get("pids", [])]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_autoscaling_follows_a_bounded_load(hub: HubProc, tmp_path: Path) -> None:
    model = slow_onnx(tmp_path / "slow.onnx", size=200, repeats=40)
    admin = hub.client(hub.login())
    _upload(admin, "slow", model)
    r = admin.post("/api/v1/deployments", json={
        "name": "slow", "model": "slow", "min_replicas": 1, "max_replicas": 3, "target_inflight": 1,
        "scale_up_after_s": 0.5, "scale_down_after_s": 2})
    assert r.status_code == 201, r.text
    wait_for(lambda: ready_versions(admin, "slow").get(1), what="first replica")
    sig = admin.get("/api/v1/models/slow/versions/1").json()["signature"]["inputs"][0]
    assert sig["shape"] == [200, 200]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [200, 200], "data": np.ones(40_000).tolist()}]}

    stop = threading.Event()
    statuses: list[int] = []
    peak = [1]

    def load() -> None:
        with hub.client(admin.headers["authorization"].split()[1], timeout=120) as c:
            for _ in range(400):  # bounded: each worker stops by itself
                if stop.is_set():
                    return
                statuses.append(c.post("/deployments/slow/v2/models/slow/infer", json=body).status_code)

    workers = [threading.Thread(target=load) for _ in range(6)]
    for w in workers:
        w.start()
    try:
        def scaled_up() -> bool:
            peak[0] = max(peak[0], ready_versions(admin, "slow").get(1, 0))
            return peak[0] >= 2

        wait_for(scaled_up, timeout=120, what="a second replica under load")
    finally:
        stop.set()
        for w in workers:
            w.join(120)
    assert statuses and set(statuses) == {200}, set(statuses)
    wait_for(lambda: ready_versions(admin, "slow").get(1) == 1, timeout=120, what="scale back to one replica")
    assert len(_pids(admin, "slow", 1)) == 1


def test_killed_replica_loses_no_request(hub: HubProc, tmp_path: Path) -> None:
    admin = hub.client(hub.login())
    _upload(admin, "iris", iris_onnx(tmp_path / "iris.onnx"))
    r = admin.post("/api/v1/deployments", json={"name": "iris", "model": "iris", "min_replicas": 2,
                                                "max_replicas": 2})
    assert r.status_code == 201, r.text
    wait_for(lambda: ready_versions(admin, "iris").get(1) == 2, what="two replicas")
    victim = _pids(admin, "iris", 1)[0]
    token = admin.headers["authorization"].split()[1]
    done = threading.Event()
    count = [0]
    lock = threading.Lock()

    def call(i: int) -> int:
        with hub.client(token) as c:
            r = c.post("/deployments/iris/v2/models/iris/infer", json=IRIS_ROW)
        with lock:
            count[0] += 1
            if count[0] == 100:
                done.set()
        return r.status_code

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(call, i) for i in range(500)]
        done.wait(120)
        os.kill(victim, signal.SIGKILL)
        results = [f.result(timeout=120) for f in futures]
    assert results.count(200) == len(results), {s: results.count(s) for s in set(results)}
    # the killed replica is replaced
    wait_for(lambda: ready_versions(admin, "iris").get(1) == 2 and victim not in _pids(admin, "iris", 1),
             timeout=120, what="the killed replica restarted")


def test_hub_restart_restores_deployments(hub: HubProc, tmp_path: Path) -> None:
    admin = hub.client(hub.login())
    _upload(admin, "iris", iris_onnx(tmp_path / "iris.onnx"))
    assert admin.post("/api/v1/deployments", json={"name": "iris", "model": "iris"}).status_code == 201
    wait_for(lambda: ready_versions(admin, "iris").get(1), what="replica")
    before = _pids(admin, "iris", 1)
    token = admin.headers["authorization"].split()[1]
    assert hub.stop() == 0
    wait_for(lambda: not any(_alive(p) for p in before), timeout=60, what="replicas stopped with the hub")

    again = start_hub(hub.data_dir, port=hub.port)
    try:
        admin2 = again.client(token)  # tokens survive a restart (same signing secret)
        wait_for(lambda: ready_versions(admin2, "iris").get(1), what="deployment restored")
        r = admin2.post("/deployments/iris/v2/models/iris/infer", json=IRIS_ROW)
        assert r.status_code == 200 and r.headers["x-mlport-version"] == "1"
        assert set(_pids(admin2, "iris", 1)).isdisjoint(before)
    finally:
        again.stop()


def test_scale_to_zero_and_a_cold_start(hub: HubProc, tmp_path: Path) -> None:
    admin = hub.client(hub.login())
    _upload(admin, "iris", iris_onnx(tmp_path / "iris.onnx"))
    r = admin.post("/api/v1/deployments", json={"name": "iris", "model": "iris", "min_replicas": 0,
                                                "max_replicas": 1, "scale_to_zero": True, "scale_down_after_s": 1})
    assert r.status_code == 201, r.text
    # nothing runs until the first request, which waits for a replica to start
    assert not _pids(admin, "iris", 1)
    token = admin.headers["authorization"].split()[1]
    with hub.client(token, timeout=120) as c:
        r = c.post("/deployments/iris/v2/models/iris/infer", json=IRIS_ROW)
    assert r.status_code == 200, r.text
    assert len(_pids(admin, "iris", 1)) == 1
    # and after a quiet period it is back to zero
    wait_for(lambda: not _pids(admin, "iris", 1), timeout=90, what="scale back to zero")


def test_rs256_tokens(tmp_path: Path) -> None:
    import base64
    import hashlib
    import hmac
    import json
    import time

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "hub-key.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pem.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hub = start_hub(tmp_path / "hub", "--jwt-algorithm", "RS256", "--jwt-private-key", str(pem), jwt_secret=False)
    try:
        token = hub.login()
        assert jwt.get_unverified_header(token)["alg"] == "RS256"
        claims = jwt.decode(token, public, algorithms=["RS256"], audience="mlport")
        assert claims["sub"] == "admin" and claims["roles"] == ["admin"]
        assert hub.client(token).get("/api/v1/whoami").status_code == 200
        # the same claims signed with HMAC keyed by the public key (algorithm confusion) are refused; the token is
        # built by hand because PyJWT itself refuses to sign with a PEM key as an HMAC secret
        now = int(time.time())

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64(json.dumps({**claims, "iat": now, "nbf": now, "exp": now + 600}).encode())
        sig = b64(hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest())
        r = hub.client(f"{head}.{body}.{sig}").get("/api/v1/whoami")
        assert r.status_code == 401, r.text
    finally:
        hub.stop()

