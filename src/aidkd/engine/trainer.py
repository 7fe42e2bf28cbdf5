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

Rerunning the same config resumes an unfinished run from ``last.pt``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..config import RunConfig, config_from_dict, dump_config
from ..errors import UserError
from ..methods import MethodContext, build_method
from ..plots import plot_training_curves
from .checkpoint import (FORMAT, atomic_write_json, atomic_write_text, load_checkpoint, model_checkpoint, rng_state,
                         save_checkpoint, set_rng_state)
from .frozen_teacher import serve_teacher
from .distributed import DistInfo, all_reduce_sum, barrier, broadcast_object, cleanup_distributed, init_distributed
from .logging import EpochProgress, MetricsLogger, console, truncate_metrics
from .schedule import lr_factor


# ----------------------------------------------------------------------------------------------------------- setup
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device={name} but no CUDA device is available; use train.device=cpu")
    return torch.device(name)


def amp_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    if cfg.train.amp == "off" or (cfg.train.amp == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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


def build_teacher(cfg: RunConfig, spec) -> nn.Module | None:
    """The teacher the config describes: a model, a table of cached logits or AID projection targets."""
    t = cfg.teacher
    if t.kind != "model":
        if t.kind == "logits":
            from .teacher_cache import CachedTeacher

            teacher = CachedTeacher.load(t.checkpoint)
        else:
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


def prepare_run_dir(cfg: RunConfig, overwrite: bool) -> tuple[Path, dict | None]:
    """Create the run directory; return it and the checkpoint to resume from (if any).

    An existing directory is only replaced with ``overwrite``; an unfinished run of the same config resumes; a
    finished run or a different config is refused with a message saying what to do.
    """
    run_dir = Path(cfg.output.dir) / cfg.run_name()
    last = run_dir / "checkpoints" / "last.pt"
    if run_dir.exists() and any(run_dir.iterdir()):
        if overwrite:
            shutil.rmtree(run_dir)
        else:
            summary = run_dir / "summary.json"
            if summary.exists():
                raise UserError(
                    f"run directory {str(run_dir)!r} already holds a finished run; pass --overwrite to replace it "
                    "or set output.name to keep both"
                )
            cfg_file = run_dir / "config.yaml"
            if cfg_file.exists():
                import yaml

                old = config_from_dict(yaml.safe_load(cfg_file.read_text()), str(cfg_file))
                if old.fingerprint() != cfg.fingerprint():
                    raise UserError(
                        f"run directory {str(run_dir)!r} holds an unfinished run of a different config; pass "
                        "--overwrite to replace it or set output.name"
                    )
            if last.exists():
                return run_dir, load_checkpoint(last)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, None


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
          on_epoch_end: Callable[[int, dict], None] | None = None) -> dict:
    """Train the model of ``cfg`` with its method; return the run summary (also written to summary.json).

    The teacher is the one ``cfg.teacher`` describes (:func:`build_teacher`). To train a config only when it has
    no finished run, use :func:`aidkd.stages.train_stage`.
    """
    device = resolve_device(cfg.train.device)
    dist_info = init_distributed(device.type)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    try:
        return _train(cfg, device, dist_info, overwrite, on_epoch_end)
    finally:
        if dist_info.enabled:
            cleanup_distributed()


