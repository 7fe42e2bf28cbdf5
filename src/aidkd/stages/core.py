"""The stage primitive: fingerprint, folder, record; run a stage, or find it finished and reuse it.

Contract of :meth:`StageStore.run`:

* the fingerprint is ``sha256({kind, config, {file key: sha256 of the file's content}})``: paths do not enter it
  (the caller leaves them out of ``config`` and names the files in ``files``), so an output folder can be moved
  and a file rewritten at the same path invalidates what was computed from it;
* the folder is ``<root>/<name>-<fingerprint[:10]>``, or a folder the caller names (a run the user named with
  ``output.name``: its record must then hold the same fingerprint to be reused);
* a folder whose ``stage.json`` holds the fingerprint is finished: the stage is ``skipped``; a finished folder of
  the same kind and fingerprint under another name is ``reused`` (two names for one computation run once);
* otherwise ``fn(folder, overwrite)`` runs and returns ``(result, status)`` (``ran`` or ``resumed``: resuming an
  interrupted computation is the function's business, e.g. the engine's own resume); ``result`` is JSON-ready,
  with paths relative to the folder, and is written into ``stage.json`` last, atomically.

This module is the only place that decides whether finished work is reused.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files.checkpoint import atomic_write_json, read_json_object
from ..files.rundir import folder_mark, mark_folder
from ..errors import UserError

RECORD = "stage.json"
FP_LEN = 10

_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: str | Path) -> str:
    """sha256 of a file's content (16 hex digits), cached by (path, size, mtime)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"file {str(p)!r} not found; check the path")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()[:16]
    return _HASHES[key]


def dict_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def json_safe(obj: Any) -> Any:
    """NaN / inf -> None, tensors -> lists, recursively, so that the written JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return json_safe(obj.tolist())
    return obj


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text).strip("_") or "stage"


def read_record(folder: Path) -> dict | None:
    return read_json_object(folder / RECORD)  # anything but a JSON object is no record of a finished stage


def _outputs_present(folder: Path, rec: dict) -> bool:
    """Whether the files a finished stage's record names (its ``checkpoint``) are still there: a stage whose
    output was deleted is not finished."""
    result = rec.get("result")
    ck = result.get("checkpoint") if isinstance(result, dict) else None
    return not isinstance(ck, str) or (folder / ck).is_file()


@dataclass
class StageResult:
    """One stage of a plan: where its output is, what it computed and how it was obtained this time."""

    name: str
    kind: str  # train | adapt | logits | given | ...
    dir: Path | None  # None for a given file
    status: str  # ran | resumed | skipped | reused | given
    fingerprint: str
    result: dict = field(default_factory=dict)
    wall_time_s: float | None = None

    def path(self, key: str = "checkpoint") -> Path:
        """The file ``result[key]`` (relative to the folder; absolute for a given file)."""
        p = Path(self.result[key])
        return p if self.dir is None else self.dir / p

    @property
    def checkpoint(self) -> Path:
        return self.path("checkpoint")

    def row(self) -> dict:
        return {"stage": self.name, "kind": self.kind, "status": self.status, "fingerprint": self.fingerprint,
                "dir": str(self.dir) if self.dir is not None else None, "checkpoint": str(self.checkpoint),
                "wall_time_s": self.wall_time_s}


StageFn = Callable[[Path, bool], tuple[dict, str]]


class StageStore:
    """The stages of one plan, in folders under ``root``; their results in the order they were asked for."""

    def __init__(self, root: str | Path, overwrite: bool = False, verbose: bool = True, reuse_only: bool = False):
        """``reuse_only``: find finished stages, run nothing (:meth:`run` returns None for a missing one)."""
        self.root = Path(root).expanduser()
        self.overwrite = overwrite
        self.reuse_only = reuse_only
        self.verbose = verbose
        self.results: dict[str, StageResult] = {}

    def log(self, msg: str) -> None:
        if self.verbose:
            from ..progress import console

            console.print(msg)

    def add(self, res: StageResult) -> StageResult:
        """Keep ``res`` among this plan's results (also one obtained in another process) and log it."""
        self.results[res.name] = res
        where = f" -> {res.dir}" if res.dir is not None else f" ({res.checkpoint})"
        self.log(f"[bold]stage {res.name}[/]: {res.status}{where}")
        return res

    @staticmethod
    def fingerprint(kind: str, config: dict, files: dict[str, str | Path]) -> str:
        return dict_hash({"kind": kind, "config": config, "files": {k: file_hash(v) for k, v in sorted(files.items())}})

    def given(self, name: str, path: str | Path) -> StageResult:
        """A file the user gave (a trained teacher, a reference student): a stage with nothing to run."""
        p = Path(path).expanduser()
        fp = file_hash(p)
        return self.add(StageResult(name, "given", None, "given", fp, {"checkpoint": str(p.resolve())}))

    def alias(self, name: str, res: StageResult) -> StageResult:
        """``res`` under a second name (a plan that uses one stage's output in two roles)."""
        return self.add(StageResult(name, res.kind, res.dir, "reused", res.fingerprint, res.result,
                                      res.wall_time_s))

    def find(self, kind: str, fp: str, folder: Path) -> tuple[Path, dict, str] | None:
        """A finished folder of this fingerprint: ``folder`` itself (skipped) or another one (reused)."""
        rec = read_record(folder)
        if rec and rec.get("fingerprint") == fp and _outputs_present(folder, rec):
            return folder, rec, "skipped"
        if folder.parent == self.root:
            for other in sorted(self.root.glob(f"*-{fp[:FP_LEN]}")):
                orec = read_record(other)
                if (other != folder and orec and orec.get("kind") == kind and orec.get("fingerprint") == fp
                        and _outputs_present(other, orec)):
                    return other, orec, "reused"
        return None

    def run(self, name: str, kind: str, config: dict, files: dict[str, str | Path], fn: StageFn,
            folder: str | Path | None = None) -> StageResult | None:
        """Run the stage ``name`` (or find it finished); see the module docstring for the contract."""
        fp = self.fingerprint(kind, config, files)
        folder = Path(folder) if folder is not None else self.root / f"{safe_name(name)}-{fp[:FP_LEN]}"
        if not self.overwrite:
            found = self.find(kind, fp, folder)
            if found is not None:
                where, rec, status = found
                return self.add(StageResult(name, kind, where, status, fp, rec.get("result", {}),
                                              rec.get("wall_time_s")))
        if self.reuse_only:
            return None
        if folder.parent == self.root and folder.name.endswith(fp[:FP_LEN]):
            mark_folder(folder, "stage")  # the store's own folder; a given one is the engine's to check and mark
        else:
            folder.mkdir(parents=True, exist_ok=True)
        if self.overwrite and folder_mark(folder) is not None:  # redone in place: unfinished until the new record
            (folder / RECORD).unlink(missing_ok=True)
        t0 = time.time()
        result, status = fn(folder, self.overwrite)
        wall = result.pop("wall_time_s", None) or (time.time() - t0)
        rec = {"stage": name, "kind": kind, "fingerprint": fp, "config": config,
               "files": {k: {"path": str(v), "sha256": file_hash(v)} for k, v in files.items()},
               "result": result, "wall_time_s": wall, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(folder / RECORD, json_safe(rec))
        return self.add(StageResult(name, kind, folder, status, fp, json_safe(result), wall))


__all__ = ["FP_LEN", "RECORD", "StageResult", "StageStore", "dict_hash", "file_hash", "json_safe", "read_record",
           "safe_name"]
