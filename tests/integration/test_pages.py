"""The runtime's web pages in a real browser: the landing page (GET /) and the Try-it form of /docs.

Playwright drives Debian's chromium (``/usr/bin/chromium``, never a downloaded browser) against a real
``mlport serve``. Screenshots of every page go to ``$MLPORT_TEST_ARTIFACTS/runtime-pages`` (default:
``build/test-artifacts/runtime-pages`` in the checkout).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.builders import iris_onnx, save_graph
from tests.builders_strings import string_concat_onnx
from tests.conftest import Server, start_server

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


# ------------------------------------------------------------------ models and server
def _image_model(path: Path, op: str) -> Path:
    """(N, H, W, 3) images in; ``op`` "sum": total [N] float32 of every pixel; "invert": 255 - x as uint8."""
    from onnx import TensorProto, helper

    dims: list[int | str] = ["N", "H", "W", 3]
    if op == "sum":
        axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
        nodes = [helper.make_node("ReduceSum", ["pixels", "axes"], ["total"], keepdims=0)]
        inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, dims)]
        outputs = [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N"])]
        inits = [axes]
    else:
        k = helper.make_tensor("k", TensorProto.FLOAT, [], [255.0])
        nodes = [helper.make_node("Cast", ["pixels"], ["xf"], to=TensorProto.FLOAT),
                 helper.make_node("Sub", ["k", "xf"], ["yf"]),
                 helper.make_node("Cast", ["yf"], ["inverted"], to=TensorProto.UINT8)]
        inputs = [helper.make_tensor_value_info("pixels", TensorProto.UINT8, dims)]
        outputs = [helper.make_tensor_value_info("inverted", TensorProto.UINT8, dims)]
        inits = [k]
    return save_graph(helper.make_graph(nodes, op, inputs, outputs, inits), path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("pages") / "models"
    iris_onnx(root / "iris" / "1" / "model.onnx")
    string_concat_onnx(root / "strings" / "1" / "model.onnx")
    _image_model(root / "pixel_sum" / "1" / "model.onnx", "sum")
    _image_model(root / "invert" / "1" / "model.onnx", "invert")
    iris_onnx(root / "lazy" / "1" / "model.onnx")
    (root / "lazy" / "model.yaml").write_text("lazy: true\n")
    broken = root / "broken" / "1" / "model.onnx"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"this is not an ONNX model")
    s = start_server(root, "--poll-interval", "0", log_dir=tmp_path_factory.mktemp("logs"))
    yield s
    s.stop()


# ------------------------------------------------------------------ the browser
# Playwright's sync API keeps its event loop running in this thread while it is started, so it lives for this
# module only (not the whole session, as pytest-playwright's own fixtures would): later tests that call
# asyncio.run() in the same process would fail otherwise.
@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's chromium: Playwright never downloads a browser here."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: scripts/test.sh installs it")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture
def tab(chromium: Browser) -> Iterator[Page]:
    """A new tab in a fresh context (no cookies or cache from another test)."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def console(tab: Page) -> list[str]:
    """Errors the page logs (a script or style refused by the Content-Security-Policy lands here)."""
    seen: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        if message.type == "error":
            seen.append(message.text)

    tab.on("console", keep)
    tab.on("pageerror", lambda exc: seen.append(str(exc)))
    return seen


