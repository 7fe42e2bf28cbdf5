"""The AID objective and the optimiser step that minimises it, shared by every mode that fine-tunes a teacher.

* :class:`AIDParams`: every AID option, declared once (docs/aid.md section 4). The pipeline's ``aid`` section,
  ``adapt_teacher`` and the ``aid_online`` method (``method.params.aid``) all read this one class.
* :class:`AIDObjective`: L_AID of one batch,

      L_AID = lambda_ce CE(z^T, y) + lambda_ic L_IC(T -> X) + lambda_cs L_CS(T0 -> T)
              [- mcmi_weight tau^2 mean_i KL(p_i || c_{y_i})   in the MCMI mode],

  called as ``objective(z_teacher, z_t0, z_ref, labels)``. ``z_teacher`` (the adapting teacher T) carries
  gradients; ``z_t0`` (the frozen original T0) and ``z_ref`` (the reference student, or the current student in the
  online variant) are detached. X is ``z_ref`` (``ic_target="reference"``) or the tempered inner-class targets
  fitted from T0's outputs on the batch (``ic_target="tempered"``). In the MCMI mode (``mode="mcmi"``, Ye et al.,
  "Bayes conditional distribution estimation for knowledge distillation", ICLR 2024) the last term *raises* the
  teacher's inner-class information towards fixed class centroids c_k (T0's mean softmax per class over the
  training split, :func:`class_centroids`), and the mode's defaults are the authors' (:data:`MCMI_DEFAULTS`).
* :class:`TeacherAdapter`: the teacher's SGD optimiser, its per-step learning-rate schedule (cosine from ``lr`` to
  ``min_lr`` through :func:`aidkd.engine.schedule.cosine_decay`, or constant) and :meth:`TeacherAdapter.step`, one
  L_AID step. The fine-tuning mode runs it for E_a epochs; ``aid_online`` runs it between student steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from ..errors import UserError
from ..losses.decomposition import kd_decomposition


class AIDParams(BaseModel):
    """Every AID option, with its default (docs/aid.md section 4)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    mode: Literal["finetune", "projection", "mcmi"] = "finetune"
    # the objective (AIDObjective)
    tau: float = Field(4.0, gt=0)  # temperature of every distribution in the AID loss / the projection
    lambda_ce: float = Field(1.0, ge=0)  # weight of CE(z^T, y): keeps the teacher accurate
    lambda_ic: float = Field(1.0, ge=0)  # weight of L_IC(T -> S_ref or tempered target): the degree of adaptation
    lambda_cs: float = Field(1.0, ge=0)  # weight of L_CS(T0 -> T): keeps T0's class-wise similarity
    detach_class_weights: bool = True  # detach m_k(c) inside L_IC: move mass among samples, not class means
    ic_target: Literal["reference", "tempered"] = "reference"
    beta: Optional[float] = Field(None, gt=0)  # tempered target: given (< 1 smooths, > 1 sharpens), or None = bisection
    entropy_weights: Literal["teacher", "own"] = "teacher"  # weights of the reference's entropy in the bisection
    sinkhorn_iters: int = Field(50, ge=1)  # IPF iterations (projection and tempered targets)
    mcmi_weight: float = Field(0.25, ge=0)  # mode mcmi: lambda of - lambda tau^2 mean_i KL(p_i || c_{y_i})
    # the teacher's optimisation (TeacherAdapter)
    epochs: Optional[int] = Field(None, ge=0)  # E_a; None: epochs_fraction of the distillation epochs
    epochs_fraction: float = Field(0.1, gt=0, le=1)
    lr: float = Field(0.01, gt=0)  # SGD
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # per step, from lr to min_lr
    min_lr: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    freeze_bn: bool = False  # fine-tune with the teacher's batch-norm statistics frozen (eval-mode BN)
    # the fine-tuning mode's class-balanced batches
    K: int = Field(8, ge=2)  # samples per class in a class-balanced batch
    P: Optional[int] = Field(None, ge=1)  # classes per batch; None: the data layer's choice (batch size / K)
    # the projection mode
    alpha: float = Field(1.0, ge=0, le=1)  # 0 = teacher's own targets, 1 = p*
    # the report
    acc_tolerance: float = Field(1.0, ge=0)  # accuracy points the adapted teacher may lose before the warning

    @property
    def needs_t0(self) -> bool:
        """Whether the objective uses T0's logits (L_CS, or the tempered target fitted from T0)."""
        return self.lambda_cs > 0 or (self.lambda_ic > 0 and self.ic_target == "tempered")

    @property
    def needs_reference(self) -> bool:
        """Whether the objective uses the reference's logits (L_IC towards it, or a beta found from it)."""
        return self.lambda_ic > 0 and (self.ic_target == "reference" or self.beta is None)

    @model_validator(mode="before")
    @classmethod
    def _mode_defaults(cls, data):
        """The MCMI mode's own defaults, for the options not given."""
        if isinstance(data, dict) and data.get("mode") == "mcmi":
            data = {**MCMI_DEFAULTS, **data}
        return data

    def num_epochs(self, distill_epochs: int | None = None) -> int:
        """E_a: ``epochs`` when set, else ``epochs_fraction`` of the distillation epochs (at least 1)."""
        if self.epochs is not None:
            return self.epochs
        if distill_epochs is None:
            raise UserError("aid.epochs is not set: set it, or give the distillation epochs to derive it from")
        return max(1, round(self.epochs_fraction * distill_epochs))


