"""The checkpoint of a run: a local folder with the input's parts and each part's finished chunks (segments).

``plan.json`` holds the parts the input was split into (a resumed run keeps them, whatever its worker
count). Chunk ``j`` of part ``p`` is finished when ``part-<p>-<j>.<ext>`` exists: its scored rows in the
output's segment format, written under a temporary name and renamed after its record
``part-<p>-<j>.json`` (the input position after the chunk, rows read and scored, bad rows with their
row numbers in the part). A resumed run starts each part after its last finished chunk; the final output
joins the segments in part and chunk order, so no row is missing or doubled. ``run.json`` records what the
run was started with: resuming with other settings is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from mlport.errors import InvalidInput

__all__ = ["Checkpoint", "Segment", "default_work_dir"]

#: A finished chunk's record: ``next`` (input position after it), ``read``, ``scored``, ``errors``
#: (``[row in the part, reason]``) and format details of its data (``header``: CSV header bytes).
Segment = dict[str, Any]


def default_work_dir(output_uri: str, remote: bool) -> Path:
    """``OUTPUT.parts`` beside a local output; a folder in the user's cache for an object-store output."""
    if not remote:
        return Path(output_uri + ".parts")
    digest = hashlib.sha256(output_uri.encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mlport" / "score" / digest


class Checkpoint:
    def __init__(self, folder: Path, ext: str) -> None:
        self.folder = folder
        self.ext = ext

    @classmethod
    def start(cls, folder: Path, settings: dict[str, Any], resume: bool, ext: str) -> Checkpoint:
        """The checkpoint of a run started with ``settings``: the finished chunks of the same run with
        ``resume``, else an empty one. ``ext``: the suffix of the segments' data files."""
        run = folder / "run.json"
        if resume and run.is_file():
            before = json.loads(run.read_text(encoding="utf-8"))
            changed = sorted(k for k in {*before, *settings} if before.get(k) != settings.get(k))
            if changed:
                raise InvalidInput(f"cannot resume: this run differs from the checkpoint in {folder} in "
                                   f"{', '.join(changed)}; start again without --resume")
        elif folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob("*.tmp"):
            tmp.unlink()
        run.write_text(json.dumps(settings, sort_keys=True), encoding="utf-8")
        return cls(folder, ext)

    def plan(self, make: Callable[[], list[tuple[int, int]]]) -> list[tuple[int, int]]:
        """The parts of a resumed run as it recorded them, else ``make()``'s (recorded)."""
        path = self.folder / "plan.json"
        if path.is_file():
            return [(int(a), int(b)) for a, b in orjson.loads(path.read_bytes())["parts"]]
        parts = make()
        self._put(path, orjson.dumps({"parts": parts}))
        return parts

    def data(self, p: int, j: int) -> Path:
        return self.folder / f"part-{p:04d}-{j:08d}.{self.ext}"

    def _record(self, p: int, j: int) -> Path:
        return self.folder / f"part-{p:04d}-{j:08d}.json"

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def save(self, p: int, j: int, record: Segment, write: Callable[[Path], dict[str, Any]]) -> None:
        """Record chunk ``j`` of part ``p`` as finished: its data (``write(path)``, which returns details for the
        record) and its record, then the data's rename, which marks it done."""
        tmp = self.data(p, j).with_name(self.data(p, j).name + ".tmp")
        self._put(self._record(p, j), orjson.dumps({**record, **write(tmp)}))
        tmp.replace(self.data(p, j))

    def finished(self, p: int) -> list[Segment]:
        """The records of part ``p``'s finished chunks, in order (those after a gap are removed)."""
        records: list[Segment] = []
        while self.data(p, len(records)).is_file() and self._record(p, len(records)).is_file():
            records.append(orjson.loads(self._record(p, len(records)).read_bytes()))
        for stale in [*self.folder.glob(f"part-{p:04d}-*.json"), *self.folder.glob(f"part-{p:04d}-*.{self.ext}")]:
            if int(stale.name.split(".")[0].rsplit("-", 1)[1]) >= len(records):
                stale.unlink()
        return records

    def segments(self, parts: int) -> Iterator[tuple[int, int, Segment]]:
        """``(part, chunk, record)`` of every finished chunk, in output order."""
        for p in range(parts):
            j = 0
            while self._record(p, j).is_file() and self.data(p, j).is_file():
                yield p, j, orjson.loads(self._record(p, j).read_bytes())
                j += 1

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
