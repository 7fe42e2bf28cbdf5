"""The training case of the stage primitive: "train this config, or return its finished summary".

:func:`train_stage` runs :func:`aidkd.engine.train` in the stage's folder (the engine's run directory plus
``stage.json``). The stage config is the run config without ``output`` and the display options, with the
checkpoint paths it reads (``teacher.checkpoint``, ``model.checkpoint``) moved into the stage's files, so the
fingerprint follows their contents. An interrupted run resumes through the engine (same config, ``last.pt``);
``overwrite`` goes through the engine's own ``overwrite``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import RunConfig
from ..engine.trainer import read_summary, train
from ..files.rundir import folder_mark
from ..errors import UserError
from .core import StageResult, StageStore

#: the summary fields a train stage records (the engine's summary.json keeps everything)
SUMMARY_KEYS = ("arch", "method", "teacher", "dataset", "seed", "epochs", "selection", "best_acc", "best_epoch",
                "best_test_acc", "last_test_acc", "last_test_top5", "last_val_acc", "best_test_epoch_acc",
                "last_test_raw_acc", "wall_time_s", "device", "precision", "student_params", "fingerprint")

EpochHook = Callable[[str, int, dict], None]


def stage_config(cfg: RunConfig) -> tuple[dict, dict[str, str]]:
    """(the fingerprinted config, the files it reads) of a run: the config's identity
    (:meth:`aidkd.config.RunConfig.identity`) with the checkpoint paths moved into the files."""
    d = cfg.identity()
    files = {}
    for section in ("teacher", "model"):
        if d[section].get("checkpoint"):
            files[f"{section}.checkpoint"] = d[section]["checkpoint"]
            d[section]["checkpoint"] = "file"
    return d, files


def finished_summary(run_dir: Path, cfg: RunConfig) -> dict | None:
    """The engine's summary of a finished run of ``cfg`` in ``run_dir`` (None if unfinished or another config)."""
    s = read_summary(run_dir)
    return s if s is not None and s.get("fingerprint") == cfg.fingerprint() else None


def train_stage(store: StageStore, name: str, cfg: RunConfig, *, folder: str | Path | None = None,
                on_epoch_end: EpochHook | None = None) -> StageResult | None:
    """Train ``cfg`` as the stage ``name`` of ``store`` (its ``output`` is replaced by the stage's folder), or
    find it finished. ``folder``: a folder the user named instead of the fingerprint-keyed one.
    ``on_epoch_end(name, epoch, record)`` is called after each epoch that runs."""
    config, files = stage_config(cfg)

    def run(where: Path, overwrite: bool) -> tuple[dict, str]:
        run_cfg = cfg.model_copy(update={"output": cfg.output.model_copy(
            update={"dir": str(where.parent), "name": where.name})})
        summary = None if overwrite else finished_summary(where, run_cfg)  # finished, but the record was lost
        status = "skipped"
        if summary is not None and not (where / "checkpoints" / "best.pt").is_file():  # finished, but damaged
            if folder_mark(where) is None:
                raise UserError(f"stage {name}: {str(where)!r} holds a finished run whose checkpoints/best.pt is gone; "
                                "delete that folder to train the stage again")
            store.log(f"[bold]stage {name}[/]: its checkpoint is gone; training it again -> {where}")
            summary, overwrite = None, True
        if summary is None:
            status = "resumed" if not overwrite and (where / "checkpoints" / "last.pt").is_file() else "ran"
            store.log(f"[bold]stage {name}[/]: {'resuming' if status == 'resumed' else 'running'} -> {where}")
            hook = None if on_epoch_end is None else (lambda epoch, record: on_epoch_end(name, epoch, record))
            summary = train(run_cfg, overwrite=overwrite, on_epoch_end=hook)
        result = {"checkpoint": "checkpoints/best.pt", "last_checkpoint": "checkpoints/last.pt",
                  "summary": {k: summary.get(k) for k in SUMMARY_KEYS}, "wall_time_s": summary.get("wall_time_s")}
        return result, status

    return store.run(name, "train", config, files, run, folder=folder)


def summary_of(res: StageResult) -> dict:
    """A train stage's summary with its run directory (the engine's summary shape)."""
    return {**res.result.get("summary", {}), "run_dir": str(res.dir)}


__all__ = ["SUMMARY_KEYS", "finished_summary", "stage_config", "summary_of", "train_stage"]
