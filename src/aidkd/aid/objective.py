"""The AID objective and the optimiser step that minimises it, shared by every objective that fine-tunes a teacher.

* :class:`AIDParams`: every AID option, declared once (docs/aid.md). The pipeline's ``aid`` section,
  ``adapt_teacher`` and the ``aid_online`` method (``method.params.aid``) all read this one class.
  ``objective`` names how the teacher is adapted and sets the defaults of the weights below:

  - ``kd`` (the default, the paper's method as its full text is summarised): the teacher is fine-tuned with the
    standard KD loss, in the learner's place, towards a frozen pretrained student S_p;
  - ``inner_class``: this project's decomposition-targeted objective (CE + L_IC towards S_p + L_CS towards T0);
  - ``mcmi``: MCMI's fine-tuning (Ye et al., ICLR 2024), which raises the teacher's inner-class information;
  - ``projection``: no fine-tuning, the adapted targets in closed form (:mod:`aidkd.aid.project`).

* :class:`AIDObjective`: the loss of one batch, a weighted sum of the terms whose weight is positive,

      L = lambda_ce CE(z^T, y)
        + lambda_kd tau^2 mean_i KL(q^p_i || p^T_i)          (KL(p^T_i || q^p_i) with kd_target "teacher")
        + lambda_ic L_IC(T -> X) + lambda_cs L_CS(T0 -> T)
        [- mcmi_weight tau^2 mean_i KL(p^T_i || c_{y_i})     with the objective mcmi],

  called as ``objective(z_teacher, z_t0, z_ref, labels)``. ``z_teacher`` (the adapting teacher T) carries
  gradients; ``z_t0`` (the frozen original T0) and ``z_ref`` (the pretrained student S_p, or the current student in
  the online variant) are detached, so gradients reach T only. X is ``z_ref`` (``ic_target="reference"``) or the
  tempered inner-class targets fitted from T0's outputs on the batch (``ic_target="tempered"``). The MCMI term
  *raises* the teacher's inner-class information towards fixed class centroids c_k (T0's mean softmax per class
  over the training split, :func:`class_centroids`).
* :class:`TeacherAdapter`: the teacher's SGD optimiser, its per-step learning-rate schedule (cosine from ``lr`` to
  ``min_lr`` through :func:`aidkd.engine.schedule.cosine_decay`, or constant) and :meth:`TeacherAdapter.step`, one
  step of the objective. The offline adaptation runs it for E_a epochs; ``aid_online`` runs it between student
  steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from ..config import OptimConfig
from ..engine.optim import make_optimizer, make_schedule, optimizer_step
from ..engine.precision import autocast
from ..engine.schedule import cosine_decay
from ..errors import UserError
from ..losses.decomposition import kd_decomposition
from ..losses.kd import kd_loss
from .project import PROJECTION_OPTIONS, projection_targets, target_needs_reference
from .split import eval_mode, unpack_batch


class AIDParams(BaseModel):
    """Every AID option, with its default (docs/aid.md); the weights, ``tau``, ``epochs``, ``lr`` and ``balanced``
    default to the chosen objective's (:data:`OBJECTIVE_DEFAULTS`)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    #: how the teacher is adapted: kd (published), inner_class, mcmi (fine-tuning), projection (closed form)
    objective: Literal["kd", "inner_class", "mcmi", "projection"] = "kd"
    # the objective's weights (AIDObjective); the class defaults are those of objective kd
    tau: float = Field(4.0, gt=0)  # temperature of every distribution in the loss / the projection
    lambda_ce: float = Field(0.1, ge=0)  # weight of CE(z^T, y): keeps the teacher accurate
    lambda_kd: float = Field(0.9, ge=0)  # weight of tau^2 KL(S_p || T): the KD loss, the teacher as learner
    kd_target: Literal["student", "teacher"] = "student"  # the KL's first argument: S_p (KD's own roles) or T
    lambda_ic: float = Field(0.0, ge=0)  # weight of L_IC(T -> S_p or tempered target)
    lambda_cs: float = Field(0.0, ge=0)  # weight of L_CS(T0 -> T): keeps T0's class-wise similarity
    detach_class_weights: bool = True  # detach m_k(c) inside L_IC: move mass among samples, not class means
    # the target of L_IC: the reference's inner-class distribution, the teacher's own tempered one, or (projection
    # only) every sample's non-target columns replaced by its class's mean non-target distribution
    ic_target: Literal["reference", "tempered", "nontarget_mean"] = "reference"
    beta: Optional[float] = Field(None, gt=0)  # tempered target: given (< 1 smooths, > 1 sharpens), or None = bisection
    entropy_weights: Literal["teacher", "own"] = "teacher"  # weights of the reference's entropy in the bisection
    sinkhorn_iters: int = Field(50, ge=1)  # IPF iterations (projection and tempered targets)
    mcmi_weight: float = Field(0.0, ge=0)  # lambda of - lambda tau^2 mean_i KL(p_i || c_{y_i}) (objective mcmi)
    # the teacher's optimisation (TeacherAdapter)
    epochs: Optional[int] = Field(None, ge=0)  # E_a; None: epochs_fraction of the distillation epochs
    epochs_fraction: float = Field(0.1, gt=0, le=1)
    lr: float = Field(0.01, gt=0)  # SGD
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # per step, from lr to min_lr
    min_lr: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    freeze_bn: bool = False  # fine-tune with the teacher's batch-norm statistics frozen (eval-mode BN)
    # the batches of the fine-tuning: ordinary shuffled ones, or class-balanced (P classes x K samples)
    balanced: bool = False
    K: int = Field(8, ge=2)  # samples per class in a class-balanced batch
    P: Optional[int] = Field(None, ge=1)  # classes per batch; None: the data layer's choice (batch size / K)
    # the projection
    alpha: float = Field(1.0, ge=0, le=1)  # 0 = teacher's own targets, 1 = p*
    # the report
    acc_tolerance: float = Field(1.0, ge=0)  # accuracy points the adapted teacher may lose before the warning

    @property
    def finetunes(self) -> bool:
        """Whether the teacher is fine-tuned (every objective but the projection)."""
        return self.objective != "projection"

    @property
    def needs_t0(self) -> bool:
        """Whether the objective uses T0's logits (L_CS, or the tempered target fitted from T0)."""
        return self.lambda_cs > 0 or (self.lambda_ic > 0 and self.ic_target == "tempered")

    @property
    def needs_reference(self) -> bool:
        """Whether the objective uses the pretrained student's logits (the KD term, L_IC towards it, or a beta
        found from it)."""
        return self.lambda_kd > 0 or (self.lambda_ic > 0 and target_needs_reference(self.ic_target, self.beta))

    @model_validator(mode="before")
    @classmethod
    def _objective_defaults(cls, data):
        """The chosen objective's defaults, for the options not given; the former ``mode`` key is named."""
        if not isinstance(data, dict):
            return data
        if "mode" in data:
            now = LEGACY_MODES.get(data["mode"], data["mode"])
            raise ValueError(f"aid.mode is now aid.objective (mode {data['mode']!r} is objective {now!r}; the "
                             "default, kd, is the published AID)")
        out = {**OBJECTIVE_DEFAULTS.get(data.get("objective", "kd"), {}), **data}
        if out.get("ic_target") == "nontarget_mean" and out.get("objective", "kd") != "projection":
            raise ValueError("ic_target nontarget_mean is a target in closed form: use it with objective projection")
        return out

    def num_epochs(self, distill_epochs: int | None = None) -> int:
        """E_a: ``epochs`` when set, else ``epochs_fraction`` of the distillation epochs (at least 1)."""
        if self.epochs is not None:
            return self.epochs
        if distill_epochs is None:
            raise UserError("aid.epochs is not set: set it, or give the distillation epochs to derive it from")
        return max(1, round(self.epochs_fraction * distill_epochs))


