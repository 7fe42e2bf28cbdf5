"""The one training loop: teachers, vanilla students and every distillation method go through :func:`train`.

The loop knows nothing about particular methods, models or datasets: it builds them by name from the config,
asks the method for ``(logits, {name: loss})`` on each batch, minimises the sum, evaluates each epoch and writes
the run directory::

    RUN/config.yaml          the resolved config
    RUN/metrics.jsonl        one record per epoch
    RUN/tb/                  TensorBoard events
    RUN/checkpoints/last.pt  everything needed to resume (model, method parts, optimiser, schedule, RNG, epoch)
    RUN/checkpoints/best.pt  the weights of the epoch chosen on the selection split
    RUN/summary.json         best and last accuracy, wall time, versions, seed, world size

Rerunning the same config resumes an unfinished run from ``last.pt``. The folder rules (what may be named,
what ``--overwrite`` may delete) are :mod:`aidkd.engine.rundir`'s. Everything that can be checked is checked before
the folder is touched -- the config, the data, both models, the selection split, the optimiser and one batch through
the student and the teacher -- and the folder is created only when the first epoch ends, so a run that fails in its
first epoch leaves nothing behind (and ``--overwrite`` removes the old run only then). Per epoch the metrics line
is appended before ``last.pt`` is renamed into place, so a kill between the two is repaired on resume.

A non-finite loss (``train.on_nonfinite``): ``stop`` (default) ends the run with one line naming the epoch, the
step, the loss terms and the last good checkpoint; the check is a device-side flag read every
``train.log_every`` steps and at the end of each epoch, so CUDA is not synchronised every step. ``skip`` drops the
update of each non-finite step (a host read every step), counts them in ``train.skipped_steps`` and stops after
``train.max_skipped_steps`` in a row. ``resume_with_changes`` continues an unfinished run from its last epoch with
changed ``optim`` / ``sched`` / ``train.on_nonfinite`` settings, recorded in ``config_history.jsonl``.
"""
from __future__ import annotations

import io
import json
import os
import platform
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..config import RunConfig, config_from_dict, dump_config, read_yaml
from ..errors import UserError
from ..methods import MethodContext, build_method
from ..plots import plot_training_curves
from .checkpoint import (FORMAT, _atomic_write, read_json_object, atomic_write_json, atomic_write_text, load_checkpoint, model_checkpoint,
                         rng_state, set_rng_state)
from .distributed import (DistInfo, all_reduce_sum, barrier, cleanup_distributed, distributed_errors,
                          init_distributed, on_main)
from .frozen_teacher import serve_teacher
from .logging import EpochProgress, MetricsLogger, console, last_evaluated_record, truncate_metrics
from .precision import autocast, resolve_precision
from .rundir import (MARKER, RUN_FILES, RUN_SUBDIRS, check_creatable, check_name, clean_stale_tmp, folder_mark,
                     foreign_entries, has_resumable_run, mark_folder, remove_run_folder)
from .schedule import lr_factor


# ----------------------------------------------------------------------------------------------------------- setup
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device={name} but no CUDA device is available; use train.device=cpu")
    return torch.device(name)


def amp_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """The run's autocast dtype (None: fp32): ``train.amp`` resolved by :func:`~aidkd.engine.precision.resolve_precision`."""
    return resolve_precision(cfg.train.amp, device).dtype


def seed_everything(seed: int, deterministic: bool = False) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_model_from_config(mcfg, spec, role: str) -> nn.Module:
    """Build the student (``role='model'``) or the teacher from its config section and load its weights."""
    from ..models import create_model, load_weights

    in_chans = getattr(mcfg, "in_chans", None) or spec.input_size[0]
    kwargs = dict(mcfg.kwargs)
    if getattr(mcfg, "pretrained", False):
        kwargs["pretrained"] = mcfg.pretrained
    model = create_model(mcfg.name, num_classes=spec.num_classes, in_chans=in_chans, input_hw=spec.input_size[1], **kwargs)
    if mcfg.checkpoint:
        load_weights(model, mcfg.checkpoint)
    return model


