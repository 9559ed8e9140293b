"""The layer contract of pyproject.toml names every package and top-level module of mlport."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "mlport"


def _layered() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    return {name.strip() for layer in layers for name in layer.split("|")}


def _top_level() -> set[str]:
    names = {f"mlport.{p.name}" for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names |= {f"mlport.{p.stem}" for p in SRC.glob("*.py") if p.stem != "__init__"}
    return names


def test_every_package_and_module_stands_in_a_layer() -> None:
    missing = sorted(_top_level() - _layered())
    assert missing == [], f"add these to the layers contract in pyproject.toml: {missing}"


def test_the_layers_name_only_what_exists() -> None:
    unknown = sorted(_layered() - _top_level())
    assert unknown == [], f"the layers contract names what src/mlport does not hold: {unknown}"