#: the MCMI objective's defaults, the authors' settings (iclr2024mcmi/ICLRMCMI, CIFAT-100KD/FineTuneTeacher.py and
#: scripts/*.sh: ``--param 1 -0.25``, 20 epochs, SGD lr 0.1 / 2 = 0.05 with cosine annealing, momentum 0.9,
#: weight decay 5e-4, the softmax at temperature 1) with the other terms off; docs/aid.md
MCMI_DEFAULTS = {"tau": 1.0, "lambda_ce": 1.0, "lambda_kd": 0.0, "lambda_ic": 0.0, "lambda_cs": 0.0,
                 "mcmi_weight": 0.25, "epochs": 20, "lr": 0.05, "lr_schedule": "cosine"}

#: each objective's defaults over the class defaults (those of ``kd``: the KD method's CIFAR weights, CE 0.1 and
#: KD 0.9 at tau 4, on ordinary batches); docs/aid.md gives the reasons
OBJECTIVE_DEFAULTS = {
    "kd": {},
    "inner_class": {"lambda_ce": 1.0, "lambda_kd": 0.0, "lambda_ic": 1.0, "lambda_cs": 1.0, "balanced": True},
    "mcmi": MCMI_DEFAULTS,
    "projection": {"lambda_ce": 0.0, "lambda_kd": 0.0, "lambda_ic": 1.0},
}

