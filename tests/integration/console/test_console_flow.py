"""The hub console in a real browser against a real hub and real replicas: sign in, upload, deploy, canary during a
load test, promote and roll back, score a CSV test set, try an image model, and a predictor token."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.builders import iris_onnx, ort_run, scale_onnx
from tests.hubutil import ADMIN_PASSWORD, HubProc, wait_for
from tests.integration.console.conftest import shot, sign_in

pytestmark = pytest.mark.slow

START_S = 120_000  # ms: a replica starting on a loaded machine


def _accept_dialogs(page: Page) -> None:
    page.on("dialog", lambda dialog: dialog.accept())


def _replica_row(page: Page, version: int) -> str:
    return f"#replicas tbody tr:has(td:text-is('v{version}'))"


def test_upload_deploy_canary_promote_rollback(hub: HubProc, page: Page, shots: Path, tmp_path: Path) -> None:
    folder = tmp_path / "iris-v1"
    iris_onnx(folder / "iris.onnx")
    v2 = iris_onnx(tmp_path / "v2" / "iris.onnx", c=0.02)
    _accept_dialogs(page)
    blocked: list[str] = []  # what the Content-Security-Policy refused: the console must need nothing it forbids
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)

    page.goto(hub.url + "/")
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    shot(page, shots, "01-sign-in")
    sign_in(page, hub.url, "admin", ADMIN_PASSWORD)

    page.fill("#create-model input[name=name]", "iris")
    page.fill("#create-model input[name=description]", "iris classifier")
    page.click("#create-model button")
    page.click("#models a:text-is('iris')")
    page.wait_for_url(hub.url + "/ui/models/iris")  # loaded: the page's script is running
    expect(page.locator("#model-info")).to_contain_text("iris classifier")

    # a folder, zipped by the page, then a single file; each with its progress bar
    page.set_input_files("#upload-folder", str(folder))
    expect(page.locator("#upload-status")).to_have_text(re.compile(r"uploaded v1 \(onnx\)"), timeout=60_000)
    assert page.eval_on_selector("#upload-progress", "bar => bar.value") == 100
    page.set_input_files("#upload-file", str(v2))
    expect(page.locator("#upload-status")).to_have_text(re.compile(r"uploaded v2 \(onnx\)"), timeout=60_000)
    page.click("#versions a:text-is('v1')")
    detail = page.locator("#version-detail")
    expect(detail).to_contain_text("iris-v1")  # the source: the folder's name
    expect(detail.locator("table.signature")).to_contain_text("input")
    expect(detail.locator("table.signature")).to_contain_text("probabilities")
    shot(page, shots, "02-model")
    admin = hub.client(hub.login())
    v1_info = admin.get("/api/v1/models/iris/versions/1").json()
    expect(detail).to_contain_text(v1_info["sha256"])

    page.click("header a:text-is('Deployments')")
    page.wait_for_url(hub.url + "/ui/deployments")  # loaded: the page's script is running
    page.fill("#create-deployment input[name=name]", "iris-prod")
    page.fill("#create-deployment input[name=model]", "iris")
    page.fill("#create-deployment input[name=version]", "1")
    page.click("#create-deployment button")
    row = page.locator("#deployments tbody tr:has(a:text-is('iris-prod'))")
    expect(row).to_contain_text("1 / 1", timeout=START_S)
    shot(page, shots, "03-deployments")

    page.click("#deployments a:text-is('iris-prod')")
    page.wait_for_url(hub.url + "/ui/deployments/iris-prod")  # loaded: the page's script is running
    page.select_option("#experiment select[name=strategy]", "canary")
    page.fill("#experiment input[name=version]", "2")
    page.fill("#experiment input[name=percent]", "20")
    expect(page.locator("#percent-shown")).to_have_text("20%")
    page.click("#experiment button")
    expect(page.locator("#deployment-info")).to_contain_text("canary v2 20%")
    expect(page.locator(_replica_row(page, 2))).to_contain_text("1 / 1", timeout=START_S)
    expect(page.locator(_replica_row(page, 2))).to_contain_text("20%")

    # a load test through the gateway: about a fifth of the answers come from v2, in the page and in the charts
    page.fill("#loadtest input[name=total]", "300")
    page.fill("#loadtest input[name=concurrency]", "4")
    page.fill("#loadtest input[name=body]", '{"input": [[5.1, 3.5, 1.4, 0.2]]}')
    page.click("#loadtest button[type=submit]")
    status = page.locator("#loadtest-status")
    expect(status).to_have_attribute("data-done", "yes", timeout=120_000)
    text = status.inner_text()
    counts = {int(v): int(n) for v, n in re.findall(r"v(\d+) (\d+)", text.split("by version:")[1])}
    assert sum(counts.values()) == 300 and " 0 errors" in text, text
    assert 0.10 <= counts[2] / 300 <= 0.32, counts
    rps = page.locator("svg[aria-label='requests per second by version']")
    expect(rps).to_contain_text("v2:", timeout=10_000)
    expect(rps).to_contain_text("v1:")
    latency = page.locator("svg[aria-label='latency by version (p50, p99)']")
    expect(latency).to_contain_text("v2 p99:")
    expect(latency).to_contain_text("v1 p50:")
    shot(page, shots, "04-deployment-canary")

    page.click("#promote")
    expect(page.locator("#deployment-info")).to_contain_text("single")
    expect(page.locator(_replica_row(page, 2))).to_contain_text("primary")
    assert admin.get("/api/v1/deployments/iris-prod").json()["target"]["primary"] == 2
    page.click("#rollback")
    expect(page.locator(_replica_row(page, 1))).to_contain_text("primary", timeout=30_000)
    assert admin.get("/api/v1/deployments/iris-prod").json()["target"]["primary"] == 1
    expect(page.locator("#history")).to_contain_text("promote v2")
    expect(page.locator("#history")).to_contain_text("rollback to v1")
    expect(page.locator(_replica_row(page, 1))).to_contain_text("1 / 1", timeout=START_S)

    # a CSV test set with a label column: the accuracy shown is v1's on these rows
    rng = np.random.default_rng(7)
    rows = np.column_stack([rng.uniform(4.3, 7.9, 60), rng.uniform(2.0, 4.4, 60), rng.uniform(1.0, 6.9, 60),
                            rng.uniform(0.1, 2.5, 60)]).astype(np.float32).round(1)
    labels = ort_run(v2, {"input": rows})["label"]
    predicted = ort_run(folder / "iris.onnx", {"input": rows})["label"]
    right = int((predicted == labels).sum())
    csv = tmp_path / "test.csv"
    lines = ["sepal_length,sepal_width,petal_length,petal_width,label"]
    lines += [",".join(f"{x:.1f}" for x in r) + f",{int(y)}" for r, y in zip(rows, labels, strict=True)]
    csv.write_text("\n".join(lines) + "\n")
    page.set_input_files("#dataset input[name=file]", str(csv))
    expect(page.locator("#dataset-status")).to_contain_text("60 rows")
    expect(page.locator("#dataset select[name=label]")).to_have_value("label")
    expect(page.locator("#dataset select[name=output]")).to_have_value("label")
    page.click("#dataset button[type=submit]")
    expect(page.locator("#dataset-accuracy")).to_have_text(
        f"accuracy {100 * right / 60:.2f}% ({right} of 60)", timeout=60_000)
    expect(page.locator("#dataset-confusion")).to_contain_text("label \\ predicted")
    with page.expect_download() as download:
        page.click("#dataset-download")
    written = Path(download.value.path()).read_text().splitlines()
    assert written[0].endswith(",prediction") and len(written) == 61
    assert [int(line.rsplit(",", 1)[1]) for line in written[1:]] == predicted.tolist()
    shot(page, shots, "05-deployment-dataset")

    # a shadow of v2: the charts show how often it agrees with v1, and both versions' latency
    page.select_option("#experiment select[name=strategy]", "shadow")
    page.fill("#experiment input[name=version]", "2")
    page.click("#experiment button")
    expect(page.locator("#deployment-info")).to_contain_text("shadow v2")
    expect(page.locator(_replica_row(page, 2))).to_contain_text("1 / 1", timeout=START_S)
    page.fill("#loadtest input[name=total]", "40")
    page.click("#loadtest button[type=submit]")
    expect(status).to_have_attribute("data-done", "yes", timeout=120_000)
    assert "v1 40" in status.inner_text()  # a shadow never answers
    agreement = page.locator("svg[aria-label='shadow: agreement with the live version']")
    expect(agreement).to_contain_text("agreement:", timeout=15_000)
    expect(page.locator("svg[aria-label='shadow: latency of both versions']")).to_contain_text("shadow v2 p50")
    wait_for(lambda: admin.get("/api/v1/deployments/iris-prod/shadow").json()["requests"] > 0, 30, "comparisons")
    shot(page, shots, "05b-deployment-shadow")

    # the replica policy, then undeploy
    page.fill("#scale input[name=max_replicas]", "2")
    page.check("#scale input[name=scale_to_zero]")
    page.click("#scale button")
    expect(page.locator("#notice")).to_have_text("replica policy saved")
    policy = admin.get("/api/v1/deployments/iris-prod").json()["policy"]
    assert policy["max_replicas"] == 2 and policy["scale_to_zero"] and policy["min_replicas"] == 1
    page.click("#undeploy")
    page.wait_for_url(hub.url + "/ui/deployments")
    assert admin.get("/api/v1/deployments/iris-prod").status_code == 404
    assert not blocked, blocked


@pytest.fixture(scope="module")
def double(hub: HubProc, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A deployed image model: y = 2 * x on (N, 4, 4, 3) images."""
    model = scale_onnx(tmp_path_factory.mktemp("double") / "double.onnx", 2.0, shape=(None, 4, 4, 3))
    admin = hub.client(hub.login())
    assert admin.post("/api/v1/models", json={"name": "double"}).status_code == 201
    r = admin.post("/api/v1/models/double/versions", params={"filename": "double.onnx"}, content=model.read_bytes(),
                   headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert admin.post("/api/v1/deployments", json={"name": "double", "model": "double"}).status_code == 201
    return "double"


def test_try_an_image_model(hub: HubProc, double: str, page: Page, shots: Path, tmp_path: Path) -> None:
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    png = tmp_path / "square.png"
    Image.fromarray(pixels, "RGB").save(png)

    sign_in(page, hub.url, "admin", ADMIN_PASSWORD)
    page.goto(hub.url + "/ui/deployments/double")
    expect(page.locator(_replica_row(page, 1))).to_contain_text("1 / 1", timeout=START_S)
    page.set_input_files("#try input[name=image]", str(png))
    expect(page.locator("#try-preview")).to_be_visible()
    page.click("#try button[type=submit]")
    answer = page.locator("#try-answer")
    expect(answer).to_contain_text("HTTP 200 - version 1", timeout=60_000)
    body = answer.inner_text().split("\n", 1)[1]
    got = np.asarray(json.loads(body)["y"], dtype=np.float32)
    assert np.allclose(got.reshape(-1), pixels.reshape(-1).astype(np.float32) * 2.0), got
    shot(page, shots, "06-try-image")

    # the form made from the signature: a field per input, written as the JSON body of eval
    before = answer.inner_text()
    page.fill("#try-fields input[data-input=x]", json.dumps(np.ones((1, 4, 4, 3)).tolist()))
    page.click("#try-fill")
    expect(page.locator("#try input[name=path]")).to_have_value("eval")
    page.set_input_files("#try input[name=image]", [])
    page.click("#try button[type=submit]")
    expect(answer).not_to_have_text(before, timeout=60_000)
    assert answer.inner_text().startswith("HTTP 200 - version 1")
    assert np.allclose(json.loads(answer.inner_text().split("\n", 1)[1])["y"], 2.0)


def test_a_predictor_token_from_the_admin_page(hub: HubProc, double: str, page: Page, shots: Path) -> None:
    _accept_dialogs(page)
    sign_in(page, hub.url, "admin", ADMIN_PASSWORD)
    page.click("header a:text-is('Administration')")
    page.wait_for_url(hub.url + "/ui/admin")  # loaded: the page's script is running
    page.fill("#create-service input[name=name]", "ci-bot")
    page.fill("#create-service input[name=roles]", "predictor")
    page.fill("#create-service input[name=deployments]", "double")
    page.click("#create-service button")
    expect(page.locator("#token-once")).to_be_visible()
    token = page.locator("#token-value").input_value()
    jti = page.locator("#token-jti").inner_text().rsplit(" ", 1)[1]
    expect(page.locator("#users")).to_contain_text("ci-bot")
    shot(page, shots, "07-admin")

    body = {"x": np.ones((1, 4, 4, 3)).tolist()}
    status, text = _curl(hub.url + "/deployments/double/eval", token, body)
    assert status == 200 and np.allclose(json.loads(text)["y"], 2.0), text
    assert _curl(hub.url + "/api/v1/models", token)[0] == 403  # a predictor reads nothing
    page.fill("#revoke input[name=jti]", jti)
    page.click("#revoke button")
    expect(page.locator("#notice")).to_contain_text("revoked")
    assert _curl(hub.url + "/deployments/double/eval", token, body)[0] == 401


def _curl(url: str, token: str, body: object = None) -> tuple[int, str]:
    """The status and body of a request made with curl, as a script would make it."""
    argv = ["curl", "--silent", "--show-error", "--write-out", "\n%{http_code}", "-H", f"authorization: Bearer {token}"]
    if body is not None:
        argv += ["-H", "content-type: application/json", "--data-binary", json.dumps(body)]
    done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=60, check=True)
    text, _, status = done.stdout.rpartition("\n")
    return int(status), text
