"""``mlport build SOURCE --tag REF``: an OCI image serving a model (or the runtime alone), optionally pushed."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["add_build_command"]

_EXAMPLES = """examples:
  mlport build iris.onnx --tag registry.example.com/iris:1 --push
  mlport build ./models --tag localhost/models:2024-06 --builder podman
  mlport build --runtime-only --format onnx --format sklearn --tag registry.example.com/mlport:0.1.0
  mlport build iris.onnx --tag 127.0.0.1:5000/iris:1 --push --no-tls-verify   # a plain-HTTP test registry
  mlport build hub://iris/3 --tag registry.example.com/iris:3 --push   # a hub version; the image is recorded
  mlport build preset:iris --tag registry.example.com/iris-preset:1
"""
_CA_IN_BUILD = "/etc/ssl/certs/mlport-build-ca.pem"


def add_build_command(sub: Any) -> None:
    p = sub.add_parser("build", help="build an OCI image that serves a model (or the runtime alone)",
                       description="Build an image: a shared base layer (Python, mlport and the extras the "
                                   "model's format needs) and a thin model layer at /models.",
                       epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?",
                   help="a model file or folder, a repository folder, preset:NAME, or hub://MODEL/VERSION")
    p.add_argument("--hub", help="hub URL for a hub:// source (default: MLPORT_HUB_URL)")
    p.add_argument("--token", help="bearer token for a hub:// source (default: MLPORT_HUB_TOKEN)")
    p.add_argument("--tag", required=True, help="the image reference to build, e.g. registry.example.com/iris:1")
    p.add_argument("--name", help="the model's name in labels (default: the file or folder name)")
    p.add_argument("--model-version", help="the model version recorded in labels (default 1; a hub:// source's own)")
    p.add_argument("--runtime-only", action="store_true",
                   help="an image of the runtime alone (serve a mounted /models, or pass another path)")
    p.add_argument("--format", dest="formats", action="append", metavar="NAME",
                   help="with --runtime-only: a format whose extra to install (repeatable; default onnx)")
    p.add_argument("--base", help="parent image of the base layer (default: an official slim Python image)")
    p.add_argument("--builder", choices=["buildah", "podman", "docker"], default="buildah",
                   help="the container tool (default buildah)")
    p.add_argument("--rebuild-base", action="store_true", help="rebuild the base layer even when it exists")
    p.add_argument("--ca-bundle", type=Path, help="CA certificates pip trusts during the build (default: $PIP_CERT "
                                                  "when set); mounted for the build only, not in the image")
    p.add_argument("--pip-cache", type=Path, help="a host folder pip may use as its cache during the build")
    p.add_argument("--trusted", action="store_true",
                   help="the model may run code when its signature is read (pickles, Python files)")
    p.add_argument("--push", action="store_true", help="push the image to the registry named in --tag")
    p.add_argument("--tls-verify", action=argparse.BooleanOptionalAction, default=True,
                   help="verify the registry's TLS certificate when pushing (default: yes)")
    p.add_argument("--authfile", type=Path, help="registry credentials (default: the container tools' auth.json)")
    p.add_argument("--output", choices=["text", "json"], default="text", help="how to print the result")
    p.set_defaults(func=_cmd_build)


def _cmd_build(args: argparse.Namespace) -> int:
    from mlport.deploy.packaging import ImageBuilder, check_image_ref
    from mlport.errors import InvalidInput

    check_image_ref(args.tag)
    if args.runtime_only == (args.source is not None):
        raise InvalidInput("give a model SOURCE, or --runtime-only (not both)")
    ca = args.ca_bundle or (Path(os.environ["PIP_CERT"]) if os.environ.get("PIP_CERT") else None)
    mounts: list[tuple[Path, str, str]] = []
    build_args: dict[str, str] = {}
    if ca is not None:
        mounts.append((ca.resolve(), _CA_IN_BUILD, "ro"))
        build_args["PIP_CERT"] = _CA_IN_BUILD
    if args.pip_cache is not None:
        args.pip_cache.mkdir(parents=True, exist_ok=True)
        mounts.append((args.pip_cache.resolve(), "/root/.cache/pip", "rw"))
        build_args["PIP_CACHE"] = "on"
    builder = ImageBuilder(args.builder, mounts=mounts)
    started = time.monotonic()
    hub_version = _resolve_source(args)
    with tempfile.TemporaryDirectory(prefix="mlport-build-") as tmp:
        result = _build(args, builder, build_args, Path(tmp))
        if args.push:
            result["digest"] = builder.push(args.tag, args.tag, tls_verify=args.tls_verify, authfile=args.authfile,
                                            workdir=Path(tmp))
            if hub_version is not None:
                _record_on_hub(args, *hub_version, result["digest"])
                result["recorded"] = f"hub://{hub_version[0]}/{hub_version[1]}"
    result["seconds"] = round(time.monotonic() - started, 1)
    _print(result, args.output)
    return 0


def _resolve_source(args: argparse.Namespace) -> tuple[str, int] | None:
    """Turn ``args.source`` into a local path: a preset is built, a hub version fetched (sha256-verified); returns
    ``(model, version)`` for a hub source."""
    text: str | None = args.source
    if text is None:
        return None
    if text.startswith("preset:"):
        from mlport import presets

        args.source = presets.build(text.split(":", 1)[1])
        return None
    if text.startswith("hub://"):
        from mlport.cli.hubmodel import _parse, fetch_hub_model

        model, version = _parse(text)
        args.source = fetch_hub_model(text, args.hub, args.token)
        args.name = args.name or model
        args.model_version = args.model_version or str(version)
        return model, version
    args.source = Path(text)
    return None


def _record_on_hub(args: argparse.Namespace, model: str, version: int, digest: str) -> None:
    import httpx

    from mlport.errors import MlportError

    url = (args.hub or os.environ.get("MLPORT_HUB_URL") or "http://127.0.0.1:8090").rstrip("/")
    token = args.token or os.environ.get("MLPORT_HUB_TOKEN") or ""
    try:
        resp = httpx.post(f"{url}/api/v1/models/{model}/versions/{version}/images", timeout=60,
                          json={"image": args.tag, "digest": digest}, headers={"authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise MlportError(f"pushed {args.tag}, but the hub could not record it: {exc}") from None
    if resp.status_code >= 400:
        raise MlportError(f"pushed {args.tag}, but the hub refused to record it: {resp.status_code} {resp.text[:300]}")


def _build(args: argparse.Namespace, builder: Any, build_args: dict[str, str], tmp: Path) -> dict[str, Any]:
    from mlport import __version__
    from mlport.deploy.packaging import MODEL_CONTAINERFILE, formats_of, stage_model

    if args.runtime_only:
        formats = formats_of(args.formats or ["onnx"])
        base = _ensure_base(args, builder, build_args, formats, tmp)
        labels = _oci_labels(__version__) | {"dev.mlport.runtime-only": "true",
                                               "dev.mlport.formats": ",".join(formats)}
        (tmp / "runtime").mkdir()
        image = builder.build(tmp / "runtime", "ARG BASE\nFROM ${BASE}\n", args.tag, build_args={"BASE": base},
                              labels=labels)
        return {"image": args.tag, "id": image, "base": base, "formats": list(formats)}
    source: Path = args.source
    name, single, formats, uses = _inspect_source(source, args.name)
    base = _ensure_base(args, builder, build_args, formats, tmp)
    stage_model(source, tmp / "model-context", name, single=single, uses=uses)
    labels = _oci_labels(__version__) | {
        "dev.mlport.model.name": name, "dev.mlport.model.version": str(args.model_version or 1),
        "dev.mlport.model.format": ",".join(formats), "dev.mlport.model.sha256": _artifact_sha256(source),
    }
    signature = _signature(source, name, args.trusted) if single else None
    if signature is not None:
        labels["dev.mlport.model.signature"] = json.dumps(signature, separators=(",", ":"))
    image = builder.build(tmp / "model-context", MODEL_CONTAINERFILE, args.tag, build_args={"BASE": base},
                          labels=labels, timestamp=0)
    layers = builder.inspect(args.tag)["rootfs"]["diff_ids"]
    return {"image": args.tag, "id": image, "base": base, "model": name, "formats": list(formats),
            "model_layer": layers[-1], "sha256": labels["dev.mlport.model.sha256"]}


def _inspect_source(source: Path, name: str | None) -> tuple[str, bool, tuple[str, ...], list[Path]]:
    """The model's name, whether it is one model, the formats it needs (a manifest's leaves included), and for
    a manifest file the files it uses."""
    from mlport.deploy.packaging import formats_of
    from mlport.errors import InvalidInput, valid_name
    from mlport.formats.manifest.files import manifest_files
    from mlport.formats.registry import default_registry
    from mlport.runtime.repository import Repository

    if not source.exists():
        raise InvalidInput(f"{source} does not exist")
    repo = Repository(source, default_registry())
    models = repo.scan()
    if not models:
        raise InvalidInput(f"{source} holds no model of a known format (see `mlport formats`)")
    found: set[str] = set()
    uses: list[Path] = []
    for version in (v for m in models.values() for v in m.versions.values()):
        found.add(version.format)
        if version.format == "manifest":
            used = manifest_files(version.path)
            missing = [p.name for p, fmt in used.leaves if fmt is None]
            if missing:
                raise InvalidInput(f"{version.path.name}: no installed format recognises {', '.join(missing)}")
            found.update(fmt for _, fmt in used.leaves if fmt is not None)
            uses = used.files if source.is_file() else uses
    stem = source.name.split(".")[0] if source.is_file() else source.name
    return valid_name(name or stem, "model"), repo.single, formats_of(found), uses


def _ensure_base(args: argparse.Namespace, builder: Any, build_args: dict[str, str], formats: tuple[str, ...],
                 tmp: Path) -> str:
    from mlport import __version__
    from mlport.deploy.packaging import (
        BASE_CONTAINERFILE,
        DEFAULT_BASE,
        BaseSpec,
        check_image_ref,
        mlport_wheel,
        write_base_context,
    )

    parent = check_image_ref(args.base or DEFAULT_BASE)
    wheel = mlport_wheel(tmp)
    spec = BaseSpec(parent, f"mlport=={__version__}", formats, wheel)
    tag = spec.tag(__version__)
    if args.rebuild_base or not builder.exists(tag):
        context = tmp / "base-context"
        write_base_context(spec, context)
        print(f"building the base layer {tag} (formats: {', '.join(formats)})", file=sys.stderr)
        builder.build(context, BASE_CONTAINERFILE, tag, build_args={"BASE": parent, **build_args},
                      labels=_oci_labels(__version__))
    return tag


def _oci_labels(version: str) -> dict[str, str]:
    labels = {"org.opencontainers.image.title": "mlport", "org.opencontainers.image.version": version,
              "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "org.opencontainers.image.source": "https://github.com/mlport/mlport",
              "org.opencontainers.image.licenses": "Apache-2.0"}
    revision = _git_revision()
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    return labels


def _git_revision() -> str | None:
    import subprocess

    import mlport

    root = Path(mlport.__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    proc = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          timeout=30, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _artifact_sha256(source: Path) -> str:
    """The sha256 the hub records for the same artifact: a file's own, or the digest over a folder's files."""
    from mlport.registry.artifact import folder_digest, sha256_file

    if source.is_file():
        return sha256_file(source)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    return folder_digest((p.relative_to(source).as_posix(), sha256_file(p)) for p in files)


def _signature(source: Path, name: str, trusted: bool) -> dict[str, Any] | None:
    from mlport.registry.artifact import read_signature

    return read_signature(source, name, trusted=trusted, timeout_s=300)


def _print(result: dict[str, Any], output: str) -> None:
    if output == "json":
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:12} {', '.join(value) if isinstance(value, list) else value}")
