"""Hub client commands for models, versions and deployments: ``mlport models``, ``versions``, ``deploy``,
``promote``, ``rollback``, ``scale``, ``status`` and ``undeploy``, for people and for CI/CD scripts.

Login, users, service accounts and tokens are in :mod:`mlport.cli.hubctl_auth`; the shared parts (saved login,
exit codes, ``--output json``) in :mod:`mlport.cli.hubclient`.
Login is kept in ``~/.config/mlport/hub.json`` (mode 0600); ``MLPORT_HUB_URL`` and ``MLPORT_HUB_TOKEN`` override it.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx

from mlport.cli.hubclient import (
    EXIT_REFUSED,
    EXIT_USAGE,
    Fail,
    add_parser,
    call,
    human_size,
    iso_time,
    print_out,
    request,
)
from mlport.cli.hubctl_auth import add_auth_commands
from mlport.cli.hubctl_deploy import add_deploy_commands
from mlport.cli.hubjobs import add_job_commands, build_version

__all__ = ["add_client_commands"]


# --------------------------------------------------------------------------- models
def _fields(rows: list[tuple[str, Any]]) -> str:
    return "\n".join(f"{key + ':':14} {value}" for key, value in rows)


def _models(args: argparse.Namespace) -> int:
    if args.action == "list":
        data = call(args, "GET", "/api/v1/models")
        lines = [f"{m['name']:24} latest v{m['latest_version'] or '-'}  {iso_time(m['created_at'])}  "
                 f"{m['description']}" for m in data["models"]]
        print_out(args, data, "\n".join(lines) or "no models")
        return 0
    if not args.name:
        raise Fail(f"`mlport models {args.action}` needs a model name", EXIT_USAGE)
    if args.action == "create":
        data = call(args, "POST", "/api/v1/models", json={"name": args.name, "description": args.description or ""})
        print_out(args, data, f"created model {data['name']}")
    elif args.action == "get":
        m = call(args, "GET", f"/api/v1/models/{args.name}")
        print_out(args, m, _fields([
            ("model", m["name"]), ("description", m["description"] or "-"),
            ("latest", f"v{m['latest_version']}" if m["latest_version"] else "-"),
            ("created", f"{iso_time(m['created_at'])} by {m['created_by']}"),
            ("labels", ", ".join(f"{k}={v}" for k, v in (m.get("labels") or {}).items()) or "-"),
            ("deployed by", ", ".join(m.get("deployed_by") or []) or "-")]))
    else:
        if not args.yes:
            _confirm(f"delete model {args.name} and all its versions?")
        call(args, "DELETE", f"/api/v1/models/{args.name}")
        print_out(args, {}, f"deleted model {args.name}")
    return 0


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise Fail(f"{question} Pass --yes to confirm (no terminal to ask on)", EXIT_USAGE)
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise Fail("cancelled", EXIT_REFUSED)


# --------------------------------------------------------------------------- versions
def _tar_folder(folder: Path, tmp: Path) -> Path:
    archive = tmp / f"{folder.name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                raise Fail(f"{path} is a symbolic link: upload real files only", EXIT_REFUSED)
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return archive


def _version_text(v: dict[str, Any]) -> str:
    rows = [("version", f"{v['model']} v{v['version']}"), ("format", v["format"] or "?"),
            ("size", human_size(v["size"])), ("sha256", v["sha256"]),
            ("created", f"{iso_time(v['created_at'])} by {v['created_by']}"), ("source", v["source"]),
            ("description", v["description"] or "-"), ("tags", ", ".join(v["tags"]) or "-")]
    sig = v.get("signature")
    if isinstance(sig, dict):
        for what in ("inputs", "outputs"):
            rows.append((what, ", ".join(f"{t.get('name')} {t.get('datatype')} {t.get('shape')}"
                                        for t in sig.get(what) or [] if isinstance(t, dict))))
    else:
        rows.append(("signature", "unknown"))
    for image in v.get("images") or []:  # newest first: the one deployments pin
        rows.append(("image", f"{image['image']}  {image['digest']}  ({iso_time(image['recorded_at'])} by "
                              f"{image['recorded_by']})"))
    return _fields(rows)


def _upload(args: argparse.Namespace, base: str) -> int:
    if not args.arg:
        raise Fail("`mlport versions upload MODEL PATH` needs a path", EXIT_USAGE)
    path = Path(args.arg)
    if not path.exists():
        raise Fail(f"{path} does not exist", EXIT_REFUSED)
    with tempfile.TemporaryDirectory() as tmp:
        if args.profile:
            from mlport.cli.drift import with_profile

            path = with_profile(path, Path(args.profile), Path(tmp) / "bundle")
        upload = _tar_folder(path, Path(tmp)) if path.is_dir() else path
        params = {"filename": upload.name, "source": path.resolve().name, "description": args.description or "",
                  "tags": args.tags or ""}
        if args.trusted:
            params["trusted"] = "true"
        with upload.open("rb") as f:
            data = call(args, "POST", base, params=params, content=f, upload=True,
                        headers={"content-type": "application/octet-stream"})
    print_out(args, data, f"uploaded {args.model} v{data['version']} ({data['format']}, {human_size(data['size'])}, "
                          f"sha256 {data['sha256'][:12]})")
    if data.get("warning"):
        print(f"mlport: warning: {data['warning']}", file=sys.stderr)
    return 0


def _download(args: argparse.Namespace, base: str) -> int:
    if not args.arg or not args.arg.isdigit():
        raise Fail("`mlport versions download MODEL VERSION` needs a version number", EXIT_USAGE)
    written: list[Path] = []

    def save(resp: httpx.Response) -> None:
        disposition = resp.headers.get("content-disposition", "")
        name = disposition.partition('filename="')[2].rstrip('"') or f"{args.model}-v{args.arg}"
        dest = Path(args.dest) if args.dest else Path(Path(name).name)
        if dest.is_dir():
            dest = dest / Path(name).name
        with dest.open("wb") as f:
            for block in resp.iter_bytes():
                f.write(block)
        written.append(dest)

    request(args, "GET", f"{base}/{args.arg}/artifact", stream_to=save, upload=True)
    size = written[0].stat().st_size
    print_out(args, {"path": str(written[0]), "size": size},
              f"saved {args.model} v{args.arg} to {written[0]} ({human_size(size)})")
    return 0


def _versions(args: argparse.Namespace) -> int:
    base = f"/api/v1/models/{args.model}/versions"
    if args.action == "list":
        data = call(args, "GET", base)
        lines = [f"v{v['version']:<4} {v['format'] or '?':10} {human_size(v['size']):>10}  "
                 f"{iso_time(v['created_at'])}  {v['created_by']:12} {v['source']}  {v['description']}"
                 for v in data["versions"]]
        print_out(args, data, "\n".join(lines) or "no versions")
    elif args.action == "get":
        if not args.arg:
            raise Fail("`mlport versions get MODEL VERSION` needs a version number", EXIT_USAGE)
        data = call(args, "GET", f"{base}/{args.arg}")
        data["images"] = call(args, "GET", f"{base}/{args.arg}/images")["images"]
        print_out(args, data, _version_text(data))
    elif args.action == "register":
        if not args.arg:
            raise Fail("`mlport versions register MODEL KEY` needs a store key", EXIT_USAGE)
        data = call(args, "POST", base, json={"store_key": args.arg, "description": args.description or ""},
                    upload=True)
        print_out(args, data, f"registered {args.model} v{data['version']} ({data['format']})")
        if data.get("warning"):
            print(f"mlport: warning: {data['warning']}", file=sys.stderr)
    elif args.action == "download":
        return _download(args, base)
    elif args.action == "build":
        return build_version(args)
    else:
        return _upload(args, base)
    return 0


def add_client_commands(sub: Any) -> None:
    add_auth_commands(sub)

    p = add_parser(sub, "models", "list, create, get or delete models in the hub", """
