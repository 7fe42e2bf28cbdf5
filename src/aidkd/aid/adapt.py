"""AID: adapt the teacher to what the student can learn, before distillation (docs/aid.md section 3).

Fine-tuning mode: a copy T of the trained teacher T0 is fine-tuned for E_a epochs on class-balanced batches with
L_AID (:class:`~aidkd.aid.objective.AIDObjective`, stepped by :class:`~aidkd.aid.objective.TeacherAdapter`)
towards the reference student S_ref or the tempered targets; S_ref and T0 are frozen in eval mode and only T
receives gradients. Projection mode (``mode="projection"``) computes the adapted targets in closed form instead
(:mod:`aidkd.aid.project`) and returns a :class:`~aidkd.aid.project.TargetTeacher`. MCMI mode (``mode="mcmi"``)
fine-tunes like the first on ordinary training batches, with the objective's MCMI term that raises the teacher's
inner-class information towards T0's fixed class centroids, at the authors' settings (docs/aid.md).

:func:`adapt_teacher` returns the adapted teacher and an :class:`AIDReport` (accuracy before/after with a loud
warning past the tolerance, L_CS/L_IC between teacher and S_ref before/after, the teacher's inner-class
information I_T before/after, wall time).
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional

import torch
from torch import nn

from ..errors import UserError
from ..progress import progress_enabled, track_images
from .objective import AIDParams, TeacherAdapter, class_centroids
from .project import project_teacher
from .split import SplitDecomposition, eval_mode, split_decomposition, split_decomposition_from_logits, unpack_batch

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# the report


@dataclass
class AIDReport:
    mode: str
    ic_target: str
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
    teacher_info_before: float = float("nan")  # I_T: the teacher's inner-class information (split.py), x tau^2
    teacher_info_after: float = float("nan")

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
    t0_outputs: nn.Module | None = None,
) -> tuple[nn.Module, AIDReport]:
    """Adapt ``teacher`` (T0, left unchanged) towards ``reference`` (S_ref, left unchanged); return
    (adapted teacher, report).

    Fine-tuning mode: ``train_loader`` yields class-balanced :class:`~aidkd.methods.base.Batch` objects (P classes
    x K samples) and may have ``set_epoch(e)``; the adapted teacher is a fine-tuned copy of ``teacher``.
    Before/after numbers are measured on ``eval_loader`` (held-out data). ``reference`` may be None only for
    ``ic_target="tempered"`` with a given ``beta`` (the report then has NaN for the L_CS/L_IC numbers).

    MCMI mode: as fine-tuning, on the ordinary (shuffled, augmented) training batches; the class centroids are
    T0's over one pass of ``train_loader`` before the first step; ``reference`` is optional (it only gives the
    report's L_CS / L_IC numbers).

    Projection mode: ``train_loader`` must serve the training split in fixed views (no augmentation) with sample
    indices; the adapted teacher is a :class:`~aidkd.aid.project.TargetTeacher`, and the before/after numbers
    are measured on the projected training samples.

    The models are moved to ``device``. E_a is ``params.epochs`` or ``params.epochs_fraction`` of
    ``distill_epochs``. ``t0_outputs``: T0's stored outputs on the training views (a
    :class:`~aidkd.engine.view_cache.ViewCachedTeacher` over ``train_loader``'s split), read for the objective's T0
    logits instead of running T0 at every step (fine-tuning and MCMI modes).
    """
    if params is None:
        params = AIDParams()
    elif isinstance(params, dict):
        params = AIDParams(**params)
    device = torch.device(device)
    if params.mode == "projection":
        needs_ref = params.ic_target == "reference" or params.beta is None
    else:
        needs_ref = params.needs_reference
    if needs_ref and reference is None:
        raise UserError("AID needs a reference student (or ic_target 'tempered' with a given beta, or lambda_ic 0)")
    teacher.to(device)
    if reference is not None:
        reference.to(device)
    if params.mode == "projection":
        return _adapt_projection(teacher, reference, train_loader, params, device)
    return _adapt_finetune(teacher, reference, train_loader, eval_loader, params, device, distill_epochs, t0_outputs)


def _measure(teacher, reference, loader, params, device) -> SplitDecomposition | None:
    """The decomposition of KL(teacher || reference) on ``loader`` (the teacher against itself without a
    reference: its accuracy is then the only number used)."""
    if loader is None:
        return None
    return split_decomposition(teacher, reference if reference is not None else teacher, loader, params.tau, None,
                               device)


def _report(params: AIDParams, before: SplitDecomposition | None, after: SplitDecomposition | None,
            acc_before: float, acc_after: float, reference_acc: float, t_start: float,
            info: tuple[SplitDecomposition | None, SplitDecomposition | None] | None = None, **fields) -> AIDReport:
    """The report of every mode: L_KD / L_CS / L_IC before and after from the two decompositions against S_ref
    (NaN where one is None), the teacher's I_T from ``info`` (default: the same two), the accuracy warning
    applied."""
    info = info or (before, after)
    nan = float("nan")

    def value(d: SplitDecomposition | None, key: str) -> float:
        return nan if d is None else float(getattr(d, key))

    report = AIDReport(
        mode=params.mode, ic_target=params.ic_target, teacher_acc_before=acc_before, teacher_acc_after=acc_after,
        acc_drop=nan, acc_tolerance=params.acc_tolerance, acc_warning=False, reference_acc=reference_acc,
        **{f"{k}_{when}": value(d, k) for k in ("kd", "cs", "ic") for when, d in (("before", before), ("after", after))},
        **{f"teacher_info_{when}": value(d, "teacher_info") for when, d in (("before", info[0]), ("after", info[1]))},
        wall_time_s=time.perf_counter() - t_start, params=params.model_dump(), **fields,
    )
    _warn_accuracy(report)
    return report


def _adapt_finetune(teacher, reference, train_loader, eval_loader, params: AIDParams, device, distill_epochs,
                    t0_outputs=None):
    if getattr(teacher, "indexed", False):
        raise UserError("fine-tuning needs a real teacher model, not a per-sample target teacher")
    t_start = time.perf_counter()
    epochs = params.num_epochs(distill_epochs)
    adapted = copy.deepcopy(teacher).to(device)
    steps_per_epoch = len(train_loader) if hasattr(train_loader, "__len__") else 0
    history: list[dict] = []
    betas: list[float] = []
    with eval_mode(teacher, reference, freeze=True):
        before = _measure(teacher, reference, eval_loader, params, device)
        centroids = None
        if params.mode == "mcmi":  # fixed for the whole fine-tuning, from T0 over the training batches
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(0)
            centroids = class_centroids(teacher, train_loader, params.tau, device)
        adapter = TeacherAdapter(adapted, params, epochs * steps_per_epoch, t0=teacher, class_centroids=centroids)
        use_reference = adapter.objective.needs_reference and reference is not None
        for epoch in range(epochs):
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            sums: dict[str, float] = {}
            nb = 0
            for batch in track_images(train_loader, f"AID adaptation, epoch {epoch + 1}/{epochs}", progress_enabled()):
                images, labels, index = unpack_batch(batch, device)
                with torch.no_grad():
                    z_ref = reference(images) if use_reference else None
                    z_t0 = None
                    if t0_outputs is not None and adapter.objective.needs_t0:
                        z_t0 = t0_outputs(images, index, getattr(batch, "view", None))
                loss = adapter.step(images, labels, z_ref, z_t0)
                if loss.beta is not None:
                    betas.append(loss.beta)
                nb += 1
                for k, v in [*loss.terms.items(), ("loss", loss.total)]:
                    sums[k] = sums.get(k, 0.0) + float(v)
            history.append({"epoch": epoch, "lr": adapter.optimizer.param_groups[0]["lr"],
                            **{k: v / max(nb, 1) for k, v in sums.items()}})
            log.info("AID epoch %d: %s", epoch, history[-1])
        adapted.eval()
        for q in adapted.parameters():
            q.requires_grad_(False)
        after = _measure(adapted, reference, eval_loader, params, device)
    nan = float("nan")
    has_ref = reference is not None
    report = _report(
        params, before if has_ref else None, after if has_ref else None,
        nan if before is None else before.teacher_acc, nan if after is None else after.teacher_acc,
        before.student_acc if has_ref and before is not None else nan, t_start, info=(before, after),
        eval_split="eval" if eval_loader is not None else "none", epochs=epochs, steps=adapter.steps,
        beta=params.beta if params.beta is not None else (sum(betas) / len(betas) if betas else None),
        history=history,
    )
    return adapted, report


def _adapt_projection(teacher, reference, train_loader, params: AIDParams, device):
    t_start = time.perf_counter()
    if hasattr(train_loader, "set_epoch"):
        train_loader.set_epoch(0)
    with eval_mode(teacher, reference, freeze=True):
        target, res, data = project_teacher(teacher, reference, train_loader, params, device=device)
    seen = data["seen"]
    labels = data["labels"][seen]
    t_logits = data["teacher_logits"][seen]
    new_logits = target.temperature * target.log_targets[seen]
    r_logits = data["reference_logits"]
    before = after = None
    ref_acc = float("nan")
    if r_logits is not None:
        r_logits = r_logits[seen]
        before = split_decomposition_from_logits(teacher_logits=t_logits, student_logits=r_logits, labels=labels,
                                                 temperature=params.tau)
        after = split_decomposition_from_logits(teacher_logits=new_logits, student_logits=r_logits, labels=labels,
                                                temperature=params.tau)
        ref_acc = before.student_acc
    report = _report(
        params, before, after,
        100.0 * float((t_logits.argmax(1) == labels).double().mean()),
        100.0 * float((new_logits.argmax(1) == labels).double().mean()),
        ref_acc, t_start, eval_split="train (projected samples)", epochs=0, steps=0, beta=res.beta,
        projection=target.meta,
    )
    return target.to(device), report


__all__ = ["AIDParams", "AIDReport", "adapt_teacher"]