#: the MCMI mode's defaults, the authors' settings (iclr2024mcmi/ICLRMCMI, CIFAT-100KD/FineTuneTeacher.py and
#: scripts/*.sh: ``--param 1 -0.25``, 20 epochs, SGD lr 0.1 / 2 = 0.05 with cosine annealing, momentum 0.9,
#: weight decay 5e-4, the softmax at temperature 1) with the AID terms off; docs/aid.md
MCMI_DEFAULTS = {"tau": 1.0, "lambda_ce": 1.0, "lambda_ic": 0.0, "lambda_cs": 0.0, "mcmi_weight": 0.25, "epochs": 20,
                 "lr": 0.05, "lr_schedule": "cosine"}


# ----------------------------------------------------------------------------------------------------------------
# the objective


@dataclass
class AIDLoss:
    """The weighted terms of L_AID for one batch (``ce``, ``ic``, ``cs``, and ``mcmi`` in that mode: those with a
    positive weight) and the tempered target's beta (None for ``ic_target="reference"``)."""

    terms: dict[str, Tensor] = field(default_factory=dict)
    beta: float | None = None

    @property
    def total(self) -> Tensor:
        return sum(self.terms.values())  # type: ignore[return-value]


class AIDObjective:
    """L_AID of :class:`AIDParams` (the module docstring); it changes no state, so one instance serves every batch.

    ``class_centroids`` (C, C), the fixed c_k of the MCMI mode (:func:`class_centroids`), is required in that
    mode and unused in the others."""

    def __init__(self, params: AIDParams, class_centroids: Tensor | None = None):
        if params.mode == "mcmi" and class_centroids is None:
            raise UserError("the MCMI objective needs the class centroids of T0 (class_centroids)")
        self.params = params
        self.log_centroids = None if class_centroids is None or params.mode != "mcmi" else \
            torch.log(class_centroids.double().clamp_min(1e-30))

    @property
    def needs_t0(self) -> bool:
        return self.params.needs_t0

    @property
    def needs_reference(self) -> bool:
        return self.params.needs_reference

    def __call__(self, z_teacher: Tensor, z_t0: Tensor | None, z_ref: Tensor | None, labels: Tensor) -> AIDLoss:
        p = self.params
        labels = labels.long()
        work = z_teacher.dtype if z_teacher.dtype in (torch.float32, torch.float64) else torch.float32
        out = AIDLoss()
        if p.lambda_ce > 0:
            out.terms["ce"] = p.lambda_ce * F.cross_entropy(z_teacher.float(), labels)
        if p.lambda_ic > 0:
            target, out.beta = self._ic_target(z_teacher, z_t0, z_ref, labels)
            # KL(T || X): the adapting teacher T is the target distribution
            ic = kd_decomposition(student_logits=target.to(work), teacher_logits=z_teacher, labels=labels,
                                  temperature=p.tau, detach_class_weights=p.detach_class_weights).ic
            out.terms["ic"] = p.lambda_ic * ic
        if p.lambda_cs > 0:
            if z_t0 is None:
                raise UserError("L_CS(T0 -> T) needs T0's logits")
            out.terms["cs"] = p.lambda_cs * kd_decomposition(student_logits=z_teacher, teacher_logits=z_t0.detach(),
                                                             labels=labels, temperature=p.tau).cs
        if self.log_centroids is not None and p.mcmi_weight > 0:
            log_p = torch.log_softmax(z_teacher.to(work) / p.tau, dim=1)
            log_c = self.log_centroids.to(log_p.device, work)[labels]
            kl = (log_p.exp() * (log_p - log_c)).sum(1).mean()
            out.terms["mcmi"] = -p.mcmi_weight * p.tau**2 * kl
        return out

    def _ic_target(self, z_teacher, z_t0, z_ref, labels) -> tuple[Tensor, float | None]:
        """The logits of X in L_IC(T -> X), detached, and the tempered target's beta."""
        p = self.params
        if p.ic_target == "reference":
            if z_ref is None:
                raise UserError("L_IC towards the reference needs the reference student's logits")
            return z_ref.detach(), None
        if z_t0 is None:
            raise UserError("the tempered inner-class target needs T0's logits")
        # imported here: aid.project needs the engine's indexed teacher, and the engine imports the methods, which
        # import this module; this module must load without it
        from .project import PROJECTION_OPTIONS, projection_targets

        options = {**p.model_dump(include=PROJECTION_OPTIONS), "alpha": 1.0, "ic_target": "tempered"}
        res = projection_targets(z_t0.detach(), None if z_ref is None else z_ref.detach(), labels,
                                 z_teacher.shape[1], **options)
        return p.tau * res.log_targets, res.beta


