"""The deployment page's monitoring in a real browser against a real hub and replica: the drift panel over a
shifted stream, the recent requests panel (logging turned on from the page, records with the version that
answered, a record's tensors, filters), and Try it's explain button. Names from the hub are shown as text."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from mlport.observability.requestlog.records import encode_tensor
from tests.builders import scale_onnx
from tests.hubutil import ADMIN_PASSWORD, HubProc, cli, ready_versions, wait_for
from tests.integration.console.conftest import shot, sign_in
from tests.integration.drift_util import REFERENCE_ROWS, send

pytestmark = pytest.mark.slow

DEPLOYMENT = "m-d"
INFER = f"/deployments/{DEPLOYMENT}/v2/models/{DEPLOYMENT}/infer"
#: A feature name that would run as script if the page put it in as HTML.
HOSTILE = "<script>window.pwned=1</script>c"
HOSTILE_ID = "<img src=x onerror=window.pwned=2>"
START_S = 120_000  # ms: a replica starting on a loaded machine


def _profiled_model(folder: Path) -> tuple[Path, Path]:
    """y = 2x over inputs a, b and HOSTILE (one input x [-1, 3]), ``m.model.yaml`` beside ``m.onnx``, and a profile
    of standard normal reference data made by ``mlport profile``."""
    model = scale_onnx(folder / "m.onnx", 2.0)
    config = folder / "m.model.yaml"
    config.write_text(f'fields: {{x: {{a: 0, b: 1, "{HOSTILE}": 2}}}}\n'
                      "drift: {window_rows: 300, interval_s: 0.1}\n")
    data = folder.parent / "reference.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", HOSTILE])
        w.writerows(np.random.default_rng(0).normal(size=(REFERENCE_ROWS, 3)).tolist())
    built = folder.parent / "built"
    (built / "1").mkdir(parents=True)
    shutil.copy(model, built / "1" / "model.onnx")
    shutil.copy(config, built / "model.yaml")
    profile = folder.parent / "profile.json"
    done = subprocess.run([sys.executable, "-m", "mlport.cli.main", "profile", str(data), "--model", str(built),
                           "-o", str(profile)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return model, profile


@pytest.fixture(scope="module")
def admin(hub: HubProc, tmp_path_factory: pytest.TempPathFactory) -> httpx.Client:
    """The deployment ``m-d`` of a model with a profile, ready."""
    folder = tmp_path_factory.mktemp("monitored") / "upload"
    folder.mkdir()
    model, profile = _profiled_model(folder)
    token = hub.login()
    client = hub.client(token)
    assert client.post("/api/v1/models", json={"name": "m"}).status_code == 201
    done = cli(folder.parent / "cfg", "versions", "upload", "m", str(model), "--profile", str(profile),
               "--hub", hub.url, "--token", token)
    assert done.returncode == 0, done.stderr
    r = client.post("/api/v1/deployments", json={"name": DEPLOYMENT, "model": "m", "version": 1})
    assert r.status_code == 201, r.text
    wait_for(lambda: ready_versions(client, DEPLOYMENT).get(1), 120, what="version 1 ready")
    return client


def _watch_csp(page: Page) -> list[str]:
    blocked: list[str] = []  # what the Content-Security-Policy refused: the panels must need nothing it forbids
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("dialog", lambda dialog: dialog.accept())
    return blocked


def _open(page: Page, hub: HubProc) -> None:
    sign_in(page, hub.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{hub.url}/ui/deployments/{DEPLOYMENT}")
    expect(page.locator("#replicas tbody tr:has(td:text-is('v1'))")).to_contain_text("1 / 1", timeout=START_S)


def _oip(rows: list[list[float]], rid: str) -> dict[str, Any]:
    data = np.asarray(rows, dtype=np.float32)
    return {"id": rid, "inputs": [{"name": "x", "datatype": "FP32", "shape": list(data.shape),
                                   "data": data.ravel().tolist()}]}


def test_drift_panel_shows_the_shifted_feature(hub: HubProc, admin: httpx.Client, page: Page, shots: Path) -> None:
    blocked = _watch_csp(page)
    _open(page, hub)
    # no request answered yet: the replica watches nothing, and the panel says why and how
    expect(page.locator("#drift-none")).to_be_visible(timeout=30_000)
    expect(page.locator("#drift-reason")).to_contain_text("reference profile")
    expect(page.locator("#drift-summary .state")).to_have_text("unwatched")

    rows = np.random.default_rng(7).normal(size=(300, 3))
    rows[:, 2] += 1.5
    send(admin, INFER, rows, per_request=30)

    def computed() -> bool:
        replicas = admin.get(f"/api/v1/deployments/{DEPLOYMENT}/drift").json()["replicas"]
        versions = replicas[0].get("versions") or [{}]
        return versions[0].get("rows_seen") == 300 and versions[0].get("status") != "insufficient"

    wait_for(computed, what="the replica's figures over 300 rows")
    table = page.locator("#drift-versions table.drift")
    shifted = table.locator("tbody tr").filter(has_text=HOSTILE)
    expect(shifted.locator(".state")).to_have_text("drift", timeout=30_000)
    expect(table.locator("tbody tr:has(td:text-is('a')) .state")).to_have_text("ok")
    expect(table.locator("tbody tr:has(td:text-is('y[2]')) .state")).to_have_text("drift")
    expect(page.locator("#drift-summary .state")).to_have_text("drift")
    expect(page.locator("#drift-none")).to_be_hidden()
    expect(shifted).to_contain_text("300 of 300 rows")
    expect(shifted).to_contain_text(f"{REFERENCE_ROWS} rows")
    expect(shifted).to_contain_text("(p=")  # the Kolmogorov-Smirnov p-value
    assert shifted.locator("td").first.inner_text() == HOSTILE  # the name, as text
    assert page.locator("#drift script").count() == 0 and page.evaluate("window.pwned") is None
    shot(page, shots, "08-deployment-drift")
    assert not blocked, blocked


def _try(page: Page, path: str, body: str) -> None:
    before = page.locator("#try-answer").inner_text()
    page.fill("#try input[name=path]", path)
    page.fill("#try textarea[name=body]", body)
    page.click("#try button[type=submit]")
    expect(page.locator("#try-answer")).not_to_have_text(before, timeout=60_000)
    expect(page.locator("#try-answer")).to_contain_text("HTTP 200 - version 1")


def _bars(page: Page) -> list[tuple[str, float]]:
    """The explanation's bars as drawn: (feature label, value), top to bottom."""
    labels = page.eval_on_selector_all("#explain-result svg.bars text.feature",
                                       "ts => ts.map(t => t.firstChild.nodeValue)")
    values = page.eval_on_selector_all("#explain-result svg.bars text.value", "ts => ts.map(t => t.textContent)")
    return [(label, float(value)) for label, value in zip(labels, values, strict=True)]