def build_teacher(cfg: RunConfig, data) -> nn.Module | None:
    """The teacher the config describes for the data ``data``: a model, a model's stored outputs on the views of
    the training split (a teacher-views file, :mod:`aidkd.engine.view_cache`) or AID projection targets."""
    t = cfg.teacher
    spec = data.spec
    if t.kind == "logits":
        from .view_cache import serve_views

        if not hasattr(data.train, "replay_views"):
            raise UserError(f"teacher.kind: logits needs an in-memory dataset; dataset {cfg.data.name!r} is read from "
                            "files here: set data.in_memory=on")
        return serve_views(t.checkpoint, data.train, source=str(t.checkpoint), num_classes=spec.num_classes)
    if t.kind == "targets":
        from ..aid.project import TargetTeacher

        teacher = TargetTeacher.load(t.checkpoint)
        teacher.check_fits(spec.num_train, spec.num_classes, f"teacher.checkpoint {t.checkpoint!r}")
        return teacher
    if t.name is None:
        if t.checkpoint:
            raise UserError("teacher.checkpoint is set but teacher.name is not; set teacher.name to its architecture")
        return None
    if not t.checkpoint and not t.pretrained:
        raise UserError(f"teacher {t.name!r} has no weights: set teacher.checkpoint to a trained teacher's checkpoint")
    return build_model_from_config(t, spec, "teacher")


def build_assistants(cfg: RunConfig, data, device: torch.device, dtype, dist_info: DistInfo) -> list[nn.Module]:
    """The further guides of ``cfg.assistants`` (DGKD's teacher assistants), each built and served as a teacher."""
    out = []
    for i, section in enumerate(cfg.assistants):
        acfg = cfg.model_copy(update={"teacher": section})
        model = build_teacher(acfg, data)
        if model is None:
            raise UserError(f"assistants[{i}] names no model: set its name and checkpoint")
        out.append(serve_teacher(acfg, model.to(device).eval(), data, device, dtype, is_main=dist_info.is_main,
                                 wait=barrier, log=console.print))
    return out


#: record keys that measure time, not training (left out of checkpoints)
WALL_CLOCK = ("time.", "train.img_per_s")

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


# ------------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, dtype: torch.dtype | None = None) -> dict:
    """Top-1/top-5 accuracy (%) and mean CE over a (possibly sharded) split; sums are all-reduced."""
    was = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss, count
    for batch in loader:
        with autocast(device, dtype):
            logits = model(batch.images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(batch.labels.view(-1, 1))
        sums[0] += hit[:, 0].sum()
        sums[1] += hit.any(dim=1).sum()
        sums[2] += F.cross_entropy(logits, batch.labels, reduction="sum")
        sums[3] += batch.labels.numel()
    all_reduce_sum(sums)
    model.train(was)
    n = max(sums[3].item(), 1.0)
    return {"top1": 100 * sums[0].item() / n, "top5": 100 * sums[1].item() / n, "loss": sums[2].item() / n, "n": int(sums[3].item())}


class StudentEMA:
    """The exponential moving average of a student's weights and batch-norm statistics: after each step
    ``ema = decay * ema + (1 - decay) * w`` (the first step copies ``w``), integer buffers copied. The update is
    a few ``torch._foreach`` kernels with a host-side step count: torch.optim.swa_utils.AveragedModel reads its
    step count from a tensor and copies it to the device at every update, a host-device synchronisation per step
    on CUDA. ``module`` is the averaged model (evaluated and saved by the engine)."""

    def __init__(self, student: nn.Module, decay: float):
        import copy

        self.module = copy.deepcopy(student).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.steps = decay, 0

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [*model.parameters(), *model.buffers()]

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        pairs = list(zip(self._tensors(self.module), self._tensors(student), strict=True))
        avg = [(a, w.detach()) for a, w in pairs if a.is_floating_point()]
        if self.steps == 0:
            torch._foreach_copy_([a for a, _ in avg], [w for _, w in avg])
        else:
            torch._foreach_lerp_([a for a, _ in avg], [w for _, w in avg], 1.0 - self.decay)
        for a, w in pairs:
            if not a.is_floating_point():
                a.copy_(w)
        self.steps += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])


