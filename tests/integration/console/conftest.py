"""A real hub (with real replicas) and Debian's chromium driven by Playwright; screenshots of every page.

The browser is the system's ``/usr/bin/chromium`` (``MLPORT_CHROMIUM`` to use another): Playwright never
downloads one.  Screenshots go to ``MLPORT_CONSOLE_SCREENSHOTS`` when set, else to a folder of the test run's
temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.hubutil import HubProc, start_hub

CHROMIUM = os.environ.get("MLPORT_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Playwright and its browser for one test module.  Not pytest-playwright's session-wide fixtures: Playwright's
    sync API keeps an event loop running in the main thread until it stops, which would break every later test
    that calls ``asyncio.run``."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) and page for each test."""
    context = chromium.new_context(accept_downloads=True)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProc]:
    proc = start_hub(tmp_path_factory.mktemp("console-hub"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("MLPORT_CONSOLE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("console-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def sign_in(page: Page, url: str, user: str, password: str) -> None:
    page.goto(url + "/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/ui/")
