"""The bench's reading of wrk's summary: errors split by kind (socket errors and non-2xx answers)."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"

WITH_ERRORS = """\
Running 60s test @ http://127.0.0.1:40123/v2/models/iris/infer
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.31ms    4.02ms  95.11ms   80.12%
    Req/Sec     5.21k   310.77     5.90k    71.00%
  Latency Distribution
     50%   11.87ms
     75%   13.90ms
     90%   16.70ms
     99%    1.20s
  311084 requests in 1.00m, 61.41MB read
  Socket errors: connect 3, read 17, write 2, timeout 41
  Non-2xx or 3xx responses: 129
Requests/sec:   5184.20
Transfer/sec:      1.02MB
"""

CLEAN = """\
Running 1s test @ http://127.0.0.1:40123/v2/models/iris/infer
  1 threads and 8 connections
  Latency Distribution
     50%  850.00us
     99%    2.10ms
  9001 requests in 1.00s, 1.78MB read
Requests/sec:   9000.50
"""


def _bench(name: str) -> ModuleType:
    """A module of bench/ (they import each other by bare name)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def run() -> ModuleType:
    return _bench("run")


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    return _bench("soak")


def test_errors_are_split_by_kind(run: ModuleType) -> None:
    r = run.parse_wrk(WITH_ERRORS)
    assert (r["connect"], r["read"], r["write"], r["timeout"], r["non2xx"]) == (3, 17, 2, 41, 129)
    assert r["errors"] == 3 + 17 + 2 + 41 + 129
    assert (r["requests"], r["rps"], r["p50"], r["p99"]) == (311084, 5184.20, 11.87, 1200.0)


def test_a_clean_run_has_no_errors_of_any_kind(run: ModuleType) -> None:
    r = run.parse_wrk(CLEAN)
    assert r["errors"] == 0
    assert all(r[kind] == 0 for kind in (*run.SOCKET_ERRORS, "non2xx"))
    assert (r["requests"], r["p50"], r["p99"]) == (9001, 0.85, 2.1)


def test_no_summary_reads_as_no_requests(run: ModuleType) -> None:
    r = run.parse_wrk("")
    assert r["requests"] == 0 and r["errors"] == 0 and math.isnan(r["p99"])


def test_the_soak_report_splits_errors_by_kind(run: ModuleType, soak: ModuleType) -> None:
    result = run.parse_wrk(WITH_ERRORS)
    before = {"ok": 10.0, "unavailable": 2.0}
    after = {"ok": 311_000.0, "unavailable": 102.0, "deadline_exceeded": 27.0, "invalid_argument": 0.0}
    table = "\n".join(soak.error_kinds(result, before, after))
    for row in ("| socket: connect | | 3 |", "| socket: read | | 17 |", "| socket: write | | 2 |",
                "| socket: timeout | | 41 |", "| non-2xx answers (wrk) | | 129 |",
                "| server: unavailable | 503 | 100 |", "| server: deadline_exceeded | 504 | 27 |",
                "| (server: ok, not an error) | 200 | 310,990 |"):
        assert row in table
    assert "invalid_argument" not in table


def test_a_clean_soak_report_says_so(run: ModuleType, soak: ModuleType) -> None:
    table = "\n".join(soak.error_kinds(run.parse_wrk(CLEAN), {"ok": 1.0}, {"ok": 9002.0}))
    assert "| server: any outcome other than ok | | 0 |" in table
    assert soak.http_status("not_a_code") == "?"
