"""``mlport score`` starts without importing the other commands' modules (the hub's client, the settings)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from mlport.cli.main import main
try:
    main(["score", "--help"])
except SystemExit:
    pass
heavy = sorted(m for m in ("mlport.settings", "pydantic_settings", "httpx", "grpc", "rich", "uvicorn", "starlette",
                           "mlport.cli.hubclient", "PIL") if m in sys.modules)
print("HEAVY", heavy, file=sys.stderr)
"""


def test_score_imports_only_what_it_needs() -> None:
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: mlport score" in proc.stdout
    assert "HEAVY []" in proc.stderr, proc.stderr


def test_the_other_commands_still_parse() -> None:
    proc = subprocess.run([sys.executable, "-m", "mlport.cli.main", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "score" in proc.stdout and "serve" in proc.stdout, proc.stderr
