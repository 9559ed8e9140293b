"""What every hub client command shares: the saved login, calls to the hub, output, formatting, errors.

Exit codes: 0 done; 1 the hub refused or failed the call (the message says why); 2 wrong usage; 3 the hub
cannot be reached, or no valid login.  ``--output json`` prints the hub's JSON answer (raw values) for scripts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from mlport.client._tls import http_verify, tls_hint

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "Fail",
    "add_parser",
    "call",
    "forget",
    "guard",
    "human_size",
    "iso_time",
    "print_out",
    "save",
    "saved",
    "token_of",
    "url_of",
]

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
DEFAULT_URL = "http://127.0.0.1:8090"
#: Default wait for one answer of the hub, seconds (uploads wait longer: the hub reads the model's signature).
DEFAULT_TIMEOUT_S = 30.0
UPLOAD_TIMEOUT_S = 300.0
#: An unreachable hub is reported after this long, whatever the answer timeout.
CONNECT_TIMEOUT_S = 5.0


class Fail(Exception):
    """A command failed: ``message`` goes to stderr, ``code`` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- the saved login
def _config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mlport" / "hub.json"


def saved() -> dict[str, str]:
    path = _config_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def save(url: str, token: str) -> Path:
    path = _config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token}, f)
    os.chmod(path, 0o600)
    return path


def forget() -> Path | None:
    """Delete the saved login; its path, or None when there was none."""
    path = _config_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path


def url_of(args: argparse.Namespace) -> str:
    url: str = args.hub or os.environ.get("MLPORT_HUB_URL") or saved().get("url") or DEFAULT_URL
    return url.rstrip("/")


def token_of(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("MLPORT_HUB_TOKEN") or saved().get("token")
    if not token:
        raise Fail("not logged in: run `mlport login` or set MLPORT_HUB_TOKEN", EXIT_UNREACHABLE)
    return token


# --------------------------------------------------------------------------- calls
def _timeout(args: argparse.Namespace, default: float) -> httpx.Timeout:
    wait = args.timeout if args.timeout is not None else default
    return httpx.Timeout(wait, connect=min(wait, CONNECT_TIMEOUT_S))


def call(args: argparse.Namespace, method: str, path: str, *, auth: bool = True, upload: bool = False,
         **kw: Any) -> Any:
    """The hub's JSON answer to one call; :class:`Fail` with the hub's message when it refuses."""
    resp = request(args, method, path, auth=auth, upload=upload, **kw)
    if resp.status_code == 204 or not resp.content:
        return {}
    return resp.json()


def request(args: argparse.Namespace, method: str, path: str, *, auth: bool = True, upload: bool = False,
            stream_to: Callable[[httpx.Response], None] | None = None, **kw: Any) -> httpx.Response:
    headers = dict(kw.pop("headers", {}))
    if auth:
        headers["authorization"] = f"Bearer {token_of(args)}"
    timeout = _timeout(args, UPLOAD_TIMEOUT_S if upload else DEFAULT_TIMEOUT_S)
    try:
        verify = http_verify(True, getattr(args, "ca", None), None)
        with httpx.Client(base_url=url_of(args), timeout=timeout, verify=verify) as client:
            if stream_to is None:
                resp = client.request(method, path, headers=headers, **kw)
            else:
                with client.stream(method, path, headers=headers, **kw) as resp:
                    if resp.status_code < 400:
                        stream_to(resp)
                        return resp
                    resp.read()
    except httpx.TimeoutException:
        raise Fail(f"the hub at {url_of(args)} did not answer within {timeout.read:g} s (--timeout to wait "
                   "longer)", EXIT_UNREACHABLE) from None
    except httpx.HTTPError as exc:
        hint = tls_hint(f"{exc} {exc.__cause__ or exc.__context__ or ''}", url_of(args))
        raise Fail(f"cannot reach the hub at {url_of(args)}: {exc}{hint}", EXIT_UNREACHABLE) from None
    if resp.status_code >= 400:
        try:
            message = resp.json().get("error", resp.text)
        except ValueError:
            message = resp.text[:500]
        code = EXIT_UNREACHABLE if resp.status_code == 401 else EXIT_REFUSED
        raise Fail(f"{resp.status_code}: {message}", code)
    return resp


# --------------------------------------------------------------------------- output
def print_out(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.output == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(text)


def iso_time(epoch: Any) -> str:
    """``2026-12-04T19:32:28Z`` (UTC, seconds) for an epoch time; '-' when there is none."""
    if not isinstance(epoch, int | float) or isinstance(epoch, bool):
        return "-"
    return dt.datetime.fromtimestamp(float(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_size(size: Any) -> str:
    """``1.5 MiB`` for a byte count."""
    if not isinstance(size, int) or isinstance(size, bool):
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- commands
def guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except Fail as exc:
            print(f"mlport: {exc}", file=sys.stderr)
            return exc.code

    return run


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--hub", help=f"hub URL (default: the saved login, MLPORT_HUB_URL, or {DEFAULT_URL})")
    common.add_argument("--token", help="bearer token (default: MLPORT_HUB_TOKEN or the saved login)")
    common.add_argument("--ca", metavar="PEM", help="CA certificate to verify an https:// hub with "
                                                    "(default: MLPORT_CA, else the system's CAs)")
    common.add_argument("--output", "-o", choices=["text", "json"], default="text",
                        help="text for people (default), json for scripts (the hub's answer, raw values)")
    common.add_argument("--timeout", type=float, default=None,
                        help=f"seconds to wait for the hub's answer (default {DEFAULT_TIMEOUT_S:g}; uploads "
                             f"{UPLOAD_TIMEOUT_S:g}); an unreachable hub is reported after {CONNECT_TIMEOUT_S:g} s")
    return common


_COMMON = _common()


def add_parser(sub: Any, name: str, help_text: str, examples: str,
               fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A hub client command with the common options, its examples as the help's epilog, and errors handled."""
    p: argparse.ArgumentParser = sub.add_parser(
        name, parents=[_COMMON], help=help_text, description=help_text[:1].upper() + help_text[1:] + ".",
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=guard(fn))
    return p