mlport models list
mlport models create iris --description "iris classifier"
mlport models get iris
mlport models delete iris --yes""", _models)
    p.add_argument("action", choices=["list", "create", "get", "delete"], help="what to do")
    p.add_argument("name", nargs="?", help="model name (all actions but list)")
    p.add_argument("--description", help="create: a line about the model")
    p.add_argument("--yes", "-y", action="store_true", help="delete: do not ask for confirmation")

    p = add_parser(sub, "versions", "upload, register, list, get or download a model's versions", """
mlport versions upload iris ./iris.onnx --tags baseline
mlport versions upload iris ./iris-folder/ --description "with batching"
mlport versions upload iris ./iris.onnx --profile profile.json   # drift watched against it once deployed
mlport versions list iris
mlport versions get iris 2
mlport versions download iris 2 --dest ./restore/
mlport versions register iris models/iris/7/iris.onnx   # an artifact already in the store
mlport versions build iris 2 --tag registry.example.com/iris:2 --wait   # an image, built by the hub""", _versions)
    p.add_argument("action", choices=["list", "upload", "register", "get", "download", "build"],
                   help="what to do")
    p.add_argument("model", help="model name")
    p.add_argument("arg", nargs="?", help="upload: a file or folder; register: a store key; get, download: a "
                                          "version number")
    p.add_argument("--description", help="upload, register: a line about the version")
    p.add_argument("--tags", help="upload: comma-separated tags")
    p.add_argument("--profile", help="upload: a reference profile (mlport profile) sent with the model as its "
                                     "profile.json, for drift and outlier watching")
    p.add_argument("--trusted", action="store_true", help="upload: read the signature of a format that runs code "
                                                          "(pickles, Python; admin only)")
    p.add_argument("--dest", help="download: file or folder to write to (default: the artifact's name here)")
    p.add_argument("--tag", help="build: the image reference to build and push, e.g. registry.example.com/iris:2")
    p.add_argument("--no-push", action="store_true", help="build: keep the image on the hub's machine")
    p.add_argument("--tls-verify", action=argparse.BooleanOptionalAction, default=True,
                   help="build: verify the registry's TLS certificate (default: yes)")
    p.add_argument("--wait", action="store_true", help="build: wait for the job and exit non-zero if it fails")
    p.add_argument("--wait-timeout", type=float, default=3600.0,
                   help="build --wait: give up waiting after this many seconds (default 3600)")

    add_deploy_commands(sub)
    add_job_commands(sub)
