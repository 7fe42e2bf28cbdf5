"""Pipeline stages: each one a folder holding a checkpoint and a JSON record, skipped when it is already done.

A stage's folder is named ``<stage>-<fingerprint[:10]>`` inside the pipeline's output folder, so that a changed
config gets a new folder and an old output is never overwritten; a rerun finds the finished folders of the
unchanged stages and skips them. Two kinds of stage:

* **engine stages** (teacher, vanilla students, the reference, every distillation) are runs of
  :func:`aidkd.engine.train`: the folder is the engine's run directory (``config.yaml``, ``metrics.jsonl``,
  ``checkpoints/best.pt`` / ``last.pt``, ``summary.json``) plus ``stage.json``. The fingerprint is
  :meth:`RunConfig.fingerprint` of the run's config with every checkpoint *path* in it replaced by the hash of the
  file's *content*, so an output folder can be moved, and a teacher retrained into the same path invalidates
  what was distilled from it. An interrupted run resumes (the engine resumes an unfinished run of the same
  config); a finished run of the same fingerprint under another stage name (e.g. the distilled reference and the
  KD baseline of the first seed, when they are the same run) is reused instead of trained twice.
* **the adapt stage** writes the adapted teacher (``teacher.pt``: an aidkd checkpoint for fine-tuning, a
  :class:`~aidkd.aid.project.TargetTeacher` file for projection), ``report.json`` and ``stage.json``; its
  fingerprint is a hash of its inputs (the content hashes of T0 and S_ref, the AID parameters, the data config,
  the distillation epochs, the seed and the device).

``stage.json`` is written last, atomically: a folder without it is unfinished.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..config import RunConfig, config_from_dict
from ..engine.checkpoint import FORMAT, atomic_write_json, checkpoint_config, read_checkpoint
from ..errors import UserError

RECORD = "stage.json"
FP_LEN = 10


# ------------------------------------------------------------------------------------------------------- hashing
_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: str | Path) -> str:
    """sha256 of a file's content (16 hex digits), cached by (path, size, mtime)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint {str(p)!r} not found; check the path")
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


def engine_fingerprint(cfg: RunConfig) -> str:
    """``RunConfig.fingerprint()`` with the checkpoint paths replaced by the hashes of the files' contents."""
    upd: dict[str, Any] = {}
    if cfg.teacher.checkpoint:
        upd["teacher"] = cfg.teacher.model_copy(update={"checkpoint": "sha256:" + file_hash(cfg.teacher.checkpoint)})
    if cfg.model.checkpoint:
        upd["model"] = cfg.model.model_copy(update={"checkpoint": "sha256:" + file_hash(cfg.model.checkpoint)})
    return (cfg.model_copy(update=upd) if upd else cfg).fingerprint()


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text).strip("_") or "stage"


