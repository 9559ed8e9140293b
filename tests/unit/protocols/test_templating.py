"""The runtime's page templates: values are escaped, the Try-it data survives the trip through an attribute."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import jinja2
import pytest

from mlport.protocols.http.pages import _Model, _static_files, _Version
from mlport.protocols.templating import render

EVIL = "<script>alert('x')</script> & \"quoted\""


class _Attributes(HTMLParser):
    """Every (tag, attributes) of a page, as a browser's parser reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Attributes()
    parser.feed(page)
    return parser.found


def test_landing_escapes_names_and_load_errors() -> None:
    model = _Model("m&m", False, [_Version("1", "UNAVAILABLE", EVIL, "")], False, [], [])
    page = render("landing.html", root="", version="1.0", models=[model], ready=False)
    assert "<script>" not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;quoted&#34;" in page
    assert [a["data-model"] for t, a in _tags(page) if t == "tr" and "data-model" in a] == ["m&m"]
    assert 'class="try"' not in page  # a model that failed to load is not offered


def test_landing_links_carry_the_root_and_quote_the_model() -> None:
    model = _Model("a b", True, [_Version("2", "READY", "", "1.0 KiB")], True, ["x float32 [-1, 2]"],
                   ["y int64 [-1]"])
    page = render("landing.html", root="/prefix", version="1.0", models=[model], ready=True)
    links = [a.get("href") for t, a in _tags(page) if t == "a"]
    assert "/prefix/docs" in links and "/prefix/metrics" in links and "/prefix/docs?model=a%20b" in links
    assert "in: x float32 [-1, 2]" in page and "out: y int64 [-1]" in page


def test_docs_page_carries_the_input_forms_intact() -> None:
    forms = {EVIL: [{"name": "it's <b>", "type": "string", "shape": [-1], "kind": "text"}]}
    page = render("docs.html", root="", inputs=forms)
    assert "<b>" not in page and "<script>" not in page
    main = next(a for t, a in _tags(page) if t == "main")
    assert json.loads(main["data-inputs"] or "") == forms
    scripts = [a for t, a in _tags(page) if t == "script"]
    assert scripts == [{"src": "/static/docs.js", "defer": None}]


def test_a_missing_value_is_an_error_not_an_empty_string() -> None:
    with pytest.raises((jinja2.UndefinedError, TypeError)):  # tojson of an undefined value: TypeError
        render("docs.html", root="")
    with pytest.raises(jinja2.UndefinedError):
        render("landing.html", root="", version="1", models=[])


def test_static_files_are_the_shipped_scripts_styles_and_icon() -> None:
    files = _static_files()
    assert set(files) == {"docs.js", "mlport.css", "favicon.svg"}
    assert files["docs.js"][1].startswith("text/javascript")