def selection_split(cfg: RunConfig, has_val: bool) -> str:
    s = cfg.train.select_on
    if s == "auto":
        return "val" if has_val else "last"
    if s == "val" and not has_val:
        raise UserError("train.select_on=val needs a validation split: set data.val_split (e.g. 0.1)")
    return s


def versions() -> dict:
    import torchvision

    return {"aidkd": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


# ----------------------------------------------------------------------------------------------------------- train
def train(cfg: RunConfig, *, overwrite: bool = False,
          on_epoch_end: Callable[[int, dict], None] | None = None, resume_with_changes: bool = False,
          allow_world_size_change: bool = False) -> dict:
    """Train the model of ``cfg`` with its method; return the run summary (also written to summary.json).

    The teacher is the one ``cfg.teacher`` describes (:func:`build_teacher`). To train a config only when it has
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


def check_first_batch(cfg: RunConfig, student: nn.Module, teacher: nn.Module | None, loader, num_classes: int,
                      device: torch.device, dtype: torch.dtype | None) -> None:
    """One evaluation batch through the student and the teacher (eval mode, no gradients, RNG state kept): a
    channel, size or class-count mismatch is a one-line UserError before anything is written."""
    rng = rng_state()
    was = student.training
    try:
        batch = next(iter(loader))
        student.eval()
        with torch.no_grad(), autocast(device, dtype):
            for role, model in (("model", student), ("teacher", teacher)):
                if model is None or getattr(model, "indexed", False):
                    continue
                try:
                    out = model(batch.images)
                except (RuntimeError, ValueError) as e:
                    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                    raise UserError(f"{role} {getattr(cfg, role).name!r} cannot take a batch of {cfg.data.name} "
                                    f"{tuple(batch.images.shape[1:])}: {first}; check {role}.in_chans / "
                                    f"{role}.kwargs against the dataset") from None
                if isinstance(out, torch.Tensor) and (out.dim() != 2 or out.shape[1] != num_classes):
                    raise UserError(f"{role} {getattr(cfg, role).name!r} gives outputs of shape {tuple(out.shape)} "
                                    f"on {cfg.data.name}, which has {num_classes} classes; check {role}.kwargs")
    finally:
        student.train(was)
        set_rng_state(rng)


class NonFiniteMonitor:
    """Watches the training loss for NaN / inf.

    ``stop`` mode keeps, on the device, the first bad step of the epoch and the loss terms at that step
    (:meth:`observe` never synchronises); :meth:`check` reads them on the host (every ``train.log_every`` steps and
    at the end of the epoch) and raises one line naming the first bad step exactly. ``skip`` mode decides on the
    host at every step (:meth:`skip_step`), since skipping an update is a host decision."""

    def __init__(self, cfg: RunConfig, device: torch.device, run_dir: Path, dist_info: DistInfo):
        self.mode, self.limit = cfg.train.on_nonfinite, cfg.train.max_skipped_steps
        self.device, self.run_dir, self.dist = device, run_dir, dist_info
        self.in_a_row = 0
        self.names: list[str] = []
        self.start_epoch(0)

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.bad_terms: torch.Tensor | None = None
        self.skipped = 0

    def observe(self, step: int, loss: torch.Tensor, losses: dict) -> None:
        if not self.names:
            self.names = list(losses)
        terms = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        newly = ~torch.isfinite(loss.detach()) & (self.bad_step < 0)
        self.bad_step = torch.where(newly, torch.full_like(self.bad_step, step), self.bad_step)
        self.bad_terms = terms if self.bad_terms is None else torch.where(newly, terms, self.bad_terms)

    def check(self, epochs_done: int) -> None:
        step = int(self.bad_step.item())
        if step >= 0:
            terms = self.bad_terms.tolist() if self.bad_terms is not None else []
            self._fail(step, dict(zip(self.names, terms, strict=True)), epochs_done, "")

    def skip_step(self, step: int, loss: torch.Tensor, losses: dict, epochs_done: int) -> bool:
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        all_reduce_sum(bad)  # every process skips the same steps (DDP needs the same number of backward passes)
        if bad.item() == 0:
            self.in_a_row = 0
            return False
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            self._fail(step, {k: float(v.detach()) for k, v in losses.items()}, epochs_done,
                       f" ({self.in_a_row} non-finite steps in a row, train.max_skipped_steps={self.limit})")
        return True

    def _fail(self, step: int, terms: dict, epochs_done: int, why: str) -> None:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        bad = [k for k, v in terms.items() if not torch.isfinite(torch.tensor(v))]
        last = self.run_dir / "checkpoints" / "last.pt"
        if epochs_done and last.is_file():
            where = (f"the last good checkpoint is {str(last)!r} (epoch {epochs_done}); lower optim.lr (or change "
                     "sched) and rerun with --resume-with-changes")
        else:
            where = "no epoch finished, so nothing was written; lower optim.lr (or change sched) and rerun"
        alt = ("raise train.max_skipped_steps" if self.mode == "skip"
               else "set train.on_nonfinite=skip to drop such steps")
        raise UserError(f"the loss became non-finite at epoch {self.epoch + 1} step {step}"
                        f"{' in ' + ', '.join(bad) if bad else ''} ({shown}){why}; {where}, or {alt}")


def _train(cfg, device, dist_info: DistInfo, overwrite, on_epoch_end, resume_with_changes,
           allow_world_size_change) -> dict:
    from ..data import build_data
    from ..data.build import train_batch_per_process

    t_start = time.time()
    # 1. the run folder's state is decided first, read-only (every process learns rank 0's decision)
    plan: RunDirPlan = on_main(dist_info, lambda: plan_run_dir(cfg, overwrite, resume_with_changes))
    run_dir = plan.run_dir
    resume = None
    if plan.action == "resume":
        resume = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        if resume.get("format") != FORMAT or "method_state" not in resume:
            raise UserError(f"{run_dir}/checkpoints/last.pt is not an aidkd training checkpoint; pass --overwrite")
        old_world = int(resume.get("world_size", 1))
        if old_world != dist_info.world_size and not allow_world_size_change:
            raise UserError(f"run directory {str(run_dir)!r} was started with {old_world} process(es), this is "
                            f"{dist_info.world_size}: the global batch split and the data order would change; "
                            "rerun with the same number, or pass --allow-world-size-change")

    # 2. everything is built and checked before the folder is touched
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    data = build_data(cfg.data, device=device, rank=dist_info.rank, world_size=dist_info.world_size, seed=cfg.train.seed)
    spec = data.spec
    student = build_model_from_config(cfg.model, spec, "model")
    teacher = build_teacher(cfg, data)
    if teacher is not None:
        teacher = serve_teacher(cfg, teacher.to(device).eval(), data, device, amp_dtype(cfg, device),
                                is_main=dist_info.is_main, wait=barrier, log=console.print)
    ctx = MethodContext(
        num_classes=spec.num_classes, input_size=tuple(spec.input_size), num_train=spec.num_train,
        epochs=cfg.train.epochs, steps_per_epoch=len(data.train), mean=tuple(spec.mean), std=tuple(spec.std),
        train_labels=getattr(data.train, "labels", None),
        batch_size=train_batch_per_process(cfg.data, dist_info.world_size),
    )
    assistants = build_assistants(cfg, data, device, amp_dtype(cfg, device), dist_info)
    method = build_method(cfg.method.name, student, teacher, cfg.method.params, ctx, assistants).to(device)
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last)
        for guide in [teacher, *assistants]:
            if guide is not None:
                guide.to(memory_format=torch.channels_last)
    arch, arch_kwargs = method.deployed_model(cfg.model.name, cfg.model.kwargs)  # what rebuilds the student
    select = selection_split(cfg, data.val is not None)
    precision = resolve_precision(cfg.train.amp, device)
    dtype = precision.dtype
    check_first_batch(cfg, method.student, teacher, data.test, spec.num_classes, device, dtype)

    params = [p for p in method.parameters() if p.requires_grad]
    o = cfg.optim
    if o.name == "sgd":
        opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
    else:
        opt = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    steps_per_epoch = len(data.train)
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(cfg.sched, step / steps_per_epoch, cfg.train.epochs, o.lr)
    )

    ema = None if cfg.train.ema_decay is None else StudentEMA(method.student, cfg.train.ema_decay)
    start_epoch, best, history_best_test = 0, {"acc": -1.0, "epoch": -1}, -1.0
    last_eval: dict = {}
    if resume is not None:
        method.load_state_dict(resume["method_state"])
        if ema is not None:
            ema.load_state_dict(resume["ema_state"])
        _load_optimiser(opt, sched, resume, cfg, plan.changes)
        set_rng_state(resume["rng"])
        start_epoch = int(resume["epoch"])
        best = dict(resume["best"])
        history_best_test = float(resume.get("best_test_epoch_acc", -1.0))
        if dist_info.is_main:
            clean_stale_tmp(run_dir)
            truncate_metrics(run_dir / "metrics.jsonl", start_epoch)
            last_eval = last_evaluated_record(run_dir / "metrics.jsonl")  # kept if no epoch is left to run
            console.print(f"resuming {run_dir} from epoch {start_epoch}"
                          + (f" with changes: {', '.join(plan.changes)}" if plan.changes else ""))
    folder_ready = resume is not None and not plan.changes

    model_for_step: nn.Module = method
    if dist_info.enabled:
        model_for_step = nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None
        )
    step_fn = torch.compile(model_for_step) if cfg.train.compile else model_for_step

    logger = MetricsLogger(run_dir if dist_info.is_main else None, cfg.train.tensorboard, cfg.train.wandb,
                           cfg.model_dump(mode="json"), first_epoch=start_epoch + 1)
    monitor = NonFiniteMonitor(cfg, device, run_dir, dist_info)
    faults = FaultHook.from_env(dist_info.rank)
    skip = cfg.train.on_nonfinite == "skip"
    log_every = cfg.train.log_every
    try:
        with EpochProgress(cfg.train.progress and dist_info.is_main, cfg.train.epochs) as bar:
            for epoch in range(start_epoch, cfg.train.epochs):
                t0 = time.perf_counter()
                data.train.set_epoch(epoch)
                method.train()
                monitor.start_epoch(epoch)
                sums: dict[str, torch.Tensor] = {}
                correct = torch.zeros((), device=device)
                seen = 0
                shown_loss = float("nan")
                bar.start_epoch(epoch, steps_per_epoch)
                for step, batch in enumerate(data.train):
                    if step >= steps_per_epoch:
                        break
                    if cfg.train.channels_last:
                        batch = replace(batch, images=batch.images.contiguous(memory_format=torch.channels_last))
                    with autocast(device, dtype):
                        logits, losses = step_fn(batch, epoch)
                    loss = sum(losses.values())
                    opt.zero_grad(set_to_none=True)
                    if skip:
                        if monitor.skip_step(step, loss, losses, epoch):
                            sched.step()
                            continue
                    else:
                        monitor.observe(step, loss, losses)
                    loss.backward()  # bf16 autocast needs no loss scaling
                    opt.step()
                    sched.step()
                    if ema is not None:
                        ema.update(method.student)
                    n = batch.labels.numel()
                    seen += n
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + v.detach().float() * n
                    correct += (logits.detach().argmax(1) == batch.labels).sum()
                    if step % log_every == 0:  # host reads synchronise with the device: not every step
                        shown_loss = loss.item()
                        if not skip:
                            monitor.check(epoch)
                    bar.update(seen * dist_info.world_size, shown_loss)
                    faults.point("step")
                bar.end_epoch()
                if not skip:
                    monitor.check(epoch)
                train_time = time.perf_counter() - t0

                keys = sorted(sums)
                stats = torch.stack([sums[k] for k in keys] + [correct.float(), torch.tensor(float(seen), device=device)])
                all_reduce_sum(stats)
                total_seen = max(stats[-1].item(), 1.0)
                record = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]}
                for i, k in enumerate(keys):
                    record[f"train.{k}"] = stats[i].item() / total_seen
                record["train.loss"] = sum(record[f"train.{k}"] for k in keys)
                record["train.top1"] = 100 * stats[-2].item() / total_seen
                record["train.img_per_s"] = total_seen / max(train_time, 1e-9)
                record["time.train_s"] = train_time
                if skip:
                    record["train.skipped_steps"] = monitor.skipped
                is_last = epoch + 1 == cfg.train.epochs
                evaluated = method.student if ema is None else ema.module  # the student the run reports and saves
                if (epoch + 1) % cfg.train.eval_every == 0 or is_last:
                    if data.val is not None:
                        v = evaluate(evaluated, data.val, device, dtype)
                        record.update({"val.top1": v["top1"], "val.top5": v["top5"], "val.loss": v["loss"]})
                    te = evaluate(evaluated, data.test, device, dtype)
                    record.update({"test.top1": te["top1"], "test.top5": te["top5"], "test.loss": te["loss"]})
                    if ema is not None:  # the raw weights' accuracy, beside the average's
                        record["test.raw_top1"] = evaluate(method.student, data.test, device, dtype)["top1"]
                    history_best_test = max(history_best_test, te["top1"])
                    last_eval = record
                    score = record["val.top1"] if select == "val" else record["test.top1"]
                    improved = select != "last" and score > best["acc"]
                    if select == "last" or improved:
                        best = {"acc": score, "epoch": epoch + 1, "test.top1": te["top1"],
                                "val.top1": record.get("val.top1")}
                else:
                    improved = False
                record["time.epoch_s"] = time.perf_counter() - t0

                if dist_info.is_main:
                    if not folder_ready:
                        _create_run_dir(plan, cfg, start_epoch)
                        folder_ready = True
                    ck = model_checkpoint(evaluated, arch, spec, arch_kwargs, cfg.recorded(), epoch + 1,
                                          cfg.model.in_chans)
                    logger.log(record)  # before last.pt: a kill in between is repaired by the resume's truncation
                    faults.point("metrics")
                    if improved or (select == "last" and is_last):
                        # no wall-clock values: a checkpoint is a function of its config, so content hashes of it
                        # (the pipeline's stage fingerprints) agree between reruns
                        measured = {k: v for k, v in record.items() if isinstance(v, float) and not k.startswith(WALL_CLOCK)}
                        _save_run_checkpoint({**ck, "metrics": measured},
                                        run_dir / "checkpoints" / "best.pt", faults)
                    _save_run_checkpoint({**ck, "method_state": method.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict(),
                                     **({} if ema is None else {"ema_state": ema.state_dict()}),
                                     "rng": rng_state(), "best": best, "best_test_epoch_acc": history_best_test,
                                     "world_size": dist_info.world_size},
                                    run_dir / "checkpoints" / "last.pt", faults)
                    if cfg.train.progress:
                        console.print(_epoch_line(record, cfg.train.epochs))
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
    finally:
        logger.close()

    summary = {
        "run_dir": str(run_dir), "arch": arch, "method": cfg.method.name, "teacher": cfg.teacher.name,
        "student_params": sum(p.numel() for p in method.student.parameters()),
        **({"student_parts": method.student.parameter_counts()} if hasattr(method.student, "parameter_counts") else {}),
        "dataset": cfg.data.name, "seed": cfg.train.seed, "epochs": cfg.train.epochs,
        "selection": select, "best_acc": best["acc"], "best_epoch": best["epoch"],
        "best_test_acc": best.get("test.top1"),
        "last_test_acc": last_eval.get("test.top1"), "last_test_top5": last_eval.get("test.top5"),
        **({} if ema is None else {"last_test_raw_acc": last_eval.get("test.raw_top1")}),
        "last_val_acc": last_eval.get("val.top1"), "best_test_epoch_acc": history_best_test,
        "wall_time_s": time.time() - t_start if resume is None else None,
        "world_size": dist_info.world_size, "device": str(device), "precision": precision.name,
        "precision_reason": precision.reason, "versions": versions(),
        "fingerprint": cfg.fingerprint(),
    }
    if dist_info.is_main:
        if not folder_ready:
            _create_run_dir(plan, cfg, start_epoch)
        if resume is not None:  # wall time of a resumed run: sum of the recorded epoch times
            summary["wall_time_s"] = _recorded_time(run_dir)
        plot_training_curves(run_dir)  # before the summary: a run is finished only with its plot
        atomic_write_json(run_dir / "summary.json", summary)
    barrier()
    return summary


def _load_optimiser(opt, sched, resume: dict, cfg: RunConfig, changes: dict) -> None:
    """Restore the optimiser and schedule of ``resume``; with accepted ``changes`` the new ``optim`` / ``sched``
    values replace the recorded ones (a changed ``optim.name`` starts a fresh optimiser state)."""
    if "optim.name" not in changes:
        opt.load_state_dict(resume["optimizer"])
    sched.load_state_dict(resume["scheduler"])
    if not changes:
        return
    o = cfg.optim
    sched.base_lrs = [o.lr for _ in opt.param_groups]
    lrs = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, sched.lr_lambdas, strict=True)]
    for g, lr in zip(opt.param_groups, lrs, strict=True):
        g["initial_lr"] = o.lr
        g["lr"] = lr
        g["weight_decay"] = o.weight_decay
        if o.name == "sgd":
            g["momentum"], g["nesterov"] = o.momentum, o.nesterov
        else:
            g["betas"] = tuple(o.betas)
    sched._last_lr = [g["lr"] for g in opt.param_groups]


def _save_run_checkpoint(obj: dict, path: Path, faults: "FaultHook") -> None:
    """:func:`aidkd.engine.checkpoint.save_checkpoint`, with the test hook's ``checkpoint`` point half-way
    through the bytes (before the rename), when the hook is armed."""
    if not faults.armed("checkpoint"):
        _atomic_write(path, lambda f: torch.save(obj, f))
        return
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()

    def write(f):
        f.write(data[: len(data) // 2])
        f.flush()
        faults.point("checkpoint")
        f.write(data[len(data) // 2:])

    _atomic_write(path, write)


class FaultHook:
    """A test hook for fault injection: ``AIDKD_FAULT=KIND:N`` makes this process SIGKILL itself at the N-th
    ``KIND`` point of the run (``step``: after an optimiser step; ``metrics``: after an epoch's metrics line;
    ``checkpoint``: half-way through writing a checkpoint file); ``AIDKD_FAULT_RANK=R`` limits it to rank R;
    ``AIDKD_FAULT_SIGNAL=STOP`` stops the process (SIGSTOP, a stalled peer) instead of killing it. Unset (always,
    outside the fault tests) it does nothing. Counts are per process."""

    _counts: dict[str, int] = {}  # per process, across the runs it makes (a pipeline's stages)

    def __init__(self, kind: str | None = None, at: int = 0, sig: int = signal.SIGKILL):
        self.kind, self.at, self.sig = kind, at, sig

    @classmethod
    def from_env(cls, rank: int) -> "FaultHook":
        spec = os.environ.get("AIDKD_FAULT")
        want_rank = os.environ.get("AIDKD_FAULT_RANK")
        if not spec or (want_rank is not None and int(want_rank) != rank):
            return cls()
        kind, at = spec.split(":")
        return cls(kind, int(at), getattr(signal, "SIG" + os.environ.get("AIDKD_FAULT_SIGNAL", "KILL")))

    def armed(self, kind: str) -> bool:
        return self.kind == kind

    def point(self, kind: str) -> None:
        if self.kind != kind:
            return
        n = self._counts[kind] = self._counts.get(kind, 0) + 1
        if n == self.at:
            os.kill(os.getpid(), self.sig)


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
