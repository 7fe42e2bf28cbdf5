"""AID: adapt the teacher to what the student can learn, before distillation (docs/aid.md).

Fine-tuning (every objective but ``projection``): a copy T of the trained teacher T0 is fine-tuned for E_a epochs
with the objective of :class:`~aidkd.aid.objective.AIDParams` (:class:`~aidkd.aid.objective.AIDObjective`,
stepped by :class:`~aidkd.aid.objective.TeacherAdapter`): by default (``objective="kd"``, the published method)
with the standard KD loss, the teacher as learner and the frozen pretrained student S_p as target; S_p and T0 are
frozen in eval mode and only T receives gradients. The objective ``mcmi`` first takes T0's class centroids over
one pass of the training batches. Projection (``objective="projection"``) computes the adapted targets in closed
form instead (:mod:`aidkd.aid.project`) and returns a :class:`~aidkd.teachers.TargetTeacher`.

:func:`adapt_teacher` returns the adapted teacher and an :class:`AIDReport`: the teacher's accuracy before/after
with a loud warning past the tolerance, L_KD / L_CS / L_IC between teacher and S_p, the teacher's inner-class
information I_T and the inner-class agreement rho between teacher and S_p, before and after, on held-out data (the
flat fields) and on the training images (``train``), and the wall time.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional

import torch
from torch import nn

from ..data.base import Batch
from ..engine.precision import autocast
from ..errors import UserError
from ..teachers import runs_images
from ..progress import progress_enabled, track_images
from .objective import AIDParams, TeacherAdapter, class_centroids
from .project import project_teacher, target_needs_reference
from .split import SplitDecomposition, eval_mode, split_decomposition, split_decomposition_from_logits, unpack_batch

log = logging.getLogger(__name__)

#: the numbers measured on a split before and after the adaptation: SplitDecomposition fields, reported as
#: ``<name>_before`` / ``<name>_after``
SPLIT_NUMBERS = ("teacher_acc", "kd", "cs", "ic", "teacher_info", "agreement")


# ----------------------------------------------------------------------------------------------------------------
# the report


@dataclass
class AIDReport:
    objective: str
    ic_target: str
    eval_split: str  # where the flat before/after numbers come from (held-out data, or the projected samples)
    epochs: int
    steps: int
    teacher_acc_before: float
    teacher_acc_after: float
    acc_drop: float  # before - after, in points
    acc_tolerance: float
    acc_warning: bool  # the drop exceeds the tolerance
    reference_acc: float  # S_p's top-1 on eval_split
    kd_before: float  # L_KD / L_CS / L_IC of KL(teacher || S_p), times tau^2
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
    agreement_before: float = float("nan")  # inner-class agreement rho between teacher and S_p (split.py)
    agreement_after: float = float("nan")
    fit_time_s: float = float("nan")  # the fine-tuning epochs alone, without the report's measuring passes
    #: the same numbers on the training images (un-augmented), ``{"split": "train", "teacher_acc_before": ...}``;
    #: empty when not measured
    train: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _warn_accuracy(report: AIDReport) -> None:
    report.acc_drop = report.teacher_acc_before - report.teacher_acc_after
    report.acc_warning = report.acc_drop > report.acc_tolerance
    if report.acc_warning:
        log.warning(
            "!!! AID: THE ADAPTED TEACHER LOST %.2f ACCURACY POINTS (%.2f%% -> %.2f%%), MORE THAN THE TOLERANCE "
            "OF %.2f: lower the adaptation's learning rate or epochs (or lambda_ic, alpha) !!!",
            report.acc_drop,
            report.teacher_acc_before,
            report.teacher_acc_after,
            report.acc_tolerance,
        )


def split_numbers(before: SplitDecomposition | None, after: SplitDecomposition | None,
                  with_reference: bool = True) -> dict:
    """The report's before/after numbers of one split (``teacher_acc_before``, ``kd_after``, ...; NaN where a
    decomposition is missing; the numbers against S_p are NaN without a reference)."""
    nan = float("nan")
    out = {}
    for key in SPLIT_NUMBERS:
        own = key in ("teacher_acc", "teacher_info")
        for when, d in (("before", before), ("after", after)):
            out[f"{key}_{when}"] = nan if d is None or not (own or with_reference) else float(getattr(d, key))
    return out


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
    train_eval_loader: Iterable | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[nn.Module, AIDReport]:
    """Adapt ``teacher`` (T0, left unchanged) towards ``reference`` (the pretrained student S_p, left unchanged);
    return (adapted teacher, report).

    Fine-tuning objectives (``kd``, ``inner_class``, ``mcmi``): ``train_loader`` yields the training batches
    (:class:`~aidkd.methods.base.Batch` objects or ``(images, labels[, index])`` tuples; class-balanced P x K
    batches where ``params.balanced``) and may have ``set_epoch(e)``; the adapted teacher is a fine-tuned copy of
    ``teacher``. The flat before/after numbers are measured on ``eval_loader`` (held-out data), the report's
    ``train`` numbers on ``train_eval_loader`` (the training images without augmentation) when given.
    ``reference`` may be None only for an objective that does not use it (then the numbers against S_p are NaN).
    The ``mcmi`` objective's class centroids are T0's over one pass of ``train_loader`` before the first step.

    Projection: ``train_loader`` must serve the training split in fixed views (no augmentation) with sample
    indices; the adapted teacher is a :class:`~aidkd.teachers.TargetTeacher`, and the before/after numbers
    are measured on the projected training samples.

    The models are moved to ``device``. E_a is ``params.epochs`` or ``params.epochs_fraction`` of
    ``distill_epochs``. ``t0_outputs``: T0's stored outputs on the training views (a
    :class:`~aidkd.teachers.ViewsTeacher` over ``train_loader``'s split), read for the objective's T0
    logits instead of running T0 at every step. ``dtype``: the autocast dtype of the fine-tuning's forward passes
    (the run's precision, :mod:`aidkd.engine.precision`; None: fp32); the report's measuring passes run in fp32.
    """
    if params is None:
        params = AIDParams()
    elif isinstance(params, dict):
        params = AIDParams(**params)
    device = torch.device(device)
    if params.objective == "projection":
        needs_ref = target_needs_reference(params.ic_target, params.beta)
    else:
        needs_ref = params.needs_reference
    if needs_ref and reference is None:
        raise UserError(f"the AID objective {params.objective!r} needs a pretrained student (aid.reference)")
    teacher.to(device)
    if reference is not None:
        reference.to(device)
    if params.objective == "projection":
        return _adapt_projection(teacher, reference, train_loader, params, device)
    return _adapt_finetune(teacher, reference, train_loader, eval_loader, params, device, distill_epochs, t0_outputs,
                           train_eval_loader, dtype)


def _measure(teacher, reference, loader, params, device) -> SplitDecomposition | None:
    """The decomposition of KL(teacher || reference) on ``loader`` (the teacher against itself without a
    reference: its accuracy and I_T are then the only numbers used)."""
    if loader is None:
        return None
    return split_decomposition(teacher, reference if reference is not None else teacher, loader, params.tau, None,
                               device)


def _report(params: AIDParams, before: SplitDecomposition | None, after: SplitDecomposition | None,
            reference: bool, t_start: float, **fields) -> AIDReport:
    """The report of every objective: the numbers of the two decompositions of the flat split (NaN where one is
    None, the numbers against S_p NaN without ``reference``), the accuracy warning applied."""
    report = AIDReport(
        objective=params.objective, ic_target=params.ic_target, acc_drop=float("nan"),
        acc_tolerance=params.acc_tolerance, acc_warning=False,
        reference_acc=float(before.student_acc) if reference and before is not None else float("nan"),
        **split_numbers(before, after, reference), wall_time_s=time.perf_counter() - t_start,
        params=params.model_dump(), **fields,
    )
    _warn_accuracy(report)
    return report


def _adapt_finetune(teacher, reference, train_loader, eval_loader, params: AIDParams, device, distill_epochs,
                    t0_outputs=None, train_eval_loader=None, dtype=None):
    if not runs_images(teacher):
        raise UserError("fine-tuning needs a real teacher model, not a per-sample target teacher")
    t_start = time.perf_counter()
    epochs = params.num_epochs(distill_epochs)
    adapted = copy.deepcopy(teacher).to(device)
    steps_per_epoch = len(train_loader) if hasattr(train_loader, "__len__") else 0
    history: list[dict] = []
    betas: list[float] = []
    with eval_mode(teacher, reference, freeze=True):
        before = _measure(teacher, reference, eval_loader, params, device)
        before_train = _measure(teacher, reference, train_eval_loader, params, device)
        centroids = None
        if params.mcmi_weight > 0:  # fixed for the whole fine-tuning, from T0 over the training batches
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(0)
            centroids = class_centroids(teacher, train_loader, params.tau, device)
        adapter = TeacherAdapter(adapted, params, epochs * steps_per_epoch, t0=teacher, class_centroids=centroids,
                                 dtype=dtype)
        use_reference = adapter.objective.needs_reference and reference is not None
        t_fit = time.perf_counter()
        for epoch in range(epochs):
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            sums: dict[str, float] = {}
            nb = 0
            for batch in track_images(train_loader, f"AID adaptation, epoch {epoch + 1}/{epochs}", progress_enabled()):
                images, labels, index = unpack_batch(batch, device)
                with torch.no_grad(), autocast(device, dtype):
                    z_ref = reference(images) if use_reference else None
                    z_t0 = None
                    if t0_outputs is not None and adapter.objective.needs_t0:
                        z_t0 = t0_outputs.logits(Batch(images, labels, index, getattr(batch, "view", None)))
                loss = adapter.step(images, labels, z_ref, z_t0)
                if loss.beta is not None:
                    betas.append(loss.beta)
                nb += 1
                for k, v in [*loss.terms.items(), ("loss", loss.total)]:
                    sums[k] = sums.get(k, 0.0) + float(v)
            history.append({"epoch": epoch, "lr": adapter.last_lr(),
                            **{k: v / max(nb, 1) for k, v in sums.items()}})
            log.info("AID epoch %d: %s", epoch, history[-1])
        fit_time_s = time.perf_counter() - t_fit
        adapted.eval()
        for q in adapted.parameters():
            q.requires_grad_(False)
        after = _measure(adapted, reference, eval_loader, params, device)
        after_train = _measure(adapted, reference, train_eval_loader, params, device)
    has_ref = reference is not None
    train = {} if train_eval_loader is None else {"split": "train", **split_numbers(before_train, after_train, has_ref)}
    report = _report(
        params, before, after, has_ref, t_start,
        eval_split="eval" if eval_loader is not None else "none", epochs=epochs, steps=adapter.steps,
        beta=params.beta if params.beta is not None else (sum(betas) / len(betas) if betas else None),
        history=history, train=train, fit_time_s=fit_time_s,
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
    has_ref = r_logits is not None
    versus = r_logits[seen] if has_ref else t_logits  # without a reference, only the teacher's own numbers are used
    before = split_decomposition_from_logits(teacher_logits=t_logits, student_logits=versus, labels=labels,
                                             temperature=params.tau)
    after = split_decomposition_from_logits(teacher_logits=new_logits, student_logits=versus, labels=labels,
                                            temperature=params.tau)
    report = _report(params, before, after, has_ref, t_start, eval_split="train (projected samples)", epochs=0,
                     steps=0, beta=res.beta, projection=target.meta)
    return target.to(device), report


__all__ = ["SPLIT_NUMBERS", "AIDParams", "AIDReport", "adapt_teacher", "split_numbers"]
