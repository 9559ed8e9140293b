"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubutil import HubProc, start_hub


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProc]:
    """A hub with a local artifact folder, stopped after the test (modules may define their own)."""
    proc = start_hub(tmp_path / "hub")
    try:
        yield proc
    finally:
        proc.stop()
