"""AID: adapt the teacher to what the student can learn, before distillation (docs/aid.md section 3).

Fine-tuning mode: a copy T of the trained teacher T0 is fine-tuned for E_a epochs on class-balanced batches with

    L_AID = lambda_ce CE(z^T, y) + lambda_ic L_IC(T -> X) + lambda_cs L_CS(T0 -> T)

where X is the reference student S_ref (``ic_target="reference"``) or the tempered targets computed per batch
from T0's outputs (``ic_target="tempered"``, docs/aid.md); S_ref and T0 are frozen in eval mode and only T
receives gradients. Projection mode (``mode="projection"``) computes the adapted targets in closed form instead
(:mod:`aidkd.aid.project`) and returns a :class:`~aidkd.aid.project.TargetTeacher`.

:func:`adapt_teacher` returns the adapted teacher and an :class:`AIDReport` (accuracy before/after with a loud
warning past the tolerance, L_CS/L_IC between teacher and S_ref before/after, wall time).
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from ..errors import UserError
from ..losses.decomposition import kd_decomposition
from ..progress import progress_enabled, track_images
from .project import project_teacher, projection_targets
from .split import SplitDecomposition, split_decomposition, split_decomposition_from_logits, unpack_batch

log = logging.getLogger(__name__)


class AIDParams(BaseModel):
    """Every AID option, with its default (docs/aid.md section 4)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    mode: Literal["finetune", "projection"] = "finetune"
    # which student stands for "what the student can learn": the pipeline builds it; adapt_teacher receives it
    reference: Literal["distilled", "vanilla", "checkpoint"] = "distilled"
    reference_checkpoint: Optional[str] = None  # with reference: checkpoint
    tau: float = Field(4.0, gt=0)  # temperature of every distribution in the AID loss / the projection
    lambda_ce: float = Field(1.0, ge=0)  # weight of CE(z^T, y): keeps the teacher accurate
    lambda_ic: float = Field(1.0, ge=0)  # weight of L_IC(T -> S_ref or tempered target): the degree of adaptation
    lambda_cs: float = Field(1.0, ge=0)  # weight of L_CS(T0 -> T): keeps T0's class-wise similarity
    epochs: Optional[int] = Field(None, ge=0)  # E_a; None: epochs_fraction of the distillation epochs
    epochs_fraction: float = Field(0.1, gt=0, le=1)
    lr: float = Field(0.01, gt=0)  # SGD, cosine decay per step to min_lr
    min_lr: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    K: int = Field(8, ge=2)  # samples per class in a class-balanced batch
    P: Optional[int] = Field(None, ge=1)  # classes per batch; None: the data layer's choice (batch size / K)
    detach_class_weights: bool = True  # detach m_k(c) inside L_IC: move mass among samples, not class means
    ic_target: Literal["reference", "tempered"] = "reference"
    beta: Optional[float] = Field(None, gt=0, le=1)  # tempered target: given, or None = bisection on entropy
    entropy_weights: Literal["teacher", "own"] = "teacher"  # weights of the reference's entropy in the bisection
    alpha: float = Field(1.0, ge=0, le=1)  # projection: 0 = teacher's own targets, 1 = p*
    sinkhorn_iters: int = Field(50, ge=1)
    freeze_bn: bool = False  # fine-tune with the teacher's batch-norm statistics frozen (eval-mode BN)
    acc_tolerance: float = Field(1.0, ge=0)  # accuracy points the adapted teacher may lose before the warning

    @model_validator(mode="after")
    def _check(self):
        if self.reference == "checkpoint" and not self.reference_checkpoint:
            raise ValueError("reference 'checkpoint' needs reference_checkpoint")
        return self

    def num_epochs(self, distill_epochs: int | None = None) -> int:
        """E_a: ``epochs`` when set, else ``epochs_fraction`` of the distillation epochs (at least 1)."""
        if self.epochs is not None:
            return self.epochs
        if distill_epochs is None:
            raise UserError("aid.epochs is not set: set it, or give the distillation epochs to derive it from")
        return max(1, round(self.epochs_fraction * distill_epochs))


# ----------------------------------------------------------------------------------------------------------------
# the loss