def _train(cfg, device, dist_info: DistInfo, overwrite, on_epoch_end) -> dict:
    from ..data import build_data

    t_start = time.time()
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    data = build_data(cfg.data, device=device, rank=dist_info.rank, world_size=dist_info.world_size, seed=cfg.train.seed)
    spec = data.spec
    student = build_model_from_config(cfg.model, spec, "model")
    teacher = build_teacher(cfg, spec)
    if teacher is not None:
        teacher = serve_teacher(cfg, teacher.to(device).eval(), data, device, amp_dtype(cfg, device),
                                is_main=dist_info.is_main, wait=barrier, log=console.print)
    ctx = MethodContext(
        num_classes=spec.num_classes, input_size=tuple(spec.input_size), num_train=spec.num_train,
        epochs=cfg.train.epochs, steps_per_epoch=len(data.train), mean=tuple(spec.mean), std=tuple(spec.std),
        train_labels=getattr(data.train, "labels", None),
    )
    method = build_method(cfg.method.name, student, teacher, cfg.method.params, ctx).to(device)
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)

    # the run directory is touched only once everything has been built, so a bad config leaves nothing behind
    resume = None
    run_dir = None
    if dist_info.is_main:
        run_dir, resume = prepare_run_dir(cfg, overwrite)
        atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    if dist_info.enabled:  # every rank resumes from the same checkpoint
        run_dir = Path(broadcast_object(str(run_dir)))
        has_resume = broadcast_object(resume is not None)
        if has_resume and resume is None:
            resume = load_checkpoint(run_dir / "checkpoints" / "last.pt")

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
    dtype = amp_dtype(cfg, device)

    select = selection_split(cfg, data.val is not None)
    start_epoch, best, history_best_test = 0, {"acc": -1.0, "epoch": -1}, -1.0
    if resume is not None:
        if resume.get("format") != FORMAT or "method_state" not in resume:
            raise UserError(f"{run_dir}/checkpoints/last.pt is not an aidkd training checkpoint; pass --overwrite")
        method.load_state_dict(resume["method_state"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        set_rng_state(resume["rng"])
        start_epoch = int(resume["epoch"])
        best = dict(resume["best"])
        history_best_test = float(resume.get("best_test_epoch_acc", -1.0))
        if dist_info.is_main:
            truncate_metrics(run_dir / "metrics.jsonl", start_epoch)
            console.print(f"resuming {run_dir} from epoch {start_epoch}")

    model_for_step: nn.Module = method
    if dist_info.enabled:
        model_for_step = nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None
        )
    step_fn = torch.compile(model_for_step) if cfg.train.compile else model_for_step

    logger = MetricsLogger(run_dir if dist_info.is_main else None, cfg.train.tensorboard, cfg.train.wandb,
                           cfg.model_dump(mode="json"))
    last_eval: dict = {}
    try:
        with EpochProgress(cfg.train.progress and dist_info.is_main, cfg.train.epochs) as bar:
            for epoch in range(start_epoch, cfg.train.epochs):
                t0 = time.perf_counter()
                data.train.set_epoch(epoch)
                method.train()
                sums: dict[str, torch.Tensor] = {}
                correct = torch.zeros((), device=device)
                seen = 0
                bar.start_epoch(epoch, steps_per_epoch)
                for step, batch in enumerate(data.train):
                    if step >= steps_per_epoch:
                        break
                    if cfg.train.channels_last:
                        batch = dataclasses.replace(batch, images=batch.images.contiguous(memory_format=torch.channels_last))
                    with autocast(device, dtype):
                        logits, losses = step_fn(batch, epoch)
                    loss = sum(losses.values())
                    if not torch.isfinite(loss):
                        raise RuntimeError(f"loss became {loss.item()} at epoch {epoch + 1} step {step}: "
                                           f"{ {k: v.item() for k, v in losses.items()} }")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()  # bf16 autocast needs no loss scaling
                    opt.step()
                    sched.step()
                    n = batch.labels.numel()
                    seen += n
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + v.detach().float() * n
                    correct += (logits.detach().argmax(1) == batch.labels).sum()
                    if step % 20 == 0:  # .item() synchronises with the device: not every step
                        shown_loss = loss.item()
                    bar.update(seen * dist_info.world_size, shown_loss)
                bar.end_epoch()
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

                is_last = epoch + 1 == cfg.train.epochs
                if (epoch + 1) % cfg.train.eval_every == 0 or is_last:
                    if data.val is not None:
                        v = evaluate(method.student, data.val, device, dtype)
                        record.update({"val.top1": v["top1"], "val.top5": v["top5"], "val.loss": v["loss"]})
                    te = evaluate(method.student, data.test, device, dtype)
                    record.update({"test.top1": te["top1"], "test.top5": te["top5"], "test.loss": te["loss"]})
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
                    ck = model_checkpoint(method.student, cfg.model.name, spec, cfg.model.kwargs,
                                          cfg.model_dump(mode="json"), epoch + 1, cfg.model.in_chans)
                    if improved or (select == "last" and is_last):
                        save_checkpoint({**ck, "metrics": {k: v for k, v in record.items() if isinstance(v, float)}},
                                        run_dir / "checkpoints" / "best.pt")
                    save_checkpoint({**ck, "method_state": method.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict(),
                                     "rng": rng_state(), "best": best, "best_test_epoch_acc": history_best_test},
                                    run_dir / "checkpoints" / "last.pt")
                    logger.log(record)
                    if cfg.train.progress:
                        console.print(_epoch_line(record, cfg.train.epochs))
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
    finally:
        logger.close()

    summary = {
        "run_dir": str(run_dir), "arch": cfg.model.name, "method": cfg.method.name, "teacher": cfg.teacher.name,
        "dataset": cfg.data.name, "seed": cfg.train.seed, "epochs": cfg.train.epochs,
        "selection": select, "best_acc": best["acc"], "best_epoch": best["epoch"],
        "best_test_acc": best.get("test.top1"),
        "last_test_acc": last_eval.get("test.top1"), "last_test_top5": last_eval.get("test.top5"),
        "last_val_acc": last_eval.get("val.top1"), "best_test_epoch_acc": history_best_test,
        "wall_time_s": time.time() - t_start if resume is None else None,
        "world_size": dist_info.world_size, "device": str(device), "versions": versions(),
        "fingerprint": cfg.fingerprint(),
    }
    if dist_info.is_main:
        if resume is not None:  # wall time of a resumed run: sum of the recorded epoch times
            summary["wall_time_s"] = _recorded_time(run_dir)
        atomic_write_json(run_dir / "summary.json", summary)
        plot_training_curves(run_dir)
    barrier()
    return summary


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
    p = Path(run_dir) / "summary.json"
    return json.loads(p.read_text()) if p.exists() else None
