"""Hub client commands: ``mlport login``, ``models``, ``versions``, ``deploy``, ``promote``, ``rollback``,
``status`` and friends, for people and for CI/CD scripts.

Exit codes: 0 done; 1 the hub refused or failed the call (the message says why); 3 the hub cannot be
reached, or no valid login.  ``--output json`` prints the hub's JSON answer for scripts.
Login is kept in ``~/.config/mlport/hub.json`` (mode 0600); ``MLPORT_HUB_URL`` and ``MLPORT_HUB_TOKEN`` override it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx

__all__ = ["add_client_commands"]

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3
DEFAULT_URL = "http://127.0.0.1:8090"


class _Fail(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mlport" / "hub.json"


def _saved() -> dict[str, str]:
    path = _config_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def _save(url: str, token: str) -> Path:
    path = _config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token}, f)
    os.chmod(path, 0o600)
    return path


def _url(args: argparse.Namespace) -> str:
    url: str = args.hub or os.environ.get("MLPORT_HUB_URL") or _saved().get("url") or DEFAULT_URL
    return url.rstrip("/")


def _token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("MLPORT_HUB_TOKEN") or _saved().get("token")
    if not token:
        raise _Fail("not logged in: run `mlport login` or set MLPORT_HUB_TOKEN", EXIT_UNREACHABLE)
    return token


def _call(args: argparse.Namespace, method: str, path: str, *, auth: bool = True, **kw: Any) -> Any:
    headers = dict(kw.pop("headers", {}))
    if auth:
        headers["authorization"] = f"Bearer {_token(args)}"
    try:
        with httpx.Client(base_url=_url(args), timeout=args.timeout) as client:
            resp = client.request(method, path, headers=headers, **kw)
    except httpx.HTTPError as exc:
        raise _Fail(f"cannot reach the hub at {_url(args)}: {exc}", EXIT_UNREACHABLE) from None
    if resp.status_code >= 400:
        try:
            message = resp.json().get("error", resp.text)
        except ValueError:
            message = resp.text[:500]
        code = EXIT_UNREACHABLE if resp.status_code == 401 else EXIT_REFUSED
        raise _Fail(f"{resp.status_code}: {message}", code)
    if resp.status_code == 204 or not resp.content:
        return {}
    return resp.json()


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.output == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(text)


# --------------------------------------------------------------------------- commands
def _login(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = os.environ.get("MLPORT_HUB_PASSWORD") or getpass.getpass(f"password for {args.username}: ")
    data = _call(args, "POST", "/auth/token", auth=False, json={"username": args.username, "password": password})
    path = _save(_url(args), data["access_token"])
    _print(args, {k: v for k, v in data.items() if k != "access_token"},
           f"logged in to {_url(args)} as {args.username} ({', '.join(data.get('roles', []))}); token in {path}, "
           f"valid {data['expires_in']} s")
    return 0


def _models(args: argparse.Namespace) -> int:
    if args.action == "list":
        data = _call(args, "GET", "/api/v1/models")
        lines = [f"{m['name']:24} latest v{m['latest_version'] or '-'}  {m['description']}" for m in data["models"]]
        _print(args, data, "\n".join(lines) or "no models")
    elif not args.name:
        raise _Fail(f"`mlport models {args.action}` needs a model name", 2)
    elif args.action == "create":
        data = _call(args, "POST", "/api/v1/models", json={"name": args.name, "description": args.description or ""})
        _print(args, data, f"created model {data['name']}")
    elif args.action == "get":
        data = _call(args, "GET", f"/api/v1/models/{args.name}")
        _print(args, data, json.dumps(data, indent=2))
    else:
        data = _call(args, "DELETE", f"/api/v1/models/{args.name}")
        _print(args, data, f"deleted model {args.name}")
    return 0


def _tar_folder(folder: Path, tmp: Path) -> Path:
    archive = tmp / f"{folder.name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                raise _Fail(f"{path} is a symbolic link: upload real files only", EXIT_REFUSED)
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return archive


def _versions(args: argparse.Namespace) -> int:
    base = f"/api/v1/models/{args.model}/versions"
    if args.action == "list":
        data = _call(args, "GET", base)
        lines = [f"v{v['version']:<4} {v['format'] or '?':10} {v['size']:>12} B  sha256 {v['sha256'][:12]}  "
                 f"{v['created_by']}  {v['description']}" for v in data["versions"]]
        _print(args, data, "\n".join(lines) or "no versions")
    elif args.action == "get":
        data = _call(args, "GET", f"{base}/{args.arg}")
        _print(args, data, json.dumps(data, indent=2))
    elif args.action == "register":
        data = _call(args, "POST", base, json={"store_key": args.arg, "description": args.description or ""})
        _print(args, data, f"registered {args.model} v{data['version']} ({data['format']})")
    else:
        if not args.arg:
            raise _Fail("`mlport versions upload MODEL PATH` needs a path", 2)
        path = Path(args.arg)
        if not path.exists():
            raise _Fail(f"{path} does not exist", EXIT_REFUSED)
        with tempfile.TemporaryDirectory() as tmp:
            upload = _tar_folder(path, Path(tmp)) if path.is_dir() else path
            params = {"filename": upload.name, "description": args.description or "", "tags": args.tags or ""}
            if args.trusted:
                params["trusted"] = "true"
            with upload.open("rb") as f:
                data = _call(args, "POST", base, params=params, content=f,
                             headers={"content-type": "application/octet-stream"})
        _print(args, data, f"uploaded {args.model} v{data['version']} ({data['format']}, {data['size']} bytes, "
                           f"sha256 {data['sha256'][:12]})")
    return 0


def _policy_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {"min_replicas": args.min_replicas, "max_replicas": args.max_replicas,
              "target_inflight": args.target_inflight}
    out: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    if args.scale_to_zero:
        out["scale_to_zero"] = True
    return out


def _deploy(args: argparse.Namespace) -> int:
    name = args.name
    experiments = [s for s in ("canary", "ab", "shadow") if getattr(args, s) is not None]
    if len(experiments) > 1:
        raise _Fail("use one of --canary, --ab and --shadow", 2)
    if experiments:
        strategy = experiments[0]
        if args.version is None:
            raise _Fail(f"--{strategy} needs --version", 2)
        body: dict[str, Any] = {"version": args.version}
        if strategy != "shadow":
            body["percent"] = getattr(args, strategy)
        if args.sticky_header:
            body["sticky_header"] = args.sticky_header
        data = _call(args, "POST", f"/api/v1/deployments/{name}/{strategy}", json=body)
    else:
        if not args.model:
            raise _Fail("`mlport deploy NAME` needs --model", 2)
        body = {"name": name, "model": args.model, **_policy_fields(args)}
        if args.version is not None:
            body["version"] = args.version
        if args.trusted:
            body["trusted"] = True
        data = _call(args, "POST", "/api/v1/deployments", json=body)
    _print(args, data, _describe_deployment(data))
    return 0


def _describe_deployment(d: dict[str, Any]) -> str:
    t = d["target"]
    if t["strategy"] == "single":
        what = f"v{t['primary']}"
    elif t["strategy"] == "shadow":
        what = f"v{t['primary']} (shadow v{t['candidate']})"
    else:
        what = f"v{t['primary']} + {t['strategy']} v{t['candidate']} at {t['percent']:g}%"
    replicas = d.get("replicas") or {}
    rows = replicas.get("versions") if isinstance(replicas, dict) else None
    counts = ", ".join(f"v{v.get('version')}: {v.get('ready', 0)}/{v.get('desired', 0)} ready"
                       for v in rows if isinstance(v, dict)) if isinstance(rows, list) else ""
    return f"{d['name']}: {d['model']} {what}" + (f"  [{counts}]" if counts else "")


def _simple(action: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        data = _call(args, "POST", f"/api/v1/deployments/{args.name}/{action}")
        _print(args, data, _describe_deployment(data))
        return 0

    return run


def _status(args: argparse.Namespace) -> int:
    if not args.name:
        data = _call(args, "GET", "/api/v1/deployments")
        _print(args, data, "\n".join(_describe_deployment(d) for d in data["deployments"]) or "no deployments")
        return 0
    data = _call(args, "GET", f"/api/v1/deployments/{args.name}")
    if args.history:
        data["history"] = _call(args, "GET", f"/api/v1/deployments/{args.name}/history")["history"]
    if data["target"]["strategy"] == "shadow":
        data["shadow"] = _call(args, "GET", f"/api/v1/deployments/{args.name}/shadow")
    lines = [_describe_deployment(data)]
    if "shadow" in data:
        s = data["shadow"]
        rate = s.get("agreement_rate")
        lines.append(f"shadow: {s.get('requests', 0)} requests compared, agreement "
                     f"{'-' if rate is None else f'{rate:.1%}'}")
    for entry in data.get("history", []):
        lines.append(f"  #{entry['id']} {entry['action']} by {entry['by']}")
    _print(args, data, "\n".join(lines))
    return 0


def _undeploy(args: argparse.Namespace) -> int:
    _call(args, "DELETE", f"/api/v1/deployments/{args.name}")
    _print(args, {}, f"deleted deployment {args.name}")
    return 0


def _guard(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            code: int = fn(args)
        except _Fail as exc:
            print(f"mlport: {exc}", file=sys.stderr)
            return exc.code
        return code

    return run


def common_options() -> argparse.ArgumentParser:
    """The options every hub client command takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--hub", help=f"hub URL (default: the saved login, MLPORT_HUB_URL, or {DEFAULT_URL})")
    common.add_argument("--token", help="bearer token (default: the saved login or MLPORT_HUB_TOKEN)")
    common.add_argument("--output", "-o", choices=["text", "json"], default="text")
    common.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the hub (default 600)")
    return common


