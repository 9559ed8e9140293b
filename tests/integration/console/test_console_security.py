"""The console's browser security against a real hub: sessions, CSRF, Host and Origin checks, the CSP, sign-out,
and a viewer who sees no control that changes anything (and is refused by the API when they try)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import free_port, stop_process
from tests.hubutil import ADMIN_PASSWORD, HubProc, wait_for
from tests.integration.console.conftest import shot, sign_in

VIEWER_PASSWORD = "viewer-password-for-tests"


def _signed_in(hub: HubProc, user: str = "admin", password: str = ADMIN_PASSWORD) -> tuple[httpx.Client, str]:
    """A client holding a session cookie (as a browser would) and the CSRF token of its pages."""
    client = httpx.Client(base_url=hub.url, timeout=30)
    r = client.post("/ui/login", data={"username": user, "password": password})
    assert r.status_code == 303 and r.headers["location"] == "/ui/", r.text
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # no TLS here
    page = client.get("/ui/")
    assert page.status_code == 200
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert match
    return client, match.group(1)


def test_a_session_needs_the_csrf_token_to_change_anything(hub: HubProc) -> None:
    client, csrf = _signed_in(hub)
    assert client.get("/api/v1/whoami").json()["subject"] == "admin"
    r = client.post("/api/v1/models", json={"name": "no-csrf"})
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    r = client.post("/api/v1/models", json={"name": "no-csrf"}, headers={"x-csrf-token": csrf[:-1] + "x"})
    assert r.status_code == 403
    r = client.post("/api/v1/models", json={"name": "with-csrf"}, headers={"x-csrf-token": csrf})
    assert r.status_code == 201, r.text
    assert client.delete("/api/v1/models/with-csrf").status_code == 403
    assert client.delete("/api/v1/models/with-csrf", headers={"x-csrf-token": csrf}).status_code == 204


def test_wrong_host_or_origin_is_refused(hub: HubProc) -> None:
    client, csrf = _signed_in(hub)
    both = {"x-csrf-token": csrf}
    assert client.get("/api/v1/models", headers={"host": "evil.example"}).status_code == 403
    assert client.get("/ui/", headers={"host": "rebound.example:8090"}).status_code == 403
    r = client.post("/api/v1/models", json={"name": "cross"}, headers={**both, "origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    assert client.post("/api/v1/models", json={"name": "cross"}, headers={**both, "origin": "null"}).status_code == 403
    r = client.post("/api/v1/models", json={"name": "same"}, headers={**both, "origin": hub.url})
    assert r.status_code == 201, r.text
    # the sign-in form too: a cross-site page cannot sign a visitor in
    r = httpx.post(hub.url + "/ui/login", data={"username": "admin", "password": ADMIN_PASSWORD},
                   headers={"origin": "https://evil.example"})
    assert r.status_code == 403
    # scripts with a bearer token and no cookie are not browsers: any name they reach the hub by works
    token = hub.login()
    r = httpx.get(hub.url + "/api/v1/models", headers={"authorization": f"Bearer {token}", "host": "hub.internal"})
    assert r.status_code == 200


def test_console_pages_send_a_strict_content_security_policy(hub: HubProc) -> None:
    client, _ = _signed_in(hub)
    anonymous = httpx.Client(base_url=hub.url, timeout=30)
    for path in ("/ui/", "/ui/deployments", "/ui/admin", "/ui/login", "/docs", "/ui/static/console.js"):
        r = (anonymous if path == "/ui/login" else client).get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "default-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        if path != "/ui/static/console.js":
            assert "<script>" not in r.text and " on" + "click=" not in r.text  # no inline script at all
            # a form sent before the script runs is a POST the guard refuses (no CSRF token): never a GET that
            # would put its fields (a new user's password) in the URL
            forms = re.findall(r"<form [^>]*>", r.text)
            assert all('method="post"' in form for form in forms), forms


def test_signing_out_ends_the_session_and_its_token(hub: HubProc) -> None:
    client, csrf = _signed_in(hub)
    assert client.get("/api/v1/whoami").status_code == 200
    assert client.post("/ui/logout").status_code == 403  # without the token a page elsewhere cannot sign you out
    cookie = client.cookies["mlport_session"]
    r = client.post("/ui/logout", headers={"x-csrf-token": csrf})
    assert r.status_code == 204
    stale = httpx.Client(base_url=hub.url, cookies={"mlport_session": cookie}, timeout=30)
    assert stale.get("/api/v1/whoami").status_code == 401
    assert stale.get("/ui/").status_code == 303
    bad = httpx.post(hub.url + "/ui/login", data={"username": "admin", "password": "wrong-password"})
    assert bad.status_code == 401 and "set-cookie" not in bad.headers
    huge = httpx.post(hub.url + "/ui/login", data={"username": "admin", "password": "x" * 20_000})
    assert huge.status_code == 413 and "set-cookie" not in huge.headers


@pytest.mark.slow
def test_a_viewer_sees_no_control_that_changes_anything(hub: HubProc, page: Page, shots: Path) -> None:
    admin = hub.client(hub.login())
    r = admin.post("/api/v1/users", json={"name": "vera", "password": VIEWER_PASSWORD, "roles": ["viewer"]})
    assert r.status_code == 201, r.text
    admin.post("/api/v1/models", json={"name": "seen", "description": "a model a viewer may read"})
    sign_in(page, hub.url, "vera", VIEWER_PASSWORD)
    expect(page.locator("#models")).to_contain_text("seen")
    shot(page, shots, "08-viewer-models")
    assert page.locator("#create-model").count() == 0
    assert page.locator("header a:text-is('Administration')").count() == 0
    page.goto(hub.url + "/ui/models/seen")
    expect(page.locator("#model-info")).to_contain_text("a model a viewer may read")
    assert page.locator("#upload").count() == 0
    page.goto(hub.url + "/ui/deployments")
    assert page.locator("#create-deployment").count() == 0
    # the server still decides: the viewer's own session, with its CSRF token, is refused
    status = page.evaluate("""async () => {
        const csrf = document.querySelector('meta[name="csrf-token"]').content;
        const r = await fetch('/api/v1/models', {method: 'POST', headers: {'content-type': 'application/json',
            'x-csrf-token': csrf}, body: JSON.stringify({name: 'not-allowed'})});
        return r.status;
    }""")
    assert status == 403
    page.goto(hub.url + "/ui/admin")
    expect(page.locator("#notice")).to_contain_text("admin")
    assert admin.get("/api/v1/models/not-allowed").status_code == 404


def test_the_hub_prints_the_console_url_and_the_first_admins_password(tmp_path: Path) -> None:
    """With no admin password given, `mlport hub` prints where the console is and the generated password, which
    signs in there."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLPORT_HUB_ADMIN_PASSWORD"}
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlport.cli.main", "hub", "--data-dir", str(tmp_path / "hub"),
                                 "--http-port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        pattern = re.compile(rf"console: open (http://127\.0\.0\.1:{port}/) in a browser and sign in as admin with "
                             r"password (\S+)")
        match = wait_for(lambda: pattern.search(log.read_text(errors="replace")), timeout=90, what="the banner")
        url, password = match.group(1), match.group(2)
        r = httpx.post(url + "ui/login", data={"username": "admin", "password": password})
        assert r.status_code == 303 and "mlport_session=" in r.headers["set-cookie"], r.text
    finally:
        stop_process(proc)
