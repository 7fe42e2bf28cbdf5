"""A training run: teachers, vanilla students and every distillation method go through :func:`train`, which
composes the pieces of :mod:`aidkd.engine.recipe` (setup, epochs, evaluation, checkpoints) with the run folder's
rules and writes the run directory::

    RUN/config.yaml          the resolved config
    RUN/metrics.jsonl        one record per epoch
    RUN/tb/                  TensorBoard events
    RUN/checkpoints/last.pt  everything needed to resume (model, method parts, optimiser, schedule, RNG, epoch)
    RUN/checkpoints/best.pt  the weights of the epoch chosen on the selection split
    RUN/summary.json         best and last accuracy, wall time, versions, seed, world size

Rerunning the same config resumes an unfinished run from ``last.pt``. The folder rules (what may be named,
what ``--overwrite`` may delete) are :mod:`aidkd.files.rundir`'s. Everything that can be checked is checked before
the folder is touched -- the config, the data, both models, the selection split, the optimiser and one batch through
the student and the teacher -- and the folder is created only when the first epoch ends, so a run that fails in its
first epoch leaves nothing behind (and ``--overwrite`` removes the old run only then). Per epoch the metrics line
is appended before ``last.pt`` is renamed into place, so a kill between the two is repaired on resume.

A non-finite loss (``train.on_nonfinite``, :mod:`aidkd.engine.nonfinite`): ``stop`` (default) ends the run with one line naming the epoch, the
step, the loss terms and the last good checkpoint; the check is a device-side flag read every
``train.log_every`` steps and at the end of each epoch, so CUDA is not synchronised every step. ``skip`` drops the
update of each non-finite step (a host read every step), counts them in ``train.skipped_steps`` and stops after
``train.max_skipped_steps`` in a row. ``resume_with_changes`` continues an unfinished run from its last epoch with
changed ``optim`` / ``sched`` / ``train.on_nonfinite`` settings, recorded in ``config_history.jsonl``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..config import RunConfig, config_from_dict, dump_config, read_yaml
from ..errors import UserError
from ..files.checkpoint import FORMAT, atomic_write_json, atomic_write_text, load_checkpoint, read_json_object
from ..files.rundir import (MARKER, RUN_FILES, RUN_SUBDIRS, check_creatable, check_name, clean_stale_tmp, folder_mark,
                            foreign_entries, has_resumable_run, mark_folder, remove_run_folder)
from ..plots import plot_training_curves
from ..progress import EpochProgress, console
from . import recipe
from .distributed import DistInfo, barrier, cleanup_distributed, distributed_errors, init_distributed, on_main
from .logging import MetricsLogger, last_evaluated_record, truncate_metrics
from .nonfinite import NonFiniteMonitor
from .recipe import TrainingRun
from .runtime import resolve_device, versions


#: config keys ``--resume-with-changes`` may change (everything else changes what the finished epochs mean)
RESUMABLE_CHANGES = ("optim.", "sched.", "train.on_nonfinite", "train.max_skipped_steps")


@dataclass
class RunDirPlan:
    """What :func:`plan_run_dir` decided, before anything is written.

    ``action``: ``fresh`` (no folder, or an empty one), ``replace`` (a folder of run files to delete when the first
    epoch ends: ``--overwrite``, or a run that never finished an epoch), ``resume`` (continue from ``last.pt``).
    ``changes``: ``{key: [old, new]}`` accepted by ``resume_with_changes``."""

    run_dir: Path
    action: str
    changes: dict = field(default_factory=dict)


def config_changes(old: RunConfig, new: RunConfig) -> dict:
    """``{dotted key: [old, new]}`` for every result-changing value that differs between two configs."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and v and k not in ("kwargs", "params", "meta"):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = (flat(c.model_dump(mode="json")) for c in (old, new))
    skip = ("output.", "train.progress", "train.log_every", "train.dist_timeout_s")
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not k.startswith(skip)}