def add_client_commands(sub: Any) -> None:
    common = common_options()

    p = sub.add_parser("login", parents=[common], help="log in to a hub and keep the token")
    p.add_argument("--username", "-u", default="admin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=_guard(_login))

    p = sub.add_parser("models", parents=[common], help="list, create, show or delete models in the hub")
    p.add_argument("action", choices=["list", "create", "get", "delete"])
    p.add_argument("name", nargs="?")
    p.add_argument("--description")
    p.set_defaults(func=_guard(_models))

    p = sub.add_parser("versions", parents=[common], help="upload, register, list or show a model's versions")
    p.add_argument("action", choices=["list", "upload", "register", "get"])
    p.add_argument("model")
    p.add_argument("arg", nargs="?", help="upload: a file or folder; register: a store key; get: a version number")
    p.add_argument("--description")
    p.add_argument("--tags", help="comma-separated tags")
    p.add_argument("--trusted", action="store_true", help="read the signature of a format that runs code (admin)")
    p.set_defaults(func=_guard(_versions))

    p = sub.add_parser("deploy", parents=[common], help="deploy a model version, or start a canary/A-B/shadow")
    p.add_argument("name", help="deployment name")
    p.add_argument("--model", "-m")
    p.add_argument("--version", "-v", type=int, help="model version (default: the latest)")
    p.add_argument("--canary", type=float, metavar="PERCENT", help="send PERCENT of traffic to --version")
    p.add_argument("--ab", type=float, metavar="PERCENT", help="A/B split: PERCENT to --version, sticky by a header")
    p.add_argument("--shadow", action="store_const", const=0.0, help="copy traffic to --version and compare")
    p.add_argument("--sticky-header", help="header whose value pins a caller to one version (default for A/B: "
                                           "x-routing-key)")
    p.add_argument("--min-replicas", type=int)
    p.add_argument("--max-replicas", type=int)
    p.add_argument("--target-inflight", type=float, help="in-flight requests per replica to scale at")
    p.add_argument("--scale-to-zero", action="store_true")
    p.add_argument("--trusted", action="store_true", help="let the model run code (pickles, Python; admin only)")
    p.set_defaults(func=_guard(_deploy))

    for action, text in (("promote", "make the candidate version serve all traffic"),
                         ("rollback", "end the experiment, or go back to the previous version")):
        p = sub.add_parser(action, parents=[common], help=text)
        p.add_argument("name")
        p.set_defaults(func=_guard(_simple(action)))

    p = sub.add_parser("status", parents=[common], help="show deployments (all, or one with --history)")
    p.add_argument("name", nargs="?")
    p.add_argument("--history", action="store_true")
    p.set_defaults(func=_guard(_status))

    p = sub.add_parser("undeploy", parents=[common], help="delete a deployment and stop its replicas")
    p.add_argument("name")
    p.set_defaults(func=_guard(_undeploy))