# ----------------------------------------------------------------------------------------------------------------
# the optimiser step


class TeacherAdapter:
    """Fine-tunes ``teacher`` on L_AID: SGD with the options of ``params``, the learning rate set per step by
    ``params.lr_schedule`` over ``total_steps`` (constant when it is 0: a loader of unknown length), and one L_AID
    step per :meth:`step`.

    ``t0`` is the frozen original teacher (eval mode, no gradients), needed when :attr:`AIDObjective.needs_t0`.
    The teacher's parameters are made trainable here. Under ``torch.distributed`` the gradients are averaged over
    processes before the update, so every process's copy of the teacher stays identical (the teacher is never
    wrapped in DDP). The optimiser's state and the step counter are in :meth:`state_dict`.
    """

    def __init__(self, teacher: nn.Module, params: AIDParams, total_steps: int, t0: nn.Module | None = None,
                 class_centroids: Tensor | None = None):
        self.teacher = teacher
        self.params = params
        self.objective = AIDObjective(params, class_centroids)
        if self.objective.needs_t0 and t0 is None:
            raise UserError("this AID objective needs the original teacher T0 (L_CS or the tempered target)")
        self.t0 = t0
        self.total_steps = int(total_steps)
        self.steps = 0
        for q in teacher.parameters():
            q.requires_grad_(True)
        self.optimizer = torch.optim.SGD(teacher.parameters(), lr=params.lr, momentum=params.momentum,
                                         weight_decay=params.weight_decay)

    def lr(self) -> float:
        """The learning rate of the next step."""
        from ..engine.schedule import cosine_decay  # here: aidkd.engine imports the methods, which import this

        p = self.params
        if p.lr_schedule == "constant" or self.total_steps <= 0:
            return p.lr
        return p.lr * cosine_decay(self.steps / self.total_steps, p.min_lr / p.lr)

    def step(self, images: Tensor, labels: Tensor, z_ref: Tensor | None, z_t0: Tensor | None = None) -> AIDLoss:
        """One L_AID step on a batch; ``z_ref`` are the reference's (or the current student's) logits on
        ``images``, ``z_t0`` T0's when they are at hand (e.g. from T0's view cache; else T0 runs). The teacher runs
        in training mode (eval-mode batch norm with ``freeze_bn``) and is left in eval mode. Returns the batch's
        loss terms (detached)."""
        t0 = self.t0 if self.objective.needs_t0 and z_t0 is None else None
        with torch.enable_grad():
            self.teacher.train(not self.params.freeze_bn)
            try:
                z_teacher = self.teacher(images)
                if t0 is not None:
                    with torch.no_grad():
                        z_t0 = t0(images)
                loss = self.objective(z_teacher, z_t0, z_ref, labels)
                lr = self.lr()
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                self.optimizer.zero_grad(set_to_none=True)
                loss.total.backward()
                _average_grads_over_processes(self.teacher)
                self.optimizer.step()
            finally:
                self.teacher.eval()
        self.steps += 1
        return AIDLoss({k: v.detach() for k, v in loss.terms.items()}, loss.beta)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state.get("steps", 0))


@torch.no_grad()
def class_centroids(model: nn.Module, loader, tau: float, device) -> Tensor:
    """c_k = the mean of softmax(z / tau) of ``model`` (eval mode) over the samples of class k that ``loader``
    serves, shape (C, C) with C the width of the logits, float64; a class never served gets the uniform
    distribution."""
    from .split import eval_mode, unpack_batch

    sums = counts = None
    with eval_mode(model):
        for batch in loader:
            images, labels, _ = unpack_batch(batch, device)
            p = torch.softmax(model(images).double() / tau, dim=1)
            if sums is None:
                num_classes = p.shape[1]
                sums = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=p.device)
                counts = torch.zeros(num_classes, dtype=torch.float64, device=p.device)
            sums.index_add_(0, labels.long(), p)
            counts += torch.bincount(labels.long(), minlength=num_classes).double()
    if sums is None:
        raise UserError("the loader yielded no batches: no class centroids")
    out = sums / counts.clamp_min(1).unsqueeze(1)
    out[counts == 0] = 1.0 / num_classes
    return out


def _average_grads_over_processes(model: nn.Module) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for q in model.parameters():
        if q.grad is not None:
            dist.all_reduce(q.grad)
            q.grad.div_(world)


__all__ = ["MCMI_DEFAULTS", "AIDLoss", "AIDObjective", "AIDParams", "TeacherAdapter", "class_centroids"]