def read_run_config(run_dir: Path) -> RunConfig:
    """The config recorded in ``run_dir/config.yaml``; unreadable is a one-line UserError naming the file."""
    f = run_dir / "config.yaml"
    if not f.is_file():
        raise UserError(f"run directory {str(run_dir)!r} holds a checkpoint but no config.yaml; pass --overwrite to "
                        "replace it or set output.name")
    try:
        return config_from_dict(read_yaml(f), str(f))
    except UserError as e:
        raise UserError(f"{e}; the run's record is damaged: pass --overwrite to replace the run or set output.name") from None


def plan_run_dir(cfg: RunConfig, overwrite: bool, resume_with_changes: bool = False) -> RunDirPlan:
    """Decide what to do with ``output.dir/output.name`` without writing anything; refuse with a UserError.

    A finished run is replaced only with ``overwrite``; an unfinished run of the same config resumes (one of a
    different config only with ``resume_with_changes``, for the keys of :data:`RESUMABLE_CHANGES`); a folder that
    holds anything but run files is never written to nor deleted."""
    run_dir = Path(cfg.output.dir).expanduser() / check_name(cfg.run_name())
    if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
        raise UserError(f"output.name: {str(run_dir)!r} exists and is not a folder; choose another output.name")
    check_creatable(run_dir)
    if not run_dir.exists():
        return RunDirPlan(run_dir, "fresh")
    foreign = foreign_entries(run_dir)
    if foreign:
        raise UserError(f"run directory {str(run_dir)!r} holds {foreign[0]!r}, which is not a run file; aidkd "
                        "neither writes into nor deletes such a folder: choose another output.name")
    if not any(run_dir.iterdir()):
        return RunDirPlan(run_dir, "fresh")
    finished = read_summary(run_dir) is not None  # a damaged summary.json: the run is resumed to write it again
    if folder_mark(run_dir) is None and not (has_resumable_run(run_dir) and not overwrite and not finished):
        # not marked by aidkd: a user's folder, or a run of an older aidkd, which may only be resumed
        first = sorted(p.name for p in run_dir.iterdir())[0]
        raise UserError(f"run directory {str(run_dir)!r} holds {first!r} but is not a folder aidkd created (it has no "
                        f"{MARKER}); aidkd neither writes into nor deletes it: choose another output.name")
    if overwrite:
        return RunDirPlan(run_dir, "replace")
    if finished:
        raise UserError(f"run directory {str(run_dir)!r} already holds a finished run; pass --overwrite to replace "
                        "it or set output.name to keep both")
    if not has_resumable_run(run_dir):  # the run stopped before its first epoch ended: nothing to keep
        return RunDirPlan(run_dir, "replace")
    changes = config_changes(read_run_config(run_dir), cfg)
    if changes and not resume_with_changes:
        shown = "; ".join(f"{k}: {v[0]!r} -> {v[1]!r}" for k, v in list(changes.items())[:3])
        raise UserError(f"run directory {str(run_dir)!r} holds an unfinished run of a different config ({shown}); "
                        "pass --resume-with-changes to continue it with new optim/sched settings, --overwrite to "
                        "replace it, or set output.name")
    fixed = [k for k in changes if not k.startswith(RESUMABLE_CHANGES)]
    if fixed:
        k = fixed[0]
        raise UserError(f"--resume-with-changes: {k} changed ({changes[k][0]!r} -> {changes[k][1]!r}), but only "
                        "optim.*, sched.*, train.on_nonfinite and train.max_skipped_steps may change in a resumed "
                        "run; pass --overwrite to start again or set output.name")
    return RunDirPlan(run_dir, "resume", changes)


