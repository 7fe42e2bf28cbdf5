"""The training recipe in pieces: :func:`setup` builds a run (data, student, teacher, method, optimiser, schedule,
EMA, DDP), :func:`train_step` takes one optimisation step, :func:`train_epoch` one epoch, :func:`evaluate_epoch`
evaluates and selects, :func:`save` writes the checkpoints and :func:`resume` restores them. :func:`aidkd.engine.train`
composes them with the run folder's rules. The optimisation itself (the optimiser, the per-step schedule, one update)
is :mod:`aidkd.engine.optim`'s, which AID's teacher adaptation (:class:`aidkd.aid.objective.TeacherAdapter`, in every
objective, offline and online) steps with too; the throughput benchmark times :func:`train_step` on a
:func:`setup` run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import RunConfig
from ..data import DataBundle, build_data
from ..data.base import Batch
from ..data.build import train_batch_per_process
from ..errors import UserError
from ..files.checkpoint import model_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..methods import METHODS, Method, MethodContext, build_method
from ..models import build_model
from ..teachers import Teacher, build_teacher, runs_images
from .distributed import DistInfo, all_reduce_sum, barrier
from .ema import StudentEMA
from .nonfinite import NonFiniteMonitor
from .optim import make_optimizer, make_schedule, optimizer_step
from .precision import Precision, autocast, resolve_precision
from .runtime import seed_everything
from .schedule import lr_factor

#: record keys that measure time, not training (left out of checkpoints)
WALL_CLOCK = ("time.", "train.img_per_s")


@dataclass
class TrainingRun:
    """One run's parts, as the recipe's pieces share them. ``step_fn`` is the method as it steps (DDP-wrapped,
    compiled where the config says so); the counters (``start_epoch``, ``best``, ``best_test``, ``last_eval``)
    are what a checkpoint restores."""

    cfg: RunConfig
    device: torch.device
    dist: DistInfo
    data: DataBundle
    method: Method
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    ema: StudentEMA | None
    step_fn: nn.Module
    precision: Precision
    select: str  # the split the best epoch is chosen on: val | test | last
    arch: str  # what rebuilds the student from a checkpoint
    arch_kwargs: dict
    steps_per_epoch: int
    start_epoch: int = 0
    best: dict = field(default_factory=lambda: {"acc": -1.0, "epoch": -1})
    best_test: float = -1.0
    last_eval: dict = field(default_factory=dict)

    @property
    def dtype(self) -> torch.dtype | None:
        return self.precision.dtype

    @property
    def evaluated(self) -> nn.Module:
        """The student the run reports and saves: the EMA's average where there is one."""
        return self.method.student if self.ema is None else self.ema.module


# ------------------------------------------------------------------------------------------------- setup
def setup(cfg: RunConfig, device: torch.device, dist: DistInfo, log=print) -> TrainingRun:
    """Everything a run trains with, built and checked (one batch through the student and the teacher) before
    anything is written: data, student, teacher and assistants, method, optimiser, schedule, EMA, DDP."""
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    data = build_data(cfg.data, device=device, rank=dist.rank, world_size=dist.world_size, seed=cfg.train.seed)
    spec = data.spec
    student = build_model(cfg.model, spec)
    precision = resolve_precision(cfg.train.amp, device)
    needs = METHODS.get(cfg.method.name).teacher_needs()

    def guide(section):
        return build_teacher(section, cfg, data, device, precision.dtype, needs, is_main=dist.is_main, wait=barrier,
                             log=log)

    teacher = guide(cfg.teacher)
    ctx = MethodContext(
        num_classes=spec.num_classes, input_size=tuple(spec.input_size), num_train=spec.num_train,
        epochs=cfg.train.epochs, steps_per_epoch=len(data.train), mean=tuple(spec.mean), std=tuple(spec.std),
        train_labels=getattr(data.train, "labels", None),
        batch_size=train_batch_per_process(cfg.data, dist.world_size),
    )
    assistants = []
    for i, section in enumerate(cfg.assistants):
        served = guide(section)
        if served is None:
            raise UserError(f"assistants[{i}] names no model: set its name and checkpoint")
        assistants.append(served)
    method = build_method(cfg.method.name, student, teacher, cfg.method.params, ctx, assistants).to(device)
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last)
        for g in [method.teacher, *method.assistants]:
            if g is not None:
                g.to(memory_format=torch.channels_last)
    arch, arch_kwargs = method.deployed_model(cfg.model.name, cfg.model.kwargs)
    select = selection_split(cfg, data.val is not None)
    check_first_batch(cfg, method.student, method.teacher, data.test, spec.num_classes, device, precision.dtype)

    optimizer = make_optimizer([p for p in method.parameters() if p.requires_grad], cfg.optim)
    steps_per_epoch = len(data.train)
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    schedule = make_schedule(optimizer, lambda step: lr_factor(cfg.sched, step / steps_per_epoch, cfg.train.epochs,
                                                               cfg.optim.lr))
    ema = None if cfg.train.ema_decay is None else StudentEMA(method.student, cfg.train.ema_decay)
    step_fn: nn.Module = method
    if dist.enabled:
        step_fn = nn.parallel.DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        step_fn = torch.compile(step_fn)
    return TrainingRun(cfg, device, dist, data, method, optimizer, schedule, ema, step_fn, precision, select, arch,
                       arch_kwargs, steps_per_epoch)


