"""The AID objective and the optimiser step that minimises it, shared by every mode that fine-tunes a teacher.

* :class:`AIDParams`: every AID option, declared once (docs/aid.md section 4). The pipeline's ``aid`` section,
  ``adapt_teacher`` and the ``aid_online`` method (``method.params.aid``) all read this one class.
* :class:`AIDObjective`: L_AID of one batch,

      L_AID = lambda_ce CE(z^T, y) + lambda_ic L_IC(T -> X) + lambda_cs L_CS(T0 -> T),

  called as ``objective(z_teacher, z_t0, z_ref, labels)``. ``z_teacher`` (the adapting teacher T) carries
  gradients; ``z_t0`` (the frozen original T0) and ``z_ref`` (the reference student, or the current student in the
  online variant) are detached. X is ``z_ref`` (``ic_target="reference"``) or the tempered inner-class targets
  fitted from T0's outputs on the batch (``ic_target="tempered"``).
* :class:`TeacherAdapter`: the teacher's SGD optimiser, its per-step learning-rate schedule (cosine from ``lr`` to
  ``min_lr`` through :func:`aidkd.engine.schedule.cosine_decay`, or constant) and :meth:`TeacherAdapter.step`, one
  L_AID step. The fine-tuning mode runs it for E_a epochs; ``aid_online`` runs it between student steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from ..errors import UserError
from ..losses.decomposition import kd_decomposition
from .project import PROJECTION_OPTIONS, projection_targets


class AIDParams(BaseModel):
    """Every AID option, with its default (docs/aid.md section 4)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    mode: Literal["finetune", "projection"] = "finetune"
    # the objective (AIDObjective)
    tau: float = Field(4.0, gt=0)  # temperature of every distribution in the AID loss / the projection
    lambda_ce: float = Field(1.0, ge=0)  # weight of CE(z^T, y): keeps the teacher accurate
    lambda_ic: float = Field(1.0, ge=0)  # weight of L_IC(T -> S_ref or tempered target): the degree of adaptation
    lambda_cs: float = Field(1.0, ge=0)  # weight of L_CS(T0 -> T): keeps T0's class-wise similarity
    detach_class_weights: bool = True  # detach m_k(c) inside L_IC: move mass among samples, not class means
    ic_target: Literal["reference", "tempered"] = "reference"
    beta: Optional[float] = Field(None, gt=0, le=1)  # tempered target: given, or None = bisection on entropy
    entropy_weights: Literal["teacher", "own"] = "teacher"  # weights of the reference's entropy in the bisection
    sinkhorn_iters: int = Field(50, ge=1)  # IPF iterations (projection and tempered targets)
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

    def num_epochs(self, distill_epochs: int | None = None) -> int:
        """E_a: ``epochs`` when set, else ``epochs_fraction`` of the distillation epochs (at least 1)."""
        if self.epochs is not None:
            return self.epochs
        if distill_epochs is None:
            raise UserError("aid.epochs is not set: set it, or give the distillation epochs to derive it from")
        return max(1, round(self.epochs_fraction * distill_epochs))


# ----------------------------------------------------------------------------------------------------------------
# the objective


@dataclass
class AIDLoss:
    """The weighted terms of L_AID for one batch (``ce``, ``ic``, ``cs``: those with a positive weight) and the
    tempered target's beta (None for ``ic_target="reference"``)."""

    terms: dict[str, Tensor] = field(default_factory=dict)
    beta: float | None = None

    @property
    def total(self) -> Tensor:
        return sum(self.terms.values())  # type: ignore[return-value]


class AIDObjective:
    """L_AID of :class:`AIDParams` (the module docstring); stateless, so one instance serves every batch."""

    def __init__(self, params: AIDParams):
        self.params = params

    @property
    def needs_t0(self) -> bool:
        """Whether a call needs T0's logits (L_CS, or the tempered target fitted from T0)."""
        p = self.params
        return p.lambda_cs > 0 or (p.lambda_ic > 0 and p.ic_target == "tempered")

    @property
    def needs_reference(self) -> bool:
        """Whether a call needs the reference's logits (L_IC towards it, or a beta to find from its entropy)."""
        p = self.params
        return p.lambda_ic > 0 and (p.ic_target == "reference" or p.beta is None)

    def __call__(self, z_teacher: Tensor, z_t0: Tensor | None, z_ref: Tensor | None, labels: Tensor) -> AIDLoss:
        p = self.params
        labels = labels.long()
        out = AIDLoss()
        if p.lambda_ce > 0:
            out.terms["ce"] = p.lambda_ce * F.cross_entropy(z_teacher.float(), labels)
        if p.lambda_ic > 0:
            target, out.beta = self._ic_target(z_teacher, z_t0, z_ref, labels)
            work = z_teacher.dtype if z_teacher.dtype in (torch.float32, torch.float64) else torch.float32
            # kd_decomposition(second, first) splits KL(first || second): KL(T || X), T the target distribution
            ic = kd_decomposition(target.to(work), z_teacher, labels, p.tau,
                                  detach_class_weights=p.detach_class_weights).ic
            out.terms["ic"] = p.lambda_ic * ic
        if p.lambda_cs > 0:
            if z_t0 is None:
                raise UserError("L_CS(T0 -> T) needs T0's logits")
            out.terms["cs"] = p.lambda_cs * kd_decomposition(z_teacher, z_t0.detach(), labels, p.tau).cs
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

    def __init__(self, teacher: nn.Module, params: AIDParams, total_steps: int, t0: nn.Module | None = None):
        self.teacher = teacher
        self.params = params
        self.objective = AIDObjective(params)
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

    def step(self, images: Tensor, labels: Tensor, z_ref: Tensor | None) -> AIDLoss:
        """One L_AID step on a batch; ``z_ref`` are the reference's (or the current student's) logits on
        ``images``. The teacher runs in training mode (eval-mode batch norm with ``freeze_bn``) and is left in
        eval mode. Returns the batch's loss terms (detached)."""
        t0 = self.t0 if self.objective.needs_t0 else None
        with torch.enable_grad():
            self.teacher.train(not self.params.freeze_bn)
            try:
                z_teacher = self.teacher(images)
                with torch.no_grad():
                    z_t0 = t0(images) if t0 is not None else None
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


def _average_grads_over_processes(model: nn.Module) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for q in model.parameters():
        if q.grad is not None:
            dist.all_reduce(q.grad)
            q.grad.div_(world)


__all__ = ["AIDLoss", "AIDObjective", "AIDParams", "TeacherAdapter"]