def _create_run_dir(plan: RunDirPlan, cfg: RunConfig, start_epoch: int) -> None:
    """Write the run folder's config (deleting the run being replaced first): called when the first epoch of this
    process ends, so that nothing is written by a run that fails earlier."""
    if plan.action == "replace":
        remove_run_folder(plan.run_dir)
    if plan.action in ("fresh", "replace"):  # the mark first: the folder is aidkd's from its first file on
        mark_folder(plan.run_dir, "run", RUN_FILES | RUN_SUBDIRS)
    atomic_write_text(plan.run_dir / "config.yaml", dump_config(cfg))
    if plan.changes:
        with open(plan.run_dir / "config_history.jsonl", "a") as f:
            f.write(json.dumps({"resumed_at_epoch": start_epoch, "changes": plan.changes, "time": time.time()}) + "\n")


# ------------------------------------------------------------------------------------------------------- train
def train(cfg: RunConfig, *, overwrite: bool = False,
          on_epoch_end: Callable[[int, dict], None] | None = None, resume_with_changes: bool = False,
          allow_world_size_change: bool = False) -> dict:
    """Train the model of ``cfg`` with its method; return the run summary (also written to summary.json).

    The teacher is the one ``cfg.teacher`` describes (:func:`aidkd.teachers.build_teacher`). To train a config only when it has
    no finished run, use :func:`aidkd.stages.train_stage`. ``resume_with_changes``: continue an unfinished run
    whose ``optim`` / ``sched`` settings differ (see :func:`plan_run_dir`). ``allow_world_size_change``: resume a
    run started with another number of processes (the global batch split and the data order change).
    """
    device = resolve_device(cfg.train.device)
    dist_info = init_distributed(device.type, cfg.train.dist_timeout_s)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    try:
        with distributed_errors(dist_info, cfg.train.dist_timeout_s):
            return _train(cfg, device, dist_info, overwrite, on_epoch_end, resume_with_changes,
                          allow_world_size_change)
    finally:
        if dist_info.enabled:
            cleanup_distributed()


def _train(cfg: RunConfig, device: torch.device, dist: DistInfo, overwrite: bool, on_epoch_end,
           resume_with_changes: bool, allow_world_size_change: bool) -> dict:
    t_start = time.time()
    # 1. the run folder's state is decided first, read-only (every process learns rank 0's decision)
    plan: RunDirPlan = on_main(dist, lambda: plan_run_dir(cfg, overwrite, resume_with_changes))
    state = _resume_state(plan, dist, allow_world_size_change) if plan.action == "resume" else None
    # 2. everything is built and checked before the folder is touched
    run = recipe.setup(cfg, device, dist, log=console.print)
    if state is not None:
        recipe.resume(run, state, plan.changes)
        if dist.is_main:
            clean_stale_tmp(plan.run_dir)
            truncate_metrics(plan.run_dir / "metrics.jsonl", run.start_epoch)
            run.last_eval = last_evaluated_record(plan.run_dir / "metrics.jsonl")  # kept if no epoch is left to run
            console.print(f"resuming {plan.run_dir} from epoch {run.start_epoch}"
                          + (f" with changes: {', '.join(plan.changes)}" if plan.changes else ""))
    folder_ready = state is not None and not plan.changes
    # 3. the epochs
    logger = MetricsLogger(plan.run_dir if dist.is_main else None, cfg.train.tensorboard, cfg.train.wandb,
                           cfg.model_dump(mode="json"), first_epoch=run.start_epoch + 1)
    monitor = NonFiniteMonitor(cfg, device, plan.run_dir, dist)
    try:
        with EpochProgress(cfg.train.progress and dist.is_main, cfg.train.epochs) as bar:
            for epoch in range(run.start_epoch, cfg.train.epochs):
                t0 = time.perf_counter()
                record = recipe.train_epoch(run, epoch, monitor, bar)
                improved = recipe.evaluate_epoch(run, epoch, record)
                record["time.epoch_s"] = time.perf_counter() - t0
                if dist.is_main:
                    if not folder_ready:
                        _create_run_dir(plan, cfg, run.start_epoch)
                        folder_ready = True
                    logger.log(record)  # before last.pt: a kill in between is repaired by the resume's truncation
                    recipe.save(run, plan.run_dir, epoch, record, improved)
                    if cfg.train.progress:
                        console.print(_epoch_line(record, cfg.train.epochs))
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
    finally:
        logger.close()
    summary = _summary(run, plan.run_dir, None if state is not None else time.time() - t_start)
    if dist.is_main:
        if not folder_ready:
            _create_run_dir(plan, cfg, run.start_epoch)
        if state is not None:  # wall time of a resumed run: sum of the recorded epoch times
            summary["wall_time_s"] = _recorded_time(plan.run_dir)
        plot_training_curves(plan.run_dir)  # before the summary: a run is finished only with its plot
        atomic_write_json(plan.run_dir / "summary.json", summary)
    barrier()
    return summary