def test_explain_button_draws_the_attributions(hub: HubProc, admin: httpx.Client, page: Page, shots: Path) -> None:
    blocked = _watch_csp(page)
    _open(page, hub)
    button = page.locator("#explain")
    expect(button).to_be_disabled()
    # the form of the signature's inputs: an eval body, explained as the OIP request it stands for
    for name, value in (("a", "1"), ("b", "2"), (HOSTILE, "3")):
        page.fill(f'#try-fields input[data-input="{name}"]', f"[{value}]")
    page.click("#try-fill")
    _try(page, "eval", page.locator("#try textarea[name=body]").input_value())
    expect(button).to_be_enabled()
    button.click()
    result = page.locator("#explain-result")
    expect(result.locator("svg.bars")).to_be_visible(timeout=60_000)
    expect(page.locator("#explain-status")).to_have_text("HTTP 200 - version 1")
    expect(result.locator(".explain-facts")).to_contain_text("method kernel_shap, model m-d version 1 - 1 rows")
    # y = 2x: each output element is explained by its own feature alone, and base value + attributions = prediction
    for element, feature, prediction in ((0, "a", 2.0), (2, HOSTILE, 6.0)):
        page.select_option("#explain-result select[aria-label=output]", str(element))
        expect(result.locator(".explain-base")).to_contain_text(f"y [{element}]: base value ")
        bars = _bars(page)
        assert bars[0][0] == (feature if len(feature) <= 26 else feature[:25] + "..."), bars
        assert all(abs(value) < 1e-3 for _, value in bars[1:]), bars
        base = float(result.locator(".explain-base").inner_text().split("base value ")[1].split(",")[0])
        assert abs(base + bars[0][1] - prediction) < 0.01, (base, bars)
        expect(result.locator(".explain-base")).to_contain_text(f"prediction {prediction:g}")
    assert sorted(name for name, _ in _bars(page)) == sorted(["a", "b", HOSTILE[:25] + "..."])
    assert page.evaluate("window.pwned") is None
    shot(page, shots, "10-deployment-explain")
    # a TF Serving predict body goes to TF Serving's explain verb
    _try(page, f"v1/models/{DEPLOYMENT}:predict", '{"instances": [[1, 2, 3]]}')
    page.click("#explain")
    expect(result.locator(".explain-base")).to_contain_text("y [0]: base value ", timeout=60_000)
    assert _bars(page)[0][0] == "a"
    assert not blocked, blocked