#: the objective each value of the former ``aid.mode`` is now
LEGACY_MODES = {"finetune": "inner_class", "projection": "projection", "mcmi": "mcmi"}


# ----------------------------------------------------------------------------------------------------------------
# the objective


@dataclass
class AIDLoss:
    """The weighted terms of the objective for one batch (``ce``, ``kd``, ``ic``, ``cs``, ``mcmi``: those with a
    positive weight) and the tempered target's beta (None for ``ic_target="reference"``)."""

    terms: dict[str, Tensor] = field(default_factory=dict)
    beta: float | None = None

    @property
    def total(self) -> Tensor:
        return sum(self.terms.values())  # type: ignore[return-value]


class AIDObjective:
    """The loss of :class:`AIDParams` (the module docstring); it changes no state, so one instance serves every
    batch.

    ``class_centroids`` (C, C), the fixed c_k of the MCMI term (:func:`class_centroids`), is required when
    ``mcmi_weight`` is positive and unused otherwise."""

    def __init__(self, params: AIDParams, class_centroids: Tensor | None = None):
        if params.mcmi_weight > 0 and class_centroids is None:
            raise UserError("the MCMI objective needs the class centroids of T0 (class_centroids)")
        self.params = params
        self.log_centroids = None if class_centroids is None or params.mcmi_weight == 0 else \
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
        if p.lambda_kd > 0:
            if z_ref is None:
                raise UserError("the KD term of the adaptation needs the pretrained student's logits")
            out.terms["kd"] = p.lambda_kd * adaptation_kd(z_teacher, z_ref.detach(), p.tau, p.kd_target)
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
        options = {**p.model_dump(include=PROJECTION_OPTIONS), "alpha": 1.0, "ic_target": "tempered"}
        res = projection_targets(z_t0.detach(), None if z_ref is None else z_ref.detach(), labels,
                                 z_teacher.shape[1], **options)
        return p.tau * res.log_targets, res.beta


def adaptation_kd(z_teacher: Tensor, z_student: Tensor, tau: float,
                  target: Literal["student", "teacher"] = "student") -> Tensor:
    """The KD term of the adaptation, tau^2 mean_i KL(q^p_i || p^T_i) with q^p = softmax(z_student / tau) (the
    pretrained student's, the target) and p^T = softmax(z_teacher / tau) (the teacher's, the learner): the
    standard KD loss with the teacher in the student's place. ``target="teacher"`` swaps the KL's arguments,
    KL(p^T_i || q^p_i). Computed in float32 at least."""
    if target == "student":
        return kd_loss(student_logits=z_teacher, teacher_logits=z_student, temperature=tau)
    return kd_loss(student_logits=z_student, teacher_logits=z_teacher, temperature=tau)


# ----------------------------------------------------------------------------------------------------------------
# the optimiser step