def _resume_state(plan: RunDirPlan, dist: DistInfo, allow_world_size_change: bool) -> dict:
    """The contents of the run's ``last.pt``, checked to be a training checkpoint of the same number of processes."""
    state = load_checkpoint(plan.run_dir / "checkpoints" / "last.pt")
    if state.get("format") != FORMAT or "method_state" not in state:
        raise UserError(f"{plan.run_dir}/checkpoints/last.pt is not an aidkd training checkpoint; pass --overwrite")
    old_world = int(state.get("world_size", 1))
    if old_world != dist.world_size and not allow_world_size_change:
        raise UserError(f"run directory {str(plan.run_dir)!r} was started with {old_world} process(es), this is "
                        f"{dist.world_size}: the global batch split and the data order would change; rerun with the "
                        "same number, or pass --allow-world-size-change")
    return state


def _summary(run: TrainingRun, run_dir: Path, wall_time_s: float | None) -> dict:
    """The run's ``summary.json``: what it trained, its selected and last accuracies, where and how it ran."""
    cfg, student, best, last = run.cfg, run.method.student, run.best, run.last_eval
    return {
        "run_dir": str(run_dir), "arch": run.arch, "method": cfg.method.name, "teacher": cfg.teacher.name,
        "student_params": sum(p.numel() for p in student.parameters()),
        **({"student_parts": student.parameter_counts()} if hasattr(student, "parameter_counts") else {}),
        "dataset": cfg.data.name, "seed": cfg.train.seed, "epochs": cfg.train.epochs,
        "selection": run.select, "best_acc": best["acc"], "best_epoch": best["epoch"],
        "best_test_acc": best.get("test.top1"),
        "last_test_acc": last.get("test.top1"), "last_test_top5": last.get("test.top5"),
        **({} if run.ema is None else {"last_test_raw_acc": last.get("test.raw_top1")}),
        "last_val_acc": last.get("val.top1"), "best_test_epoch_acc": run.best_test,
        "wall_time_s": wall_time_s, "world_size": run.dist.world_size, "device": str(run.device),
        "precision": run.precision.name, "precision_reason": run.precision.reason, "versions": versions(),
        "fingerprint": cfg.fingerprint(),
    }


def _recorded_time(run_dir: Path) -> float:
    total = 0.0
    for ln in (run_dir / "metrics.jsonl").read_text().splitlines():
        if ln.strip():
            total += json.loads(ln).get("time.epoch_s", 0.0)
    return total


def _epoch_line(r: dict, epochs: int) -> str:
    parts = [f"epoch {r['epoch']}/{epochs}", f"loss {r['train.loss']:.4f}", f"train {r['train.top1']:.2f}"]
    if "val.top1" in r:
        parts.append(f"val {r['val.top1']:.2f}")
    if "test.top1" in r:
        parts.append(f"test {r['test.top1']:.2f}")
    parts.append(f"{r['train.img_per_s']:.0f} img/s")
    return "  ".join(parts)


def read_summary(run_dir: str | Path) -> dict | None:
    """The run's ``summary.json`` (written last: the run finished), or None: missing, damaged or not a summary."""
    return read_json_object(Path(run_dir) / "summary.json")
