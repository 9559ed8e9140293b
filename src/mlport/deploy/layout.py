"""A replica's model folder: the artifact of version N laid out as ``<root>/model.yaml`` + ``<root>/N/...``, so the
replica serves (and logs, and answers in ``model_version``) the hub's version number rather than "version 1".

Files are hard links to the fetched artifact (a copy where links cannot be made), so a layout costs no space.
An artifact that is itself a versioned model folder (numbered sub-folders, or a Triton ``config.pbtxt``) is
served as it is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["versioned_layout"]

CONFIG_NAME = "model.yaml"
TRITON_CONFIG_NAME = "config.pbtxt"


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _versioned_already(folder: Path) -> bool:
    return (folder / TRITON_CONFIG_NAME).exists() or any(p.is_dir() and p.name.isdigit() for p in folder.iterdir())


def versioned_layout(artifact: Path, root: Path, version: int) -> Path:
    """Lay ``artifact`` (a model file or folder) out under ``root`` as version ``version`` of one model and return
    the path to serve: ``root``, or ``artifact`` itself when it is a versioned model folder already.  Whatever
    was under ``root`` before is replaced."""
    artifact = Path(artifact)
    if artifact.is_dir() and _versioned_already(artifact):
        return artifact
    if root.exists():
        shutil.rmtree(root)
    target = root / str(int(version))
    target.mkdir(parents=True)
    if artifact.is_dir():
        shutil.copytree(artifact, target, copy_function=_link_or_copy, dirs_exist_ok=True, symlinks=False)
        config = artifact / CONFIG_NAME
        if config.is_file():  # a model's settings (batching, labels...) belong to the model, above its versions
            _link_or_copy(str(config), str(root / CONFIG_NAME))
    else:
        _link_or_copy(str(artifact), str(target / artifact.name))
    if not (root / CONFIG_NAME).exists():
        (root / CONFIG_NAME).write_text("# the hub's layout of one model version; settings come from the upload\n")
    return root
