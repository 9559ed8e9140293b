"""The hub's management API: its OpenAPI document, roles, token revocation and every bad input's status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.builders import iris_onnx
from tests.hubutil import HubProc, start_hub

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProc]:
    proc = start_hub(tmp_path_factory.mktemp("hub"), env={"MLPORT_HUB_MAX_UPLOAD_BYTES": "200000"})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def admin(hub: HubProc) -> httpx.Client:
    return hub.client(hub.login())


def _user(hub: HubProc, admin: httpx.Client, name: str, roles: list[str]) -> httpx.Client:
    r = admin.post("/api/v1/users", json={"name": name, "password": f"{name}-password-long", "roles": roles})
    assert r.status_code == 201, r.text
    return hub.client(hub.login(name, f"{name}-password-long"))


def test_openapi_document_is_valid_and_covers_every_route(hub: HubProc) -> None:
    from openapi_spec_validator import validate

    doc = httpx.get(hub.url + "/openapi.json").json()
    validate(doc)
    paths = set(doc["paths"])
    for path in ("/auth/token", "/api/v1/models/{model}/versions", "/api/v1/deployments/{name}/canary",
                 "/api/v1/deployments/{name}/shadow", "/deployments/{name}/{path}"):
        assert path in paths
    from mlport.hub.api import api_routes

    for route in api_routes():
        template = route.path.replace("{path:path}", "{path}")
        assert template in paths, f"{template} is not documented"
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in doc["paths"][template] or template.startswith("/deployments/"), (
                    method, template)
    page = httpx.get(hub.url + "/docs")
    assert page.status_code == 200 and "openapi.json" in page.text


def test_roles(hub: HubProc, admin: httpx.Client, tmp_path: Path) -> None:
    viewer = _user(hub, admin, "vera", ["viewer"])
    deployer = _user(hub, admin, "dave", ["deployer"])
    assert viewer.get("/api/v1/models").status_code == 200
    assert viewer.post("/api/v1/models", json={"name": "nope"}).status_code == 403
    assert deployer.post("/api/v1/models", json={"name": "roles-model"}).status_code == 201
    r = deployer.post("/api/v1/models/roles-model/versions", params={"filename": "iris.onnx"},
                      content=iris_onnx(tmp_path / "iris.onnx").read_bytes())
    assert r.status_code == 201, r.text
    # only admins manage users, and only admins let a model run code
    assert deployer.get("/api/v1/users").status_code == 403
    assert deployer.post("/api/v1/users", json={"name": "x", "password": "p" * 12, "roles": ["admin"]}
                         ).status_code == 403
    r = deployer.post("/api/v1/deployments", json={"name": "roles-dep", "model": "roles-model", "trusted": True})
    assert r.status_code == 403
    r = deployer.post("/api/v1/deployments", json={"name": "roles-dep", "model": "roles-model"})
    assert r.status_code == 201, r.text
    assert viewer.post("/api/v1/deployments/roles-dep/rollback").status_code == 403
    assert viewer.post("/deployments/roles-dep/v2/health/ready").status_code == 403
    # rollback with nothing earlier to go back to
    r = deployer.post("/api/v1/deployments/roles-dep/rollback")
    assert r.status_code == 400 and "no earlier version" in r.json()["error"]
    assert deployer.delete("/api/v1/deployments/roles-dep").status_code == 204
    # a deleted account's token stops working at once
    assert admin.delete("/api/v1/users/vera").status_code == 204
    assert viewer.get("/api/v1/models").status_code == 401


def test_revoked_tokens_are_refused(hub: HubProc, admin: httpx.Client) -> None:
    me = _user(hub, admin, "rita", ["viewer"])
    token = me.headers["authorization"].split()[1]
    assert me.get("/api/v1/whoami").json()["subject"] == "rita"
    assert me.post("/api/v1/tokens/revoke", json={"token": token}).status_code == 200
    r = me.get("/api/v1/whoami")
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    assert r.headers["www-authenticate"] == "Bearer"
    # a fresh login works again
    assert hub.client(hub.login("rita", "rita-password-long")).get("/api/v1/whoami").status_code == 200


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "words"), [
    ("POST", "/api/v1/models", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
     "not valid JSON"),
    ("POST", "/api/v1/models", {"content": b"<x/>", "headers": {"content-type": "application/xml"}}, 415,
     "application/json"),
    ("POST", "/api/v1/models", {"json": {"name": "Bad Name!"}}, 400, "invalid"),
    ("POST", "/api/v1/models", {"json": {"name": "m", "labels": ["x"]}}, 400, "labels"),
    ("POST", "/api/v1/models", {"json": ["a"]}, 400, "JSON object"),
    ("GET", "/api/v1/models/missing", {}, 404, "missing"),
    ("GET", "/api/v1/models/missing/versions/x", {}, 400, "positive integer"),
    ("POST", "/api/v1/models/missing/versions", {"content": b"x", "params": {"filename": "a.onnx"}}, 404,
     "missing"),
    ("GET", "/api/v1/deployments/missing", {}, 404, "missing"),
    ("POST", "/api/v1/deployments", {"json": {"name": "d", "model": "missing"}}, 404, "missing"),
    ("POST", "/api/v1/deployments", {"json": {"name": "d", "model": "m", "min_replicas": 500}}, 400,
     "min_replicas"),
    ("POST", "/deployments/missing/v2/health/ready", {}, 404, "missing"),
    ("POST", "/auth/token", {"json": {"username": "admin", "password": "wrong-password"}}, 401, ""),
    ("POST", "/auth/token", {"json": {"username": "nobody", "password": "wrong-password"}}, 401, ""),
    ("POST", "/auth/token", {"json": {"username": "admin"}}, 400, "password"),
    ("GET", "/api/v1/nothing-here", {}, 404, ""),
])
def test_bad_requests_get_clear_errors(admin: httpx.Client, method: str, path: str, kwargs: dict[str, object],
                                       status: int, words: str) -> None:
    r = admin.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_uploads_are_checked(admin: httpx.Client, tmp_path: Path) -> None:
    assert admin.post("/api/v1/models", json={"name": "uploads"}).status_code == 201
    base = "/api/v1/models/uploads/versions"
    r = admin.post(base, params={"filename": "big.onnx"}, content=b"x" * 300_000)
    assert r.status_code == 413
    r = admin.post(base, params={"filename": "notes.txt"}, content=b"hello")
    assert r.status_code == 400 and "notes.txt" in r.json()["error"]
    for bad in ("../x.onnx", "a/b.onnx", ""):
        r = admin.post(base, params={"filename": bad}, content=b"x")
        assert r.status_code == 400, bad
    assert admin.post(base, params={"filename": "e.onnx"}, content=b"").status_code == 400
    r = admin.post(base, json={"store_key": "../../etc/passwd"})
    assert r.status_code == 400
    assert admin.get("/api/v1/models/uploads/versions").json()["versions"] == []
    # a good upload downloads byte for byte
    data = iris_onnx(tmp_path / "iris.onnx").read_bytes()
    assert admin.post(base, params={"filename": "iris.onnx"}, content=data).status_code == 201
    r = admin.get(f"{base}/1/artifact")
    assert r.status_code == 200 and r.content == data


def test_metrics_do_not_grow_with_unknown_names(hub: HubProc, admin: httpx.Client) -> None:
    for i in range(5):
        assert admin.post(f"/deployments/no-such-{i}/v2/health/ready").status_code == 404
        assert httpx.post(f"{hub.url}/deployments/anon-{i}/v2/health/ready").status_code == 401
    text = httpx.get(hub.url + "/metrics").text
    assert "mlport_hub_gateway_requests_total" in text
    assert "no-such-" not in text and "anon-" not in text
    assert 'deployment="-"' in text