class TeacherAdapter:
    """Fine-tunes ``teacher`` on the adaptation objective: SGD with the options of ``params``, the learning rate
    set per step by ``params.lr_schedule`` over ``total_steps`` (constant when it is 0: a loader of unknown
    length), and one step of the objective per :meth:`step`.

    ``t0`` is the frozen original teacher (eval mode, no gradients), needed when :attr:`AIDObjective.needs_t0`.
    ``dtype``: the autocast dtype of the teacher's forward passes (None: as the caller's context has it, fp32
    outside any autocast); the objective computes in float32 or better whatever it is.
    The teacher's parameters are made trainable here. Under ``torch.distributed`` the gradients are averaged over
    processes before the update, so every process's copy of the teacher stays identical (the teacher is never
    wrapped in DDP). The optimiser's state and the step counter are in :meth:`state_dict`.
    """

    def __init__(self, teacher: nn.Module, params: AIDParams, total_steps: int, t0: nn.Module | None = None,
                 class_centroids: Tensor | None = None, dtype: torch.dtype | None = None):
        self.teacher = teacher
        self.dtype = dtype
        self.params = params
        self.objective = AIDObjective(params, class_centroids)
        if self.objective.needs_t0 and t0 is None:
            raise UserError("this AID objective needs the original teacher T0 (L_CS or the tempered target)")
        self.t0 = t0
        self.total_steps = int(total_steps)
        self.steps = 0
        for q in teacher.parameters():
            q.requires_grad_(True)
        self.optimizer = make_optimizer(teacher.parameters(), OptimConfig(
            name="sgd", lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay))
        self.schedule = make_schedule(self.optimizer, self._lr_factor)

    def _lr_factor(self, step: int) -> float:
        """The learning rate of step ``step`` over ``params.lr``: cosine to ``min_lr`` over the total steps, or
        constant."""
        p = self.params
        if p.lr_schedule == "constant" or self.total_steps <= 0:
            return 1.0
        return cosine_decay(step / self.total_steps, p.min_lr / p.lr)

    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.params.lr * self._lr_factor(self.steps)

    def last_lr(self) -> float:
        """The learning rate of the last step taken."""
        return self.params.lr * self._lr_factor(max(self.steps - 1, 0))

    def step(self, images: Tensor, labels: Tensor, z_ref: Tensor | None, z_t0: Tensor | None = None) -> AIDLoss:
        """One adaptation step on a batch; ``z_ref`` are the reference's (or the current student's) logits on
        ``images``, ``z_t0`` T0's when they are at hand (e.g. from T0's view cache; else T0 runs). The teacher runs
        in training mode (eval-mode batch norm with ``freeze_bn``) and is left in eval mode. The update is the
        engine's (:func:`aidkd.engine.optim.optimizer_step`), its gradients averaged over processes. Returns the
        batch's loss terms (detached)."""
        t0 = self.t0 if self.objective.needs_t0 and z_t0 is None else None
        with torch.enable_grad():
            self.teacher.train(not self.params.freeze_bn)
            try:
                with autocast(images.device, self.dtype):
                    z_teacher = self.teacher(images)
                    if t0 is not None:
                        with torch.no_grad():
                            z_t0 = t0(images)
                loss = self.objective(z_teacher, z_t0, z_ref, labels)
                optimizer_step(loss.total, self.optimizer, self.schedule, average_grads_of=self.teacher)
            finally:
                self.teacher.eval()
        self.steps += 1
        return AIDLoss({k: v.detach() for k, v in loss.terms.items()}, loss.beta)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state.get("steps", 0))
        self.schedule.last_epoch = self.steps  # the schedule is a function of the step count
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr()


@torch.no_grad()
def class_centroids(model: nn.Module, loader, tau: float, device) -> Tensor:
    """c_k = the mean of softmax(z / tau) of ``model`` (eval mode) over the samples of class k that ``loader``
    serves, shape (C, C) with C the width of the logits, float64; a class never served gets the uniform
    distribution."""
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


__all__ = ["LEGACY_MODES", "MCMI_DEFAULTS", "OBJECTIVE_DEFAULTS", "AIDLoss", "AIDObjective", "AIDParams",
           "TeacherAdapter", "adaptation_kd", "class_centroids"]
