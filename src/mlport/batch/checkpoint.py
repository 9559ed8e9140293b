"""The checkpoint of a run: a local folder with one finished part per chunk, so a killed run can resume.

Chunk ``k`` is finished when ``part-<k>.arrow`` exists: it is written under a temporary name and renamed,
after the chunk's bad rows (``part-<k>.errors.json``). A resumed run skips the finished chunks and scores the
others; the final output is put together from the parts in chunk order, so no row is missing or doubled.
``run.json`` records what the run was started with: resuming with other settings is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from mlport.errors import InvalidInput

__all__ = ["Checkpoint", "default_work_dir"]


def default_work_dir(output_uri: str, remote: bool) -> Path:
    """``OUTPUT.parts`` beside a local output; a folder in the user's cache for an object-store output."""
    if not remote:
        return Path(output_uri + ".parts")
    digest = hashlib.sha256(output_uri.encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mlport" / "score" / digest


class Checkpoint:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.done: set[int] = set()

    @classmethod
    def start(cls, folder: Path, settings: dict[str, Any], resume: bool) -> Checkpoint:
        """The checkpoint of a run started with ``settings``: the finished chunks of the same run with
        ``resume``, else an empty one."""
        cp = cls(folder)
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
        cp.done = {int(p.name[5:13]) for p in folder.glob("part-*.arrow")}
        return cp

    def _part(self, k: int) -> Path:
        return self.folder / f"part-{k:08d}.arrow"

    def _errors(self, k: int) -> Path:
        return self.folder / f"part-{k:08d}.errors.json"

    def save(self, k: int, table: pa.Table, errors: list[tuple[int, str]]) -> None:
        """Record chunk ``k`` as finished: its errors first, then its rows (the rename marks it done)."""
        if errors:
            tmp = self._errors(k).with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(errors))
            tmp.replace(self._errors(k))
        tmp = self._part(k).with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        tmp.replace(self._part(k))

    def rows(self, k: int) -> int:
        with pa.OSFile(str(self._part(k))) as src:
            return int(pa.ipc.open_file(src).read_all().num_rows)

    def errors(self, k: int) -> list[tuple[int, str]]:
        path = self._errors(k)
        return [(int(r), str(m)) for r, m in orjson.loads(path.read_bytes())] if path.is_file() else []

    def tables(self, count: int) -> Iterator[pa.Table]:
        """The finished parts' rows in chunk order (non-empty ones)."""
        for k in range(count):
            with pa.OSFile(str(self._part(k))) as src:
                table = pa.ipc.open_file(src).read_all()
            if table.num_rows:
                yield table

    def missing(self, count: int) -> list[int]:
        return [k for k in range(count) if not self._part(k).is_file()]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