def shot(tab: Page, name: str) -> Path:
    folder = Path(os.environ.get("MLPORT_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts")) / "runtime-pages"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def sample_image(seed: int, w: int = 6, h: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def answer_json(tab: Page) -> Any:
    expect(tab.locator("#answer-status")).to_have_text(re.compile(r"^200 "), timeout=30_000)
    return json.loads(tab.locator("#answer").text_content() or "null")


def open_try_it(tab: Page, server: Server, model: str) -> None:
    tab.goto(f"{server.url}/docs?model={model}")
    expect(tab.locator("body")).to_have_attribute("data-state", "ready", timeout=30_000)
    expect(tab.locator("#model")).to_have_value(model)


# ------------------------------------------------------------------ landing page
def test_landing_page_lists_models_states_and_load_errors(server: Server, tab: Page, console: list[str]) -> None:
    tab.goto(server.url + "/")
    rows = tab.locator("#models > tbody > tr")
    expect(rows).to_have_count(6)
    assert [r.get_attribute("data-model") for r in rows.all()] == [
        "broken", "invert", "iris", "lazy", "pixel_sum", "strings"]

    iris = tab.locator('tr[data-model="iris"]')
    expect(iris).to_have_attribute("data-ready", "true")
    expect(iris.locator('tr[data-version="1"] .state')).to_have_text("READY")
    expect(iris.locator(".signature")).to_contain_text("in: input float32 [-1, 4]")
    expect(iris.locator("a.try")).to_have_attribute("href", "/docs?model=iris")

    broken = tab.locator('tr[data-model="broken"]')
    expect(broken).to_have_attribute("data-ready", "false")
    expect(broken.locator('tr[data-version="1"] .state')).to_have_text("UNAVAILABLE")
    # the load error, as GET /models reports it
    reason = httpx.get(server.url + "/models").json()["models"][0]["versions"][0]["reason"]
    assert "model.onnx" in reason
    expect(broken.locator(".error")).to_have_text(reason)
    expect(broken.locator("a.try")).to_have_count(0)
    # a lazy model is not loaded yet, and can be tried: the first request loads it
    lazy = tab.locator('tr[data-model="lazy"]')
    expect(lazy.locator('tr[data-version="1"] .state')).to_have_text("NOT_LOADED")
    expect(lazy.locator("a.try")).to_have_attribute("href", "/docs?model=lazy")
    expect(lazy.locator(".reason")).to_contain_text("first request")
    expect(lazy.locator(".error")).to_have_count(0)  # not an error: shown as a note
    expect(tab.locator("#status")).to_contain_text("6 model(s)")
    shot(tab, "landing")

    tab.click("#link-metrics")
    assert tab.url == server.url + "/metrics"
    assert "mlport_model_loaded" in (tab.text_content("body") or "")
    tab.goto(server.url + "/")
    tab.click('tr[data-model="iris"] a.try')
    expect(tab.locator("body")).to_have_attribute("data-state", "ready", timeout=30_000)
    expect(tab.locator("#model")).to_have_value("iris")
    assert not console, console


def test_pages_send_a_strict_content_security_policy(server: Server) -> None:
    with server.client() as c:
        for path in ("/", "/docs"):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp
            assert "unsafe-inline" not in csp and "http" not in csp
            # no inline script or style: every <script> has a src, no style attribute or element
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text), path
            assert "<style" not in r.text and " style=" not in r.text, path
            for link in re.findall(r"""(?:src|href)="([^"]*)\"""", r.text):
                assert link.startswith("/") or not re.match(r"^([a-z][a-z0-9+.-]*:|//)", link, re.I), link
        # the HTML answer of eval runs nothing either
        answer = c.post("/models/strings/eval", json={"text": "<b>", "n": 1}, headers={"accept": "text/html"})
        assert answer.status_code == 200 and "&lt;b&gt;!" in answer.text
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "http" not in csp
        js = c.get("/static/docs.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert c.get("/static/mlport.css").headers["content-type"].startswith("text/css")
        missing = c.get("/static/nope.js")
        assert missing.status_code == 404 and "nope.js" in missing.json()["error"]
        assert c.get("/static/..%2F__init__.py").status_code == 404


# ------------------------------------------------------------------ Try it
def test_try_an_image_model_with_an_uploaded_png(server: Server, tab: Page, console: list[str]) -> None:
    pixels = sample_image(seed=1)
    open_try_it(tab, server, "pixel_sum")
    expect(tab.locator("#mode")).to_have_value("form")
    expect(tab.locator("#body-box")).to_be_hidden()
    tab.set_input_files("#input-pixels", files=[{"name": "sample.png", "mimeType": "image/png",
                                                  "buffer": png(pixels)}])
    preview = tab.locator("#drop-pixels img.preview")
    expect(preview).to_be_visible()
    assert preview.evaluate("img => img.complete && img.naturalWidth") == pixels.shape[1]
    tab.click("#send")
    answer = answer_json(tab)
    assert answer == {"total": pytest.approx(float(pixels.astype(np.float64).sum()))}
    shot(tab, "try-image-upload")
    assert not console, console


def test_drop_an_image_and_get_an_image_back(server: Server, tab: Page, console: list[str]) -> None:
    pixels = sample_image(seed=2, w=5, h=3)
    open_try_it(tab, server, "invert")
    data = base64.b64encode(png(pixels)).decode("ascii")
    dropped = tab.evaluate_handle("""(data) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
        return transfer;
    }""", data)
    tab.dispatch_event("#drop-pixels", "drop", {"dataTransfer": dropped})
    expect(tab.locator("#drop-pixels .summary")).to_contain_text("dropped.png")
    expect(tab.locator("#drop-pixels img.preview")).to_be_visible()
    tab.fill("#accept", "image/png")
    tab.click("#send")
    expect(tab.locator("#answer-status")).to_contain_text("image/png", timeout=30_000)
    answer = tab.locator("#answer-image")
    expect(answer).to_be_visible()
    expect(answer).to_have_js_property("complete", True)
    # the pixels the page shows, read back through a canvas
    shown = answer.evaluate("""(img) => {
        const canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth;
        canvas.height = img.naturalHeight;
        const context = canvas.getContext("2d");
        context.drawImage(img, 0, 0);
        return [img.naturalWidth, img.naturalHeight,
                Array.from(context.getImageData(0, 0, img.naturalWidth, img.naturalHeight).data)];
    }""")
    w, h, rgba = shown
    assert (w, h) == (pixels.shape[1], pixels.shape[0])
    back = np.array(rgba, dtype=np.uint8).reshape(h, w, 4)
    np.testing.assert_array_equal(back[..., :3], 255 - pixels)
    shot(tab, "try-image-drop")
    assert not console, console


def test_a_file_that_is_not_an_image_is_refused_before_sending(server: Server, tab: Page) -> None:
    open_try_it(tab, server, "pixel_sum")
    tab.set_input_files("#input-pixels", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                  "buffer": b"hello"}])
    expect(tab.locator("#drop-pixels .summary")).to_contain_text("not a PNG or JPEG")
    tab.click("#send")
    expect(tab.locator("#answer-status")).to_have_text("not sent: choose an image for input 'pixels'")


