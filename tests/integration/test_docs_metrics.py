"""/openapi.json, /docs and /metrics against a real server."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import BaseRoute, Mount, Route

from mlport.protocols.http.app import build_app
from mlport.protocols.http.server import build_state
from mlport.settings import Settings
from tests.builders import iris_onnx
from tests.conftest import Server

CHROMIUM = Path("/usr/bin/chromium")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture
def iris(serve: Callable[..., Server], tmp_path: Path) -> tuple[Server, Path]:
    model = iris_onnx(tmp_path / "models" / "iris.onnx")
    return serve(model), model


def _app_routes(routes: Iterable[BaseRoute], prefix: str = "") -> list[tuple[str, Route]]:
    found: list[tuple[str, Route]] = []
    for route in routes:
        if isinstance(route, Route):
            found.append((prefix, route))
        elif isinstance(route, Mount):
            found.extend(_app_routes(route.routes, prefix + route.path.rstrip("/")))
    return found


def _filled(template: str) -> str:
    return re.sub(r"\{[^}]*\}", "1", template)


def _answers(prefix: str, route: Route, method: str, template: str) -> bool:
    """True when ``route`` takes ``method`` on the paths the OpenAPI ``template`` describes."""
    path = _filled(template)
    return (method in (route.methods or set()) and path.startswith(prefix)
            and route.path_regex.fullmatch(path[len(prefix):]) is not None)


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method.upper(), op) for path, item in doc["paths"].items()
            for method, op in item.items() if method in HTTP_METHODS]


def test_openapi_is_valid_and_describes_every_route(iris: tuple[Server, Path]) -> None:
    server, model = iris
    with server.client() as c:
        r = c.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.1")

    import openapi_spec_validator

    openapi_spec_validator.validate(doc)

    operations = _operations(doc)
    assert not [(p, m) for p, m, op in operations if op.get("x-mlport-undocumented")]
    # the same routes the server runs, built in this process
    app = build_app(build_state(Settings(model_path=model, poll_interval_s=0)))
    routes = _app_routes(app.routes)
    assert routes
    missing = [
        (prefix + route.path, method)
        for prefix, route in routes
        for method in sorted((route.methods or set()) - {"HEAD"})
        if not any(m == method and _answers(prefix, route, m, path) for path, m, _ in operations)
    ]
    assert not missing, f"routes missing from /openapi.json: {missing}"
    invented = [(path, m) for path, m, _ in operations
                if not any(_answers(prefix, route, m, path) for prefix, route in routes)]
    assert not invented, f"/openapi.json describes paths no route serves: {invented}"
    for path in ("/models/{name}/eval", "/v2/models/{name}/infer", "/v1/models/{name}:predict", "/metrics",
                 "/health/live", "/health/ready", "/v2/repository/index", "/v1/models/{name}/labels/{label}"):
        assert path in doc["paths"], path


def test_openapi_examples_come_from_the_served_model(iris: tuple[Server, Path]) -> None:
    server, _ = iris
    with server.client() as c:
        doc = c.get("/openapi.json").json()
        assert doc["components"]["parameters"]["ModelName"]["schema"]["enum"] == ["iris"]
        assert doc["components"]["schemas"]["Error"]["required"] == ["error"]
        infer = doc["paths"]["/v2/models/{name}/infer"]["post"]
        assert any(p["$ref"].endswith("/BinaryHeaderLength") for p in infer["parameters"])
        header = doc["components"]["parameters"]["BinaryHeaderLength"]
        assert (header["in"], header["name"]) == ("header", "Inference-Header-Content-Length")
        described = doc["paths"]["/models/{name}/describe"]["get"]["responses"]["200"]
        assert described["content"]["application/json"]["examples"]["iris"]["value"] == c.get(
            "/models/iris/describe").json()
        eval_example = doc["paths"]["/models/{name}/eval"]["post"]["requestBody"]["content"]["application/json"]
        assert eval_example["examples"]["iris"]["value"] == {"input": [[0.0, 0.0, 0.0, 0.0]]}
        # every example body is a request the live server accepts
        sent = 0
        for path, method, op in _operations(doc):
            if "{label}" in path:
                continue  # iris has no version labels
            content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            for name, example in content.get("examples", {}).items():
                url = path.replace("{name}", name).replace("{version}", "1")
                r = c.request(method, url, json=example["value"])
                assert r.status_code == 200, (method, url, r.text)
                sent += 1
        assert sent >= 7  # eval x3, infer x2, predict x2


def test_docs_page_is_self_contained(iris: tuple[Server, Path]) -> None:
    server, _ = iris
    with server.client() as c:
        r = c.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "<script" in html and "openapi.json" in html
    links = re.findall(r"""(?:src|href|action)\s*=\s*["']([^"']*)["']""", html, re.IGNORECASE)
    links += re.findall(r"""url\(\s*["']?([^"')]*)""", html) + re.findall(r"""@import\s+["']([^"']*)""", html)
    external = [u for u in links if re.match(r"^([a-z][a-z0-9+.-]*:|//)", u, re.IGNORECASE)]
    assert not external, external
    assert not re.search(r"(?:https?:)?//[a-z0-9-]+\.[a-z]", html, re.IGNORECASE), "the page names a host"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "http" not in csp


@pytest.mark.slow
def test_docs_page_renders_the_served_models_in_chromium(iris: tuple[Server, Path], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: scripts/test.sh installs it")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    server, _ = iris
    args = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            # let the page's fetches finish before the DOM is taken
            "--virtual-time-budget=10000"]
    url = server.url + "/docs"
    run = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    assert 'data-state="ready"' in dom, dom[-2000:]
    assert re.search(r'<li data-model="iris">.*?ready', dom), "the model list was not rendered"
    assert '<option value="iris">iris</option>' in dom
    assert "/v2/models/{name}/infer" in dom and "/v1/models/{name}:predict" in dom  # endpoints listed
    assert "float32" in dom  # the model's signature, fetched from /models/iris/describe
    shot = tmp_path / "docs.png"
    subprocess.run([*args, "--window-size=1280,1000", f"--screenshot={shot}", url],
                   capture_output=True, timeout=180, check=False)
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def _value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
    for n, lab, v in samples:
        if n == name and all(lab.get(k) == want for k, want in labels.items()):
            return v
    return None


def test_metrics_count_requests_by_outcome(iris: tuple[Server, Path]) -> None:
    server, _ = iris
    good = {"input": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
    with server.client() as c:
        version = c.get("/models").json()["models"][0]["versions"][0]["version"]
        for _ in range(2):
            assert c.post("/models/iris/eval", json=good).status_code == 200
        bad = c.post("/models/iris/eval", json={"input": [[1.0, 2.0]]})
        assert bad.status_code == 400 and "input" in bad.json()["error"]
        unknown = c.post("/models/nosuch/eval", json=good)
        assert unknown.status_code == 404 and "nosuch" in unknown.json()["error"]
        infer = c.post("/v2/models/iris/infer", json={
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})
        assert infer.status_code == 200, infer.text
        r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    s = _samples(r.text)

    requests = "mlport_requests_total"
    assert _value(s, requests, model="iris", version=version, protocol="eval", status="ok") == 2
    assert _value(s, requests, model="iris", version=version, protocol="eval", status="invalid_argument") == 1
    # an unknown name is not a label value (it would let clients grow the series without bound)
    assert _value(s, requests, model="", version="", protocol="eval", status="not_found") == 1
    assert _value(s, requests, model="iris", version=version, protocol="v2", status="ok") == 1
    assert not [lab for n, lab, _ in s if n == requests and lab.get("model") == "nosuch"]

    latency = "mlport_request_duration_seconds"
    assert _value(s, latency + "_count", model="iris", protocol="eval") == 3  # ok and refused, both timed
    assert _value(s, latency + "_bucket", model="iris", protocol="eval", le="+Inf") == 3
    assert _value(s, latency + "_count", model="iris", protocol="v2") == 1
    sum_ = _value(s, latency + "_sum", model="iris", protocol="eval")
    assert sum_ is not None and sum_ > 0
    # only requests that reached predict
    assert _value(s, "mlport_inference_duration_seconds_count", model="iris", version=version) == 3

    assert _value(s, "mlport_model_loaded", model="iris", version=version) == 1
    # no *_created series (a creation time per counter and histogram, which Prometheus does not use)
    assert not [n for n, _, _ in s if n.endswith("_created")] and "_created" not in r.text
    load = _value(s, "mlport_model_load_seconds", model="iris", version=version)
    assert load is not None and 0 < load < 60
    assert _value(s, "mlport_inflight_requests", model="iris") == 0