def aid_loss(
    teacher_logits: Tensor,
    t0_logits: Tensor | None,
    reference_logits: Tensor | None,
    labels: Tensor,
    tau: float = 4.0,
    lambda_ce: float = 1.0,
    lambda_ic: float = 1.0,
    lambda_cs: float = 1.0,
    detach_class_weights: bool = True,
    ic_target: Literal["reference", "tempered"] = "reference",
    beta: float | None = None,
    entropy_weights: Literal["teacher", "own"] = "teacher",
    sinkhorn_iters: int = 50,
) -> tuple[dict[str, Tensor], dict]:
    """The weighted terms of L_AID for one (class-balanced) batch, and a dict of diagnostics (the beta used).

    ``teacher_logits`` (the adapting teacher T) carries gradients; ``t0_logits`` (frozen T0) and
    ``reference_logits`` (frozen S_ref, or the current student in the online variant) are detached here.
    L_IC(T -> X) is the inner-class part of KL(T || X) with T as the target distribution;
    X = S_ref (``ic_target="reference"``) or the tempered targets fitted from T0's outputs on this batch.
    """
    labels = labels.long()
    terms: dict[str, Tensor] = {}
    info: dict = {}
    if lambda_ce > 0:
        terms["ce"] = lambda_ce * F.cross_entropy(teacher_logits.float(), labels)
    if lambda_ic > 0:
        if ic_target == "reference":
            if reference_logits is None:
                raise UserError("L_IC towards the reference needs the reference student's logits")
            target = reference_logits.detach()
        else:
            if t0_logits is None:
                raise UserError("the tempered inner-class target needs T0's logits")
            res = projection_targets(
                t0_logits.detach(),
                None if reference_logits is None else reference_logits.detach(),
                labels,
                teacher_logits.shape[1],
                tau,
                1.0,
                "tempered",
                beta,
                sinkhorn_iters,
                entropy_weights,
            )
            info["beta"] = res.beta
            target = tau * res.log_targets
        work = teacher_logits.dtype if teacher_logits.dtype in (torch.float32, torch.float64) else torch.float32
        ic = kd_decomposition(
            student_logits=target.to(work), teacher_logits=teacher_logits, labels=labels, temperature=tau,
            detach_class_weights=detach_class_weights,
        ).ic
        terms["ic"] = lambda_ic * ic
    if lambda_cs > 0:
        if t0_logits is None:
            raise UserError("L_CS(T0 -> T) needs T0's logits")
        terms["cs"] = lambda_cs * kd_decomposition(
            student_logits=teacher_logits, teacher_logits=t0_logits.detach(), labels=labels, temperature=tau).cs
    return terms, info