def test_try_a_string_model(server: Server, tab: Page, console: list[str]) -> None:
    open_try_it(tab, server, "strings")
    expect(tab.locator("#mode")).to_have_value("form")
    text = tab.locator("#input-text")
    expect(text).to_have_value("")
    expect(tab.locator("#input-n")).to_have_value("0")  # one instance of the example, as the text is one
    text.fill("héllo <world> & co")
    tab.fill("#input-n", "21")
    tab.click("#send")
    assert answer_json(tab) == {"echo": "héllo <world> & co!", "twice": 42}
    shot(tab, "try-string")
    # a JSON array of strings is a batch
    text.fill('["a", "b"]')
    tab.fill("#input-n", "[1, 2]")
    tab.click("#send")
    assert answer_json(tab) == {"echo": ["a!", "b!"], "twice": [2, 4]}
    # the JSON body stays one choice away, filled with the model's example
    tab.select_option("#mode", "json")
    expect(tab.locator("#form-box")).to_be_hidden()
    body = json.loads(tab.locator("#body").input_value())
    assert body == {"text": [""], "n": [0]}
    tab.click("#send")
    assert answer_json(tab) == {"echo": ["!"], "twice": [0]}
    assert not console, console


def test_a_tabular_model_keeps_the_json_body(server: Server, tab: Page, console: list[str]) -> None:
    open_try_it(tab, server, "iris")
    expect(tab.locator("#mode")).to_have_value("json")
    expect(tab.locator("#form-box")).to_be_hidden()
    tab.fill("#body", json.dumps({"input": [5.1, 3.5, 1.4, 0.2]}))
    tab.click("#send")
    answer = answer_json(tab)
    assert answer["label"] == 0 and len(answer["probabilities"]) == 3
    # an endpoint other than eval has no form
    tab.locator("button.op", has_text="/v2/models/{name}/infer").first.click()
    expect(tab.locator("#mode-box")).to_be_hidden()
    expect(tab.locator("#body-box")).to_be_visible()
    shot(tab, "docs")
    assert not console, console


def test_try_a_lazy_model_loads_it(server: Server, tab: Page, console: list[str]) -> None:
    # (after the landing page test, which sees it not loaded yet)
    open_try_it(tab, server, "lazy")
    # its signature is read from its files without loading it (the form of fields comes once it is loaded)
    expect(tab.locator("#signature tr").nth(1)).to_have_text("inputinputfloat32[-1, 4]")
    expect(tab.locator("#mode-box")).to_be_hidden()
    tab.fill("#body", json.dumps({"input": [[5.1, 3.5, 1.4, 0.2]]}))
    tab.click("#send")
    assert answer_json(tab)["label"] == [0]
    tab.goto(server.url + "/")
    expect(tab.locator('tr[data-model="lazy"] tr[data-version="1"] .state')).to_have_text("READY")
    expect(tab.locator('tr[data-model="lazy"] .signature')).to_contain_text("in: input float32 [-1, 4]")
    # the signature asked before the load was answered from the files: no failed request
    assert console == []
