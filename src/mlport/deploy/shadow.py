"""Shadow comparison: how often a shadow version answers as the live version does.

The gateway sends a copy of each request of a shadow deployment to the shadow version, after the live answer,
and hands both answers to :meth:`ShadowRecorder.record`.  Two answers agree when both are 2xx and carry the
same outputs: for the Open Inference Protocol the ``outputs`` compared by name (shape, datatype and data); for
TF Serving the ``predictions`` (or the columnar ``outputs``); for any other JSON the whole document.  Numbers
are equal within a relative tolerance of 1e-5 plus an absolute one of 1e-6.  Bodies that are not JSON (the
binary form of the Open Inference Protocol) must be equal byte for byte.

Counts, latency sums and the last disagreements are kept in the table ``deploy_shadow`` (one row per
deployment, for one pair of versions: a record for another pair starts the row afresh).  Latency percentiles
come from the last :data:`RESERVOIR` samples kept in memory.  Counts are written behind, at most every
:data:`FLUSH_INTERVAL_S` per deployment, and whenever a summary is read; call :meth:`ShadowRecorder.flush`
before the process ends.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from mlport.core.sqlitedb import Database

__all__ = [
    "ATOL",
    "FLUSH_INTERVAL_S",
    "MAX_RECENT",
    "RESERVOIR",
    "RTOL",
    "SHOWN_CHARS",
    "Reply",
    "ShadowRecorder",
    "Verdict",
    "compare_replies",
]

#: Relative and absolute tolerance of numbers compared.
RTOL = 1e-5
ATOL = 1e-6
#: Disagreements kept per deployment (the newest).
MAX_RECENT = 20
#: Latency samples kept in memory per deployment for the percentiles.
RESERVOIR = 1000
#: Counts are written to the database at most this often per deployment (and on summary/flush).
FLUSH_INTERVAL_S = 1.0
#: Characters of each body kept with a disagreement.
SHOWN_CHARS = 512
_MAX_REASON = 300
#: Lists at least this long that hold numbers only are compared with numpy.
_VECTOR_MIN = 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deploy_shadow (
    deployment TEXT PRIMARY KEY,
    primary_version INTEGER NOT NULL,
    shadow_version INTEGER NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    agreed INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    live_latency_s REAL NOT NULL DEFAULT 0,
    shadow_latency_s REAL NOT NULL DEFAULT 0,
    recent TEXT NOT NULL DEFAULT '[]',
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


@dataclass
class Reply:
    """One answer of a replica (or the gateway's own error answer when none came)."""

    status: int
    body: bytes
    content_type: str
    latency_s: float


@dataclass(frozen=True)
class Verdict:
    agree: bool
    #: Why the answers disagree ('' when they agree).
    reason: str = ""


def _ok(status: int) -> bool:
    return 200 <= status < 300


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def compare_replies(live: Reply, copy: Reply) -> Verdict:
    """Whether the shadow's answer ``copy`` agrees with the ``live`` one (see the module's description)."""
    if not (_ok(live.status) and _ok(copy.status)):
        return Verdict(False, f"status {live.status} (live) vs {copy.status} (shadow)")
    media_live, media_copy = _media(live.content_type), _media(copy.content_type)
    if media_live != media_copy:
        return Verdict(False, f"content type {media_live!r} (live) vs {media_copy!r} (shadow)")
    if _is_json(media_live):
        try:
            doc_live, doc_copy = orjson.loads(live.body), orjson.loads(copy.body)
        except orjson.JSONDecodeError:
            pass  # compared as bytes below
        else:
            reason = _compare_documents(doc_live, doc_copy)
            return Verdict(reason is None, reason or "")
    if live.body == copy.body:
        return Verdict(True)
    return Verdict(False, f"bodies differ ({len(live.body)} vs {len(copy.body)} bytes)")


def _oip_outputs(doc: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The OIP outputs by name, or ``None`` when ``doc`` is not an OIP infer response."""
    outputs = doc.get("outputs")
    if not isinstance(outputs, list):
        return None
    named: dict[str, dict[str, Any]] = {}
    for out in outputs:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            return None
        named[out["name"]] = out
    return named


def _compare_documents(live: Any, copy: Any) -> str | None:
    """``None`` when the documents agree, else the first difference."""
    if isinstance(live, dict) and isinstance(copy, dict):
        outs_live, outs_copy = _oip_outputs(live), _oip_outputs(copy)
        if outs_live is not None and outs_copy is not None:
            if set(outs_live) != set(outs_copy):
                return f"outputs {sorted(outs_live)} (live) vs {sorted(outs_copy)} (shadow)"
            for name in sorted(outs_live):
                a, b = outs_live[name], outs_copy[name]
                for key in ("datatype", "shape", "data"):
                    reason = _compare_values(a.get(key), b.get(key), f"outputs[{name}].{key}")
                    if reason is not None:
                        return reason
            return None
        for key in ("predictions", "outputs"):  # TF Serving, row and columnar
            if key in live or key in copy:
                return _compare_values(live.get(key), copy.get(key), key)
    return _compare_values(live, copy, "$")


def _is_number(value: object) -> bool:
    return type(value) is float or type(value) is int  # bool is not a number here


def _close(a: float, b: float) -> bool:
    if a == b:
        return True
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return abs(a - b) <= ATOL + RTOL * max(abs(a), abs(b))


def _vectors_close(a: list[Any], b: list[Any]) -> int | None:
    """Index of the first pair not within tolerance (``-1`` when all are), ``None`` when not plain numbers."""
    if not (all(_is_number(v) for v in a) and all(_is_number(v) for v in b)):
        return None
    try:
        x = np.asarray(a, dtype=np.float64)
        y = np.asarray(b, dtype=np.float64)
    except (OverflowError, ValueError):
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        ok = (x == y) | (np.abs(x - y) <= ATOL + RTOL * np.maximum(np.abs(x), np.abs(y))) | (np.isnan(x) & np.isnan(y))
    if bool(ok.all()):
        return -1
    return int(np.argmin(ok))


def _compare_values(live: Any, copy: Any, where: str) -> str | None:
    """Deep comparison without recursion (documents may nest deeply)."""
    stack: list[tuple[Any, Any, str]] = [(live, copy, where)]
    while stack:
        a, b, at = stack.pop()
        if _is_number(a) and _is_number(b):
            if not _close(a, b):
                return f"{at}: {a!r} (live) vs {b!r} (shadow)"
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                return f"{at}: {len(a)} (live) vs {len(b)} (shadow) items"
            if len(a) >= _VECTOR_MIN:
                first = _vectors_close(a, b)
                if first is not None:
                    if first >= 0:
                        return f"{at}[{first}]: {a[first]!r} (live) vs {b[first]!r} (shadow)"
                    continue
            stack.extend((x, y, f"{at}[{i}]") for i, (x, y) in reversed(list(enumerate(zip(a, b, strict=True)))))
        elif isinstance(a, dict) and isinstance(b, dict):
            if set(a) != set(b):
                return f"{at}: keys {sorted(a)} (live) vs {sorted(b)} (shadow)"
            stack.extend((a[k], b[k], f"{at}.{k}") for k in sorted(a, reverse=True))
        elif type(a) is not type(b) or a != b:
            return f"{at}: {_short(a)} (live) vs {_short(b)} (shadow)"
    return None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _shown(body: bytes) -> str:
    text = body[: SHOWN_CHARS * 4].decode("utf-8", "replace")
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def _percentile(sorted_ms: list[float], q: float) -> float:
    rank = max(1, math.ceil(q * len(sorted_ms)))
    return sorted_ms[rank - 1]


def _latency(total_s: float, count: int, samples: list[float]) -> dict[str, float | None]:
    ms = sorted(s * 1000.0 for s in samples)
    return {
        "mean": total_s * 1000.0 / count if count else None,
        "p50": _percentile(ms, 0.50) if ms else None,
        "p95": _percentile(ms, 0.95) if ms else None,
    }


@dataclass
class _Tally:
    """The current pair of versions of one deployment: counts not written yet, and the latency samples."""

    primary: int
    shadow: int
    requests: int = 0
    agreed: int = 0
    errors: int = 0
    dropped: int = 0
    live_s: float = 0.0
    shadow_s: float = 0.0
    recent: list[dict[str, Any]] = field(default_factory=list)
    flushed_at: float = -math.inf
    live: deque[float] = field(default_factory=lambda: deque(maxlen=RESERVOIR))
    shadow_samples: deque[float] = field(default_factory=lambda: deque(maxlen=RESERVOIR))

    def pending(self) -> bool:
        return bool(self.requests or self.dropped or self.recent)


class ShadowRecorder:
    """Agreement counts and latencies of shadow deployments.  Thread-safe (the gateway records from threads).

    Counts are written to the database at most every :data:`FLUSH_INTERVAL_S` per deployment (and by
    :meth:`summary`, :meth:`flush`), so a busy shadow deployment does not write once per request.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        db.migrate(_SCHEMA)
        self._lock = threading.Lock()
        self._tallies: dict[str, _Tally] = {}
        #: copies dropped, by (deployment, primary, shadow): counted without the main lock (the event loop does)
        self._drop_lock = threading.Lock()
        self._dropped: dict[tuple[str, int, int], int] = {}

    # -- writing -------------------------------------------------------------------------------------------

    def record(self, deployment: str, primary: int, shadow: int, live: Reply, copy: Reply) -> None:
        """Compare one pair of answers and count it.  A pair of versions other than the deployment's last one
        starts its counts afresh."""
        verdict = compare_replies(live, copy)
        with self._lock:
            self._merge_drops()
            tally = self._tally(deployment, primary, shadow)
            tally.requests += 1
            tally.agreed += int(verdict.agree)
            tally.errors += int(not _ok(copy.status))
            tally.live_s += max(live.latency_s, 0.0)
            tally.shadow_s += max(copy.latency_s, 0.0)
            tally.live.append(max(live.latency_s, 0.0))
            tally.shadow_samples.append(max(copy.latency_s, 0.0))
            if not verdict.agree:
                tally.recent.append({
                    "at": time.time(), "reason": verdict.reason[:_MAX_REASON],
                    "live_status": live.status, "shadow_status": copy.status,
                    "live_body": _shown(live.body), "shadow_body": _shown(copy.body),
                })
                del tally.recent[:-MAX_RECENT]
            if time.monotonic() - tally.flushed_at >= FLUSH_INTERVAL_S:
                self._flush(deployment, tally)

    def record_dropped(self, deployment: str, primary: int, shadow: int) -> None:
        """Count a copy not sent because too many were pending (cheap: no database work)."""
        with self._drop_lock:
            key = (deployment, primary, shadow)
            self._dropped[key] = self._dropped.get(key, 0) + 1

    def flush(self) -> None:
        """Write every count not written yet (call it before the process ends)."""
        with self._lock:
            self._merge_drops()
            for deployment, tally in self._tallies.items():
                if tally.pending():
                    self._flush(deployment, tally)

    def reset(self, deployment: str) -> None:
        """Forget everything recorded for ``deployment``."""
        with self._lock:
            self._merge_drops()
            self._tallies.pop(deployment, None)
            self._db.changes("DELETE FROM deploy_shadow WHERE deployment = ?", (deployment,))

    def _merge_drops(self) -> None:
        with self._drop_lock:
            pending, self._dropped = self._dropped, {}
        for (deployment, primary, shadow), n in pending.items():
            self._tally(deployment, primary, shadow).dropped += n

    def _tally(self, deployment: str, primary: int, shadow: int) -> _Tally:
        tally = self._tallies.get(deployment)
        if tally is None or (tally.primary, tally.shadow) != (primary, shadow):
            if tally is not None and tally.pending():
                self._flush(deployment, tally)
            tally = self._tallies[deployment] = _Tally(primary, shadow)
        return tally

    def _flush(self, deployment: str, tally: _Tally) -> None:
        """Add the tally's counts to the row of ``deployment`` (started afresh for another pair of versions)."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT primary_version, shadow_version, recent FROM deploy_shadow "
                               "WHERE deployment = ?", (deployment,)).fetchone()
            now = time.time()
            recent: Any = []
            if row is not None and (row["primary_version"], row["shadow_version"]) == (tally.primary, tally.shadow):
                recent = orjson.loads(row["recent"])
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO deploy_shadow (deployment, primary_version, shadow_version, "
                    "started_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                    (deployment, tally.primary, tally.shadow, now, now))
            recent = [*(recent if isinstance(recent, list) else []), *tally.recent][-MAX_RECENT:]
            conn.execute(
                "UPDATE deploy_shadow SET requests = requests + ?, agreed = agreed + ?, errors = errors + ?, "
                "dropped = dropped + ?, live_latency_s = live_latency_s + ?, shadow_latency_s = shadow_latency_s + ?, "
                "recent = ?, updated_at = ? WHERE deployment = ?",
                (tally.requests, tally.agreed, tally.errors, tally.dropped, tally.live_s, tally.shadow_s,
                 orjson.dumps(recent).decode(), now, deployment))
        tally.requests = tally.agreed = tally.errors = tally.dropped = 0
        tally.live_s = tally.shadow_s = 0.0
        tally.recent = []
        tally.flushed_at = time.monotonic()

    # -- reading -------------------------------------------------------------------------------------------

    def summary(self, deployment: str) -> dict[str, Any]:
        """Counts, agreement rate (``None`` before the first comparison), latencies (mean over all requests,
        percentiles over the last :data:`RESERVOIR`; ``None`` when unknown) and the recent disagreements,
        newest first."""
        with self._lock:
            self._merge_drops()
            tally = self._tallies.get(deployment)
            if tally is not None and tally.pending():
                self._flush(deployment, tally)
            row = self._db.one("SELECT * FROM deploy_shadow WHERE deployment = ?", (deployment,))
            live_samples = list(tally.live) if tally is not None else []
            shadow_samples = list(tally.shadow_samples) if tally is not None else []
        if row is None:
            return {"primary": None, "shadow": None, "requests": 0, "agreed": 0, "agreement_rate": None,
                    "errors": 0, "dropped": 0, "live_latency_ms": _latency(0.0, 0, []),
                    "shadow_latency_ms": _latency(0.0, 0, []), "recent_disagreements": [], "since": None}
        requests = int(row["requests"])
        recent = orjson.loads(row["recent"])
        return {
            "primary": int(row["primary_version"]),
            "shadow": int(row["shadow_version"]),
            "requests": requests,
            "agreed": int(row["agreed"]),
            "agreement_rate": row["agreed"] / requests if requests else None,
            "errors": int(row["errors"]),
            "dropped": int(row["dropped"]),
            "live_latency_ms": _latency(float(row["live_latency_s"]), requests, live_samples),
            "shadow_latency_ms": _latency(float(row["shadow_latency_s"]), requests, shadow_samples),
            "recent_disagreements": list(reversed(recent)) if isinstance(recent, list) else [],
            "since": float(row["started_at"]),
        }