def cosine_lr(base: float, step: int, total: int, min_lr: float = 0.0) -> float:
    if total <= 0:
        return base
    return min_lr + (base - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


# ----------------------------------------------------------------------------------------------------------------
# the report


@dataclass
class AIDReport:
    mode: str
    ic_target: str
    reference: str
    eval_split: str  # where the before/after numbers come from
    epochs: int
    steps: int
    teacher_acc_before: float
    teacher_acc_after: float
    acc_drop: float  # before - after, in points
    acc_tolerance: float
    acc_warning: bool  # the drop exceeds the tolerance
    reference_acc: float
    kd_before: float  # L_KD / L_CS / L_IC of KL(teacher || S_ref), times tau^2
    cs_before: float
    ic_before: float
    kd_after: float
    cs_after: float
    ic_after: float
    beta: Optional[float]  # the given beta, or the mean of the per-batch / whole-split bisection results
    wall_time_s: float
    history: list = field(default_factory=list)  # per epoch: mean loss terms, lr
    projection: Optional[dict] = None
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _warn_accuracy(report: AIDReport) -> None:
    report.acc_drop = report.teacher_acc_before - report.teacher_acc_after
    report.acc_warning = report.acc_drop > report.acc_tolerance
    if report.acc_warning:
        log.warning(
            "!!! AID: THE ADAPTED TEACHER LOST %.2f ACCURACY POINTS (%.2f%% -> %.2f%%), MORE THAN THE TOLERANCE "
            "OF %.2f: lower lambda_ic, the adaptation epochs or alpha !!!",
            report.acc_drop,
            report.teacher_acc_before,
            report.teacher_acc_after,
            report.acc_tolerance,
        )


class _Frozen:
    """Freezes models (eval mode, no gradients) and restores their state afterwards."""

    def __init__(self, *models: nn.Module | None):
        self.models = [m for m in models if m is not None]

    def __enter__(self):
        self.state = [(m.training, [p.requires_grad for p in m.parameters()]) for m in self.models]
        for m in self.models:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
        return self

    def __exit__(self, *exc):
        for m, (training, flags) in zip(self.models, self.state):
            m.train(training)
            for p, f in zip(m.parameters(), flags):
                p.requires_grad_(f)
        return False


# ----------------------------------------------------------------------------------------------------------------
# adaptation


def adapt_teacher(
    teacher: nn.Module,
    reference: nn.Module | None,
    train_loader: Iterable,
    eval_loader: Iterable | None,
    params: AIDParams | dict | None = None,
    device: torch.device | str = "cpu",
    *,
    distill_epochs: int | None = None,
) -> tuple[nn.Module, AIDReport]:
    """Adapt ``teacher`` (T0, left unchanged) towards ``reference`` (S_ref, left unchanged); return
    (adapted teacher, report).

    Fine-tuning mode: ``train_loader`` yields class-balanced :class:`~aidkd.methods.base.Batch` objects (P classes
    x K samples) and may have ``set_epoch(e)``; the adapted teacher is a fine-tuned copy of ``teacher``.
    Before/after numbers are measured on ``eval_loader`` (held-out data). ``reference`` may be None only for
    ``ic_target="tempered"`` with a given ``beta`` (the report then has NaN for the L_CS/L_IC numbers).

    Projection mode: ``train_loader`` must serve the training split in fixed views (no augmentation) with sample
    indices; the adapted teacher is a :class:`~aidkd.aid.project.TargetTeacher`, and the before/after numbers
    are measured on the projected training samples.

    The models are moved to ``device``. E_a is ``params.epochs`` or ``params.epochs_fraction`` of
    ``distill_epochs``.
    """
    if params is None:
        params = AIDParams()
    elif isinstance(params, dict):
        params = AIDParams(**params)
    device = torch.device(device)
    needs_ref = params.ic_target == "reference" or params.beta is None
    if needs_ref and reference is None:
        raise UserError("AID needs a reference student (or ic_target 'tempered' with a given beta)")
    teacher.to(device)
    if reference is not None:
        reference.to(device)
    if params.mode == "projection":
        return _adapt_projection(teacher, reference, train_loader, params, device)
    return _adapt_finetune(teacher, reference, train_loader, eval_loader, params, device, distill_epochs)


def _measure(teacher, reference, loader, params, device) -> SplitDecomposition | None:
    if loader is None:
        return None
    if reference is None:
        return split_decomposition(teacher, teacher, loader, params.tau, None, device)
    return split_decomposition(teacher, reference, loader, params.tau, None, device)


def _adapt_finetune(teacher, reference, train_loader, eval_loader, params, device, distill_epochs):
    if getattr(teacher, "indexed", False):
        raise UserError("fine-tuning needs a real teacher model, not a per-sample target teacher")
    t_start = time.perf_counter()
    epochs = params.num_epochs(distill_epochs)
    adapted = copy.deepcopy(teacher).to(device)
    for p in adapted.parameters():
        p.requires_grad_(True)
    nan = float("nan")
    with _Frozen(teacher, reference):
        before = _measure(teacher, reference, eval_loader, params, device)
        opt = torch.optim.SGD(
            [p for p in adapted.parameters()], lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay
        )
        steps_per_epoch = len(train_loader) if hasattr(train_loader, "__len__") else 0
        total = epochs * steps_per_epoch
        step = 0
        history = []
        betas: list[float] = []
        need_t0 = params.lambda_cs > 0 or (params.lambda_ic > 0 and params.ic_target == "tempered")
        need_ref = params.lambda_ic > 0 and reference is not None
        for epoch in range(epochs):
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            adapted.train(not params.freeze_bn)
            sums: dict[str, float] = {}
            nb = 0
            for batch in track_images(train_loader, f"AID adaptation, epoch {epoch + 1}/{epochs}", progress_enabled()):
                images, labels, _ = unpack_batch(batch, device)
                with torch.no_grad():
                    z0 = teacher(images) if need_t0 else None
                    zr = reference(images) if need_ref else None
                zt = adapted(images)
                terms, info = aid_loss(
                    zt,
                    z0,
                    zr,
                    labels,
                    tau=params.tau,
                    lambda_ce=params.lambda_ce,
                    lambda_ic=params.lambda_ic,
                    lambda_cs=params.lambda_cs,
                    detach_class_weights=params.detach_class_weights,
                    ic_target=params.ic_target,
                    beta=params.beta,
                    entropy_weights=params.entropy_weights,
                    sinkhorn_iters=params.sinkhorn_iters,
                )
                if info.get("beta") is not None:
                    betas.append(info["beta"])
                loss = sum(terms.values())
                for g in opt.param_groups:
                    g["lr"] = cosine_lr(params.lr, step, total, params.min_lr)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                nb += 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            history.append({"epoch": epoch, "lr": opt.param_groups[0]["lr"], **{k: v / max(nb, 1) for k, v in sums.items()}})
            log.info("AID epoch %d: %s", epoch, history[-1])
        adapted.eval()
        for p in adapted.parameters():
            p.requires_grad_(False)
        after = _measure(adapted, reference, eval_loader, params, device)
    has_ref = reference is not None

    def pick(d: SplitDecomposition | None, key: str) -> float:
        if d is None or (not has_ref and key != "teacher_acc"):
            return nan
        return float(getattr(d, key))

    report = AIDReport(
        mode="finetune",
        ic_target=params.ic_target,
        reference=params.reference,
        eval_split="eval" if eval_loader is not None else "none",
        epochs=epochs,
        steps=step,
        teacher_acc_before=pick(before, "teacher_acc"),
        teacher_acc_after=pick(after, "teacher_acc"),
        acc_drop=nan,
        acc_tolerance=params.acc_tolerance,
        acc_warning=False,
        reference_acc=pick(before, "student_acc"),
        kd_before=pick(before, "kd"),
        cs_before=pick(before, "cs"),
        ic_before=pick(before, "ic"),
        kd_after=pick(after, "kd"),
        cs_after=pick(after, "cs"),
        ic_after=pick(after, "ic"),
        beta=params.beta if params.beta is not None else (sum(betas) / len(betas) if betas else None),
        wall_time_s=time.perf_counter() - t_start,
        history=history,
        params=params.model_dump(),
    )
    _warn_accuracy(report)
    return adapted, report


def _adapt_projection(teacher, reference, train_loader, params, device):
    t_start = time.perf_counter()
    if hasattr(train_loader, "set_epoch"):
        train_loader.set_epoch(0)
    with _Frozen(teacher, reference):
        target, res, data = project_teacher(
            teacher,
            reference,
            train_loader,
            temperature=params.tau,
            alpha=params.alpha,
            ic_target=params.ic_target,
            beta=params.beta,
            n_iter=params.sinkhorn_iters,
            entropy_weights=params.entropy_weights,
            device=device,
        )
    seen = data["seen"]
    labels = data["labels"][seen]
    t_logits = data["teacher_logits"][seen]
    new_logits = target.temperature * target.log_targets[seen]
    r_logits = data["reference_logits"]
    if r_logits is not None:
        r_logits = r_logits[seen]
        before = split_decomposition_from_logits(teacher_logits=t_logits, student_logits=r_logits, labels=labels,
                                                 temperature=params.tau)
        after = split_decomposition_from_logits(teacher_logits=new_logits, student_logits=r_logits, labels=labels,
                                                temperature=params.tau)
        ref_acc = before.student_acc
        vals = {k: (getattr(before, k), getattr(after, k)) for k in ("kd", "cs", "ic")}
    else:
        ref_acc = float("nan")
        vals = {k: (float("nan"), float("nan")) for k in ("kd", "cs", "ic")}
    acc_before = 100.0 * float((t_logits.argmax(1) == labels).double().mean())
    acc_after = 100.0 * float((new_logits.argmax(1) == labels).double().mean())
    report = AIDReport(
        mode="projection",
        ic_target=params.ic_target,
        reference=params.reference,
        eval_split="train (projected samples)",
        epochs=0,
        steps=0,
        teacher_acc_before=acc_before,
        teacher_acc_after=acc_after,
        acc_drop=float("nan"),
        acc_tolerance=params.acc_tolerance,
        acc_warning=False,
        reference_acc=ref_acc,
        kd_before=vals["kd"][0],
        cs_before=vals["cs"][0],
        ic_before=vals["ic"][0],
        kd_after=vals["kd"][1],
        cs_after=vals["cs"][1],
        ic_after=vals["ic"][1],
        beta=res.beta,
        wall_time_s=time.perf_counter() - t_start,
        projection=target.meta,
        params=params.model_dump(),
    )
    _warn_accuracy(report)
    return target.to(device), report


__all__ = ["AIDParams", "AIDReport", "adapt_teacher", "aid_loss", "cosine_lr"]