def json_safe(obj: Any) -> Any:
    """NaN / inf -> None, recursively, so that the written JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return json_safe(obj.tolist())
    return obj


def read_record(folder: Path) -> dict | None:
    p = folder / RECORD
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------------------------------------------- stages
@dataclass
class StageResult:
    """One stage of this pipeline invocation: where its output is and what was done to get it."""

    name: str
    kind: str  # train | adapt | given
    dir: Path | None
    status: str  # ran | resumed | skipped | reused | given
    fingerprint: str
    record: dict = field(default_factory=dict)

    @property
    def checkpoint(self) -> Path:
        """The stage's output checkpoint: the selected (best.pt) weights of a run, the adapted teacher, or the
        given file."""
        if self.kind == "given":
            return Path(self.record["checkpoint"])
        return self.dir / self.record["checkpoint"]  # type: ignore[operator]

    @property
    def summary(self) -> dict:
        return self.record.get("summary", {})

    @property
    def wall_time_s(self) -> float | None:
        return self.record.get("wall_time_s")

    def row(self) -> dict:
        return {"stage": self.name, "kind": self.kind, "status": self.status, "fingerprint": self.fingerprint,
                "dir": str(self.dir) if self.dir is not None else None, "checkpoint": str(self.checkpoint),
                "wall_time_s": self.wall_time_s}


EpochHook = Callable[[str, int, dict], None]


class StageRunner:
    """Runs the stages of one pipeline invocation into ``out_dir``; keeps their results in order."""

    def __init__(self, out_dir: str | Path, overwrite: bool = False, on_epoch_end: EpochHook | None = None,
                 verbose: bool = True):
        self.out = Path(out_dir).expanduser()
        self.overwrite = overwrite
        self.on_epoch_end = on_epoch_end
        self.verbose = verbose
        self.results: dict[str, StageResult] = {}

    def log(self, msg: str) -> None:
        if self.verbose:
            from ..engine.logging import console

            console.print(msg)

    def _done(self, res: StageResult) -> StageResult:
        self.results[res.name] = res
        where = f" -> {res.dir}" if res.dir is not None else f" ({res.checkpoint})"
        self.log(f"[bold]stage {res.name}[/]: {res.status}{where}")
        return res

    def folder(self, name: str, fp: str) -> Path:
        return self.out / f"{safe_name(name)}-{fp[:FP_LEN]}"

    # -------------------------------------------------------------------------------------------- given files
    def given(self, name: str, path: str | Path) -> StageResult:
        p = Path(path).expanduser()
        fp = file_hash(p)
        return self._done(StageResult(name, "given", None, "given", fp, {"checkpoint": str(p.resolve()), "sha256": fp}))

    # ------------------------------------------------------------------------------------------ engine stages
    def train_stage(self, name: str, cfg_dict: dict, teacher: nn.Module | None = None) -> StageResult:
        """Run (or skip, reuse, resume) an engine run of ``cfg_dict`` (a RunConfig dict without ``output``).

        ``teacher``: an in-memory teacher passed to :func:`train` (a projection teacher); its file must be named
        by ``teacher.checkpoint`` in the config, so that the fingerprint follows it."""
        from ..engine import train

        probe = config_from_dict({**cfg_dict, "output": {"dir": str(self.out), "name": "probe"}}, f"stage {name}")
        fp = engine_fingerprint(probe)
        folder = self.folder(name, fp)
        cfg = probe.model_copy(update={"output": probe.output.model_copy(update={"name": folder.name})})
        inputs = {}
        if cfg.teacher.checkpoint:
            inputs["teacher"] = {"path": cfg.teacher.checkpoint, "sha256": file_hash(cfg.teacher.checkpoint)}

        if not self.overwrite:
            rec = read_record(folder)
            if rec and rec.get("fingerprint") == fp and (folder / "summary.json").is_file():
                return self._done(StageResult(name, "train", folder, "skipped", fp, rec))
            for other in sorted(self.out.glob(f"*-{fp[:FP_LEN]}")):
                orec = read_record(other)
                if other != folder and orec and orec.get("kind") == "train" and orec.get("fingerprint") == fp \
                        and (other / "summary.json").is_file():
                    return self._done(StageResult(name, "train", other, "reused", fp, orec))

        summary = None
        status = "ran"
        if not self.overwrite and (folder / "summary.json").is_file():
            s = json.loads((folder / "summary.json").read_text())
            if s.get("fingerprint") == cfg.fingerprint():  # finished, but the record was not written
                summary, status = s, "skipped"
        if summary is None:
            if not self.overwrite and (folder / "checkpoints" / "last.pt").is_file():
                status = "resumed"
            self.log(f"[bold]stage {name}[/]: {'resuming' if status == 'resumed' else 'running'} -> {folder}")
            hook = None
            if self.on_epoch_end is not None:
                hook = lambda epoch, record: self.on_epoch_end(name, epoch, record)  # noqa: E731
            summary = train(cfg, overwrite=self.overwrite, teacher=teacher, on_epoch_end=hook)
        keep = ("arch", "method", "teacher", "dataset", "seed", "epochs", "selection", "best_acc", "best_epoch",
                "best_test_acc", "last_test_acc", "last_val_acc", "best_test_epoch_acc", "wall_time_s", "device")
        rec = {
            "stage": name, "kind": "train", "fingerprint": fp, "engine_fingerprint": cfg.fingerprint(),
            "checkpoint": "checkpoints/best.pt", "last_checkpoint": "checkpoints/last.pt",
            "summary": {k: summary.get(k) for k in keep}, "wall_time_s": summary.get("wall_time_s"),
            "inputs": inputs, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        atomic_write_json(folder / RECORD, json_safe(rec))
        return self._done(StageResult(name, "train", folder, status, fp, rec))

    # ------------------------------------------------------------------------------------------- adapt stage
    def adapt_stage(self, name: str, inputs: dict, run: Callable[[Path], tuple[str, dict]]) -> StageResult:
        """The adapt stage: ``inputs`` (JSON-ready, with the content hashes of the input checkpoints) give the
        fingerprint; ``run(folder)`` writes the adapted teacher into ``folder`` and returns (its file name
        relative to ``folder``, the report dict)."""
        fp = dict_hash({"kind": "adapt", **inputs})
        folder = self.folder(name, fp)
        rec = read_record(folder)
        if not self.overwrite and rec and rec.get("fingerprint") == fp and (folder / rec["checkpoint"]).is_file():
            return self._done(StageResult(name, "adapt", folder, "skipped", fp, rec))
        folder.mkdir(parents=True, exist_ok=True)
        old = folder / RECORD
        if old.exists():
            old.unlink()
        self.log(f"[bold]stage {name}[/]: running -> {folder}")
        t0 = time.time()
        ckpt_name, report = run(folder)
        wall = time.time() - t0
        atomic_write_json(folder / "report.json", json_safe({**report, "stage_wall_time_s": wall}))
        rec = {"stage": name, "kind": "adapt", "fingerprint": fp, "checkpoint": ckpt_name, "report": "report.json",
               "wall_time_s": wall, "inputs": inputs, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(folder / RECORD, json_safe(rec))
        return self._done(StageResult(name, "adapt", folder, "ran", fp, rec))


# ------------------------------------------------------------------------------------------ models and files
def load_model(path: str | Path, spec, arch: str | None = None, kwargs: dict | None = None) -> nn.Module:
    """A model from a checkpoint file, built for the data of ``spec`` (a :class:`~aidkd.data.DataSpec`).

    An aidkd checkpoint names its architecture and options; ``arch`` overrides them and is needed for a
    published state dict. A projection teacher's file (:class:`~aidkd.aid.project.TargetTeacher`) is loaded as
    such (it serves the training split only)."""
    from ..models import create_model, load_weights
    from .project import TargetTeacher

    obj = read_checkpoint(path)
    if isinstance(obj, dict) and "log_targets" in obj and "temperature" in obj:
        return TargetTeacher.load(path)
    kw = dict(kwargs or {})
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if arch is None or arch == obj.get("arch"):
            kw = {**dict(obj.get("model_kwargs") or {}), **kw}
        arch = arch or obj["arch"]
    elif arch is None:
        raise UserError(f"{str(path)!r} is not an aidkd checkpoint: give its architecture name")
    model = create_model(arch, num_classes=spec.num_classes, in_chans=spec.input_size[0],
                         input_hw=spec.input_size[1], **kw)
    load_weights(model, obj, strict=True)
    return model


__all__ = ["StageResult", "StageRunner", "checkpoint_config", "dict_hash", "engine_fingerprint", "file_hash",
           "json_safe", "load_model", "read_record"]