def test_explain_shows_the_error_of_the_explanation(hub: HubProc, admin: httpx.Client, page: Page) -> None:
    """A prediction of 17 rows is answered, its explanation (at most 16 rows) refused: the page says why."""
    _open(page, hub)
    rows = np.ones((17, 3)).tolist()
    _try(page, f"v2/models/{DEPLOYMENT}/infer", json.dumps(_oip(rows, "many")))
    page.click("#explain")
    error = page.locator("#explain-result .error")
    expect(error).to_contain_text("HTTP 413", timeout=60_000)
    expect(error).to_contain_text("16")


def test_explain_an_image_shows_the_heat_map(hub: HubProc, admin: httpx.Client, page: Page, shots: Path,
                                            tmp_path: Path) -> None:
    """An image tried (sent to eval) is explained by occlusion: the page asks for the PNG heat map and shows it."""
    model = scale_onnx(tmp_path / "double.onnx", 2.0, shape=(None, 4, 4, 3))
    assert admin.post("/api/v1/models", json={"name": "double"}).status_code == 201
    r = admin.post("/api/v1/models/double/versions", params={"filename": "double.onnx"}, content=model.read_bytes())
    assert r.status_code == 201, r.text
    assert admin.post("/api/v1/deployments", json={"name": "double", "model": "double"}).status_code == 201
    png = tmp_path / "square.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5, "RGB").save(png)
    sign_in(page, hub.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{hub.url}/ui/deployments/double")
    expect(page.locator("#replicas tbody tr:has(td:text-is('v1'))")).to_contain_text("1 / 1", timeout=START_S)
    page.set_input_files("#try input[name=image]", str(png))
    page.click("#try button[type=submit]")
    expect(page.locator("#try-answer")).to_contain_text("HTTP 200 - version 1", timeout=60_000)
    page.click("#explain")
    heat = page.locator("#explain-result img.heatmap")
    expect(heat).to_be_visible(timeout=60_000)
    size = heat.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size[0] >= 4 and size[1] >= 4, size
    shot(page, shots, "11-deployment-explain-image")


def test_page_scripts_are_files_and_a_viewer_gets_no_logging_button(hub: HubProc, admin: httpx.Client) -> None:
    with httpx.Client(base_url=hub.url, timeout=30) as browser:
        assert browser.post("/ui/login", data={"username": "admin", "password": ADMIN_PASSWORD}).status_code == 303
        assert 'id="logging-on"' in browser.get(f"/ui/deployments/{DEPLOYMENT}").text
    r = admin.post("/api/v1/users", json={"name": "vic", "password": "vic-password-long", "roles": ["viewer"]})
    assert r.status_code == 201, r.text
    with httpx.Client(base_url=hub.url, timeout=30) as browser:  # a viewer reads the panels, and gets no button
        assert browser.post("/ui/login", data={"username": "vic", "password": "vic-password-long"}).status_code == 303
        r = browser.get(f"/ui/deployments/{DEPLOYMENT}")
        assert r.status_code == 200
        assert "script-src 'self';" in r.headers["content-security-policy"]
        assert "style-src 'self';" in r.headers["content-security-policy"]
        scripts = re.findall(r"<script[^>]*>", r.text)
        assert scripts and all(re.fullmatch(r'<script src="/ui/static/[a-z]+\.js" defer>', s) for s in scripts), scripts
        assert "<style" not in r.text and " style=" not in r.text and " on" + "click=" not in r.text
        assert 'id="requests-table"' in r.text and 'id="drift-versions"' in r.text and 'id="logging-on"' not in r.text
        assert browser.get(f"/api/v1/deployments/{DEPLOYMENT}/logging").status_code == 200
        assert browser.get(f"/api/v1/deployments/{DEPLOYMENT}/drift").status_code == 200
        for name in ("tensors", "drift", "requests", "attributions", "explain"):
            assert f'<script src="/ui/static/{name}.js" defer>' in r.text
            static = browser.get(f"/ui/static/{name}.js")
            assert static.status_code == 200 and "innerHTML" not in static.text and "eval(" not in static.text


def test_logged_tensors_are_decoded_capped_and_shown_as_text(hub: HubProc, admin: httpx.Client, page: Page) -> None:
    """The page's decoder against the request log's own encoder: every datatype, text and bytes, and a tensor
    larger than what is shown."""
    _open(page, hub)
    words = np.empty(3, dtype=object)
    words[:] = [b"abc", b"\xff\x00", "\u00e9" * 300]
    cases: list[tuple[np.ndarray, str]] = [
        (np.array([[1.5, -2.0]], np.float16), "[1.5, -2]"),
        (np.array([2**40, -3], np.int64), "[1099511627776, -3]"),
        (np.array([2**64 - 1], np.uint64), "[18446744073709551615]"),
        (np.array([True, False]), "[true, false]"),
        (np.array([[0.1, np.nan, np.inf]]), "[0.1, NaN, Infinity]"),
        (np.array([[-7, 200]], np.int16), "[-7, 200]"),
        (words, '["abc", 0xff00, "' + "\u00e9" * 199 + '...]'),
        (np.array(["<b>bold</b>"], dtype=object), '["<b>bold</b>"]'),
        (np.array(["\u00e9" * 2000], dtype=object), '["' + "\u00e9" * 199 + '...]'),  # cut inside a character
    ]
    decode = "t => MlportTensors.format(t)"
    for array, shown in cases:
        assert page.evaluate(decode, encode_tensor("t", array)) == shown, array
    big = np.arange(1000, dtype=np.float32).reshape(10, 100)
    lines = page.evaluate(decode, encode_tensor("t", big)).split("\n")
    assert lines[0] == "[" + ", ".join(str(i) for i in range(100)) + "]" and len(lines) == 3
    assert lines[2] == "... 800 more elements not shown"


def _logged(admin: httpx.Client) -> Callable[[], bool]:
    probes = iter(range(10_000))

    def probe() -> bool:  # the replica starts again with the log on: a request until one is kept
        admin.post(INFER, json=_oip([[0.0, 0.0, 0.0]], f"probe-{next(probes)}"))
        return bool(admin.get(f"/api/v1/deployments/{DEPLOYMENT}/logs").json()["records"])

    return probe


def test_recent_requests_panel(hub: HubProc, admin: httpx.Client, page: Page, shots: Path) -> None:
    blocked = _watch_csp(page)
    _open(page, hub)
    off = page.locator("#requests-off")
    expect(off).to_be_visible(timeout=30_000)
    expect(off).to_contain_text(f"mlport logging {DEPLOYMENT}")
    expect(off).to_contain_text(f"PUT /api/v1/deployments/{DEPLOYMENT}/logging")
    page.click("#logging-on")
    expect(off).to_be_hidden()
    assert admin.get(f"/api/v1/deployments/{DEPLOYMENT}/logging").json()["logging"]["payload"] == "all"
    wait_for(_logged(admin), 120, what="a logged request")

    r = admin.post(INFER, json=_oip([[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]], HOSTILE_ID))
    assert r.status_code == 200, r.text
    bad = admin.post(INFER, json={"id": "wrong-shape", "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]})
    assert bad.status_code == 400, bad.text
    table = page.locator("#requests-table")
    row = table.locator("tbody tr").filter(has_text=HOSTILE_ID)
    expect(row).to_contain_text("v1", timeout=30_000)
    expect(row).to_contain_text("ok")
    expect(row).to_contain_text("v2")  # the protocol
    row.locator("a.request-id").click()
    detail = page.locator("#request-detail")
    expect(detail).to_contain_text("Version that answered")
    expect(detail.locator("dd").first).to_have_text(HOSTILE_ID)
    expect(detail.locator("pre.tensor").first).to_have_text("[1, 2, 3]\n[4, 5, 6.5]")
    expect(detail.locator("pre.tensor").nth(1)).to_have_text("[2, 4, 6]\n[8, 10, 13]")
    assert page.evaluate("window.pwned") is None and page.locator("#requests img").count() == 0
    shot(page, shots, "09-deployment-requests")

    # the filters: the failed request alone, then the answers of v1 with status ok
    failed = table.locator("tbody tr").filter(has_text="wrong-shape")
    expect(failed).to_have_count(1, timeout=30_000)
    status = failed.locator(".state").inner_text()
    assert status != "ok"
    page.select_option("#requests-filter select[name=status]", status)
    expect(table.locator("tbody tr")).to_have_count(1)
    page.select_option("#requests-filter select[name=status]", "ok")
    page.select_option("#requests-filter select[name=version]", "1")
    expect(table.locator("tbody tr").filter(has_text="wrong-shape")).to_have_count(0)
    expect(row).to_be_visible()
    assert not blocked, blocked


def test_recent_requests_of_a_canary_by_version_and_page(hub: HubProc, admin: httpx.Client, page: Page,
                                                         tmp_path: Path) -> None:
    """Each record names the version that answered it; the version filter keeps one; pages of 20, newest first."""
    if admin.get(f"/api/v1/deployments/{DEPLOYMENT}/logging").json()["logging"] is None:
        assert admin.put(f"/api/v1/deployments/{DEPLOYMENT}/logging", json={"sample": 1.0}).status_code == 200
        wait_for(_logged(admin), 120, what="a logged request")
    blocked = _watch_csp(page)
    _open(page, hub)
    v2 = scale_onnx(tmp_path / "m2.onnx", 3.0).read_bytes()
    r = admin.post("/api/v1/models/m/versions", params={"filename": "m.onnx"}, content=v2)
    assert r.status_code == 201, r.text
    assert admin.post(f"/api/v1/deployments/{DEPLOYMENT}/canary", json={"version": 2, "percent": 50}).status_code == 200
    wait_for(lambda: ready_versions(admin, DEPLOYMENT).get(2), 120, what="version 2 ready")
    answered: dict[str, str] = {}
    for i in range(40):
        r = admin.post(INFER, json=_oip([[1.0, 1.0, 1.0]], f"canary-{i}"))
        assert r.status_code == 200, r.text
        answered[f"canary-{i}"] = r.json()["model_version"]
    assert set(answered.values()) == {"1", "2"}

    def every_record() -> int | None:  # the replicas' writers keep a record a moment before it is in the files
        records = admin.get(f"/api/v1/deployments/{DEPLOYMENT}/logs", params={"limit": 10_000}).json()["records"]
        return len(records) if answered.keys() <= {r["id"] for r in records} else None

    total = wait_for(every_record, what="the 40 records of the canary", every=0.5)
    pages = page.locator("#requests-page")
    expect(pages).to_contain_text(f"of the {total} newest read", timeout=30_000)
    table = page.locator("#requests-table")
    expect(page.locator("#requests-filter select[name=version] option[value='2']")).to_have_count(1, timeout=30_000)
    page.select_option("#requests-filter select[name=version]", "2")
    newest = min(i for i in range(40) if answered[f"canary-{39 - i}"] == "2")
    expect(table.locator("tbody tr").first).to_contain_text(f"canary-{39 - newest}", timeout=30_000)
    shown = table.locator("tbody tr")
    assert all(text == "v2" for text in shown.locator("td:nth-child(3)").all_inner_texts())
    twos = sum(1 for v in answered.values() if v == "2")
    expect(shown).to_have_count(min(twos, 20))

    page.select_option("#requests-filter select[name=version]", "")
    expect(pages).to_contain_text("requests 1-20 of")
    first = shown.first.inner_text()
    page.click("#requests-older")
    expect(pages).to_contain_text("requests 21-40 of")
    expect(shown.first).not_to_have_text(first)
    page.click("#requests-newer")
    expect(pages).to_contain_text("requests 1-20 of")
    assert not blocked, blocked


def test_attributions_are_drawn_as_bars_with_names_as_text(hub: HubProc, admin: httpx.Client, page: Page) -> None:
    """The drawing of an explanation answer (the endpoint's JSON layout): a bar per feature, largest first, the
    features past 20 summed in one bar, the base value and the prediction, hostile names shown as text."""
    _open(page, hub)
    features = [HOSTILE] + [f"f{i}" for i in range(1, 25)]
    values = [-3.0] + [0.1 * i for i in range(1, 25)]
    answer = {"model_name": DEPLOYMENT, "model_version": "1", "method": "kernel_shap", "features": features,
              "outputs": [{"name": "y", "element": 0, "base_value": [0.5], "values": [values], "prediction": [1.25]}],
              "limits": {"rows": 1, "evaluations": 2048, "seconds": 0.5}}
    drawn = page.evaluate("""answer => {
        const box = document.createElement("div");
        box.id = "drawn";
        document.body.appendChild(box);
        MlportAttributions.show(box, answer);
        return Array.from(box.querySelectorAll("svg.bars text.feature"), (t) => t.firstChild.nodeValue);
    }""", answer)
    box = page.locator("#drawn")
    assert drawn[0] == HOSTILE[:25] + "..." and drawn[1] == "f24" and drawn[-1] == "(6 other features)", drawn
    assert box.locator("svg.bars rect").count() == 20 and box.locator("rect.down").count() == 1
    expect(box.locator(".explain-base")).to_have_text("y [0]: base value 0.5, prediction 1.25")
    expect(box.locator(".explain-facts")).to_contain_text("method kernel_shap")
    assert page.evaluate("window.pwned") is None and box.locator("script").count() == 0
    # an image's JSON answer: its map drawn on a canvas, red where it raised the score, blue where it lowered it
    image = {**answer, "method": "occlusion", "features": ["image"],
             "outputs": [{"name": "y", "element": None, "base_value": [0.0], "map": [[[1.0, 0.0], [-1.0, 0.5]]],
                          "prediction": [1.0]}]}
    pixels = page.evaluate("""answer => {
        const box = document.getElementById("drawn");
        box.textContent = "";
        MlportAttributions.show(box, answer);
        const canvas = box.querySelector("canvas.heatmap");
        return [canvas.width, canvas.height, Array.from(canvas.getContext("2d").getImageData(0, 0, 2, 2).data)];
    }""", image)
    assert pixels[:2] == [2, 2]
    rgba = [pixels[2][i:i + 4] for i in range(0, 16, 4)]
    assert rgba[0] == [255, 0, 0, 255] and rgba[1] == [255, 255, 255, 255] and rgba[2] == [0, 0, 255, 255], rgba


def test_records_kept_by_a_receiver_are_said_to_be_there(hub: HubProc, admin: httpx.Client, page: Page) -> None:
    """A deployment logging to a CloudEvents receiver: the hub cannot read its records, and the panel says where."""
    receiver = "http://127.0.0.1:9/events"
    r = admin.put(f"/api/v1/deployments/{DEPLOYMENT}/logging", json={"sample": 1.0, "sink": receiver})
    assert r.status_code == 200, r.text
    sign_in(page, hub.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{hub.url}/ui/deployments/{DEPLOYMENT}")
    status = page.locator("#requests-status")
    expect(status).to_contain_text(f"logs to the receiver {receiver}", timeout=30_000)
    expect(status).to_have_class("error")
    assert admin.delete(f"/api/v1/deployments/{DEPLOYMENT}/logging").status_code == 204
    expect(page.locator("#requests-off")).to_be_visible(timeout=30_000)