def selection_split(cfg: RunConfig, has_val: bool) -> str:
    s = cfg.train.select_on
    if s == "auto":
        return "val" if has_val else "last"
    if s == "val" and not has_val:
        raise UserError("train.select_on=val needs a validation split: set data.val_split (e.g. 0.1)")
    return s


def check_first_batch(cfg: RunConfig, student: nn.Module, teacher: Teacher | None, loader, num_classes: int,
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
                if model is None or not runs_images(model):
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


# ------------------------------------------------------------------------------------------------ training
def train_step(run: TrainingRun, batch: Batch, epoch: int, step: int = 0, monitor: NonFiniteMonitor | None = None
               ) -> tuple[Tensor, dict[str, Tensor]] | None:
    """One optimisation step of the method on ``batch``; returns the student's logits and the loss terms, or None
    when ``train.on_nonfinite: skip`` dropped the step. ``monitor`` watches the loss (None: unwatched)."""
    if run.cfg.train.channels_last:
        batch = replace(batch, images=batch.images.contiguous(memory_format=torch.channels_last))
    with autocast(run.device, run.dtype):
        logits, losses = run.step_fn(batch, epoch)
    loss = sum(losses.values())
    if monitor is not None and monitor.mode == "skip":
        if monitor.skip_step(step, loss, losses, epoch):
            run.optimizer.zero_grad(set_to_none=True)
            run.schedule.step()
            return None
    elif monitor is not None:
        monitor.observe(step, loss, losses)
    optimizer_step(loss, run.optimizer, run.schedule)
    if run.ema is not None:
        run.ema.update(run.method.student)
    return logits, losses


def train_epoch(run: TrainingRun, epoch: int, monitor: NonFiniteMonitor, bar) -> dict:
    """One epoch of :func:`train_step`; returns the epoch's record of training numbers (the loss terms and the
    training accuracy averaged over every process's samples, the speed)."""
    t0 = time.perf_counter()
    run.data.train.set_epoch(epoch)
    run.method.train()
    monitor.start_epoch(epoch)
    sums: dict[str, Tensor] = {}
    correct = torch.zeros((), device=run.device)
    seen = 0
    shown_loss = float("nan")
    skip = monitor.mode == "skip"
    bar.start_epoch(epoch, run.steps_per_epoch)
    for step, batch in enumerate(run.data.train):
        if step >= run.steps_per_epoch:
            break
        out = train_step(run, batch, epoch, step, monitor)
        if out is None:
            continue
        logits, losses = out
        n = batch.labels.numel()
        seen += n
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float() * n
        correct += (logits.detach().argmax(1) == batch.labels).sum()
        if step % run.cfg.train.log_every == 0:  # host reads synchronise with the device: not every step
            shown_loss = float(sum(losses.values()).item())
            if not skip:
                monitor.check(epoch)
        bar.update(seen * run.dist.world_size, shown_loss)
    bar.end_epoch()
    if not skip:
        monitor.check(epoch)
    train_time = time.perf_counter() - t0
    keys = sorted(sums)
    stats = torch.stack([sums[k] for k in keys] + [correct.float(), torch.tensor(float(seen), device=run.device)])
    all_reduce_sum(stats)
    total_seen = max(stats[-1].item(), 1.0)
    record = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"]}
    for i, k in enumerate(keys):
        record[f"train.{k}"] = stats[i].item() / total_seen
    record["train.loss"] = sum(record[f"train.{k}"] for k in keys)
    record["train.top1"] = 100 * stats[-2].item() / total_seen
    record["train.img_per_s"] = total_seen / max(train_time, 1e-9)
    record["time.train_s"] = train_time
    if skip:
        record["train.skipped_steps"] = monitor.skipped
    return record


# ---------------------------------------------------------------------------------------------- evaluation
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
    return {"top1": 100 * sums[0].item() / n, "top5": 100 * sums[1].item() / n, "loss": sums[2].item() / n,
            "n": int(sums[3].item())}


def evaluate_epoch(run: TrainingRun, epoch: int, record: dict) -> bool:
    """Evaluate the reported student after ``epoch`` (every ``train.eval_every`` epochs and at the last) into
    ``record``, and update the selection; returns whether this epoch is the new best."""
    is_last = epoch + 1 == run.cfg.train.epochs
    if (epoch + 1) % run.cfg.train.eval_every != 0 and not is_last:
        return False
    model, data, device, dtype = run.evaluated, run.data, run.device, run.dtype
    if data.val is not None:
        v = evaluate(model, data.val, device, dtype)
        record.update({"val.top1": v["top1"], "val.top5": v["top5"], "val.loss": v["loss"]})
    te = evaluate(model, data.test, device, dtype)
    record.update({"test.top1": te["top1"], "test.top5": te["top5"], "test.loss": te["loss"]})
    if run.ema is not None:  # the raw weights' accuracy, beside the average's
        record["test.raw_top1"] = evaluate(run.method.student, data.test, device, dtype)["top1"]
    run.best_test = max(run.best_test, te["top1"])
    run.last_eval = record
    score = record["val.top1"] if run.select == "val" else record["test.top1"]
    improved = run.select != "last" and score > run.best["acc"]
    if run.select == "last" or improved:
        run.best = {"acc": score, "epoch": epoch + 1, "test.top1": te["top1"], "val.top1": record.get("val.top1")}
    return improved


# ---------------------------------------------------------------------------------------------- checkpoints
def save(run: TrainingRun, run_dir: Path, epoch: int, record: dict, improved: bool) -> None:
    """``best.pt`` when the epoch is the selected one, and ``last.pt`` (everything :func:`resume` needs)."""
    spec = run.data.spec
    ck = model_checkpoint(run.evaluated, run.arch, spec, run.arch_kwargs, run.cfg.recorded(), epoch + 1,
                          run.cfg.model.in_chans)
    if improved or (run.select == "last" and epoch + 1 == run.cfg.train.epochs):
        # no wall-clock values: a checkpoint is a function of its config, so content hashes of it (the pipeline's
        # stage fingerprints) agree between reruns
        measured = {k: v for k, v in record.items() if isinstance(v, float) and not k.startswith(WALL_CLOCK)}
        save_checkpoint({**ck, "metrics": measured}, run_dir / "checkpoints" / "best.pt")
    save_checkpoint({**ck, "method_state": run.method.state_dict(), "optimizer": run.optimizer.state_dict(),
                     "scheduler": run.schedule.state_dict(),
                     **({} if run.ema is None else {"ema_state": run.ema.state_dict()}),
                     "rng": rng_state(), "best": run.best, "best_test_epoch_acc": run.best_test,
                     "world_size": run.dist.world_size},
                    run_dir / "checkpoints" / "last.pt")


def resume(run: TrainingRun, state: dict, changes: dict) -> None:
    """Restore a run from its ``last.pt`` contents; accepted ``changes`` (``resume_with_changes``) replace the
    recorded ``optim`` / ``sched`` values (a changed ``optim.name`` starts a fresh optimiser state)."""
    run.method.load_state_dict(state["method_state"])
    if run.ema is not None:
        run.ema.load_state_dict(state["ema_state"])
    opt, sched = run.optimizer, run.schedule
    if "optim.name" not in changes:
        opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if changes:
        o = run.cfg.optim
        sched.base_lrs = [o.lr for _ in opt.param_groups]
        lrs = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, sched.lr_lambdas, strict=True)]
        for g, lr in zip(opt.param_groups, lrs, strict=True):
            g["initial_lr"], g["lr"], g["weight_decay"] = o.lr, lr, o.weight_decay
            if o.name == "sgd":
                g["momentum"], g["nesterov"] = o.momentum, o.nesterov
            else:
                g["betas"] = tuple(o.betas)
        sched._last_lr = [g["lr"] for g in opt.param_groups]
    set_rng_state(state["rng"])
    run.start_epoch = int(state["epoch"])
    run.best = dict(state["best"])
    run.best_test = float(state.get("best_test_epoch_acc", -1.0))


__all__ = ["WALL_CLOCK", "TrainingRun", "check_first_batch", "evaluate", "evaluate_epoch", "resume", "save",
           "selection_split", "setup", "train_epoch", "train_step"]
