"""Online AID (``aid_online``): teacher adaptation and distillation interleaved in one run (docs/aid.md section 3).

Every ``teacher_every`` training steps, before the student's step, the teacher takes one adaptation step
(:class:`~aidkd.aid.objective.TeacherAdapter`, the same step as the offline fine-tuning) towards the *current*
student (the student's logits on the same batch, detached), with T0 a frozen copy of the initial teacher and the
learning rate following ``aid.lr_schedule`` over the run. Then the student is trained with CE + KD at ``aid.tau``
from the updated teacher (eval mode, no gradients). The teacher stays outside the method's module tree, as for
every method: the engine's optimizer never sees it, and the teacher step runs under ``torch.enable_grad`` on its
own. Its extra cost is counted (:meth:`AIDOnline.cost_report`).

The parameters are the AID options (``aid``: :class:`~aidkd.aid.objective.AIDParams`; ``ic_target: reference``
means the current student, as does the KD term's target; ``epochs``, ``balanced``, ``K``, ``P``, ``alpha`` and
``acc_tolerance`` belong to the offline adaptation and are not used here) plus the few of the online schedule.
The method is registered with every other method when :mod:`aidkd.methods` is imported.

The adapted teacher's weights, its optimizer and the counters travel in the method's state dict as *extra
state*, so a resumed run continues from the adapted teacher, not from T0.
"""
from __future__ import annotations

import copy
import time
from typing import Optional

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from ..losses.kd import kd_loss
from .base import Batch, Method, MethodParams, register_method
from ..aid.objective import AIDParams, TeacherAdapter


class AIDOnlineParams(MethodParams):
    aid: AIDParams = Field(default_factory=AIDParams)  # the teacher step: objective, optimiser, schedule
    ce_weight: float = Field(1.0, ge=0)  # student: CE
    kd_weight: float = Field(1.0, ge=0)  # student: tau^2 KL(teacher || student) at aid.tau
    teacher_every: int = Field(1, ge=1)  # one teacher step every this many student steps
    adapt_epochs: Optional[int] = Field(None, ge=0)  # adapt only during the first epochs (None: the whole run)

    @field_validator("aid")
    @classmethod
    def _not_mcmi(cls, v: AIDParams) -> AIDParams:
        if not v.finetunes or v.mcmi_weight > 0:
            raise ValueError("aid_online adapts the teacher towards the current student: aid.objective "
                             f"{v.objective!r} is an offline adaptation (use kd or inner_class here)")
        return v


@register_method("aid_online")
class AIDOnline(Method):
    """KD from a teacher that takes an L_AID step towards the current student between student steps."""

    Params = AIDOnlineParams
    teacher_use = "training"

    def __init__(self, student, teacher, params: AIDOnlineParams, ctx):
        super().__init__(student, teacher, params, ctx)  # freezes the teacher; the adapter unfreezes it
        p = self.params
        total = max(1, ((p.adapt_epochs or ctx.epochs) * ctx.steps_per_epoch) // p.teacher_every)
        t0 = copy.deepcopy(teacher).eval() if p.aid.needs_t0 else None
        object.__setattr__(self, "t0", t0)  # frozen original teacher, not a submodule either
        object.__setattr__(self, "adapter", TeacherAdapter(self.teacher, p.aid, total, t0=t0))
        self.student_steps = 0
        self.teacher_time_s = 0.0

    @property
    def teacher_steps(self) -> int:
        return self.adapter.steps

    # -- the teacher step -------------------------------------------------------------------------------------
    def _adapting(self, epoch: int) -> bool:
        p = self.params
        if not self.training:
            return False
        if p.adapt_epochs is not None and epoch >= p.adapt_epochs:
            return False
        return self.student_steps % p.teacher_every == 0

    def _teacher_step(self, batch: Batch, student_logits: torch.Tensor) -> None:
        cuda = batch.images.is_cuda
        if cuda:
            torch.cuda.synchronize(batch.images.device)
        start = time.perf_counter()
        t0 = self.t0
        if t0 is not None and next(t0.parameters(), torch.empty(0)).device != batch.images.device:
            t0.to(batch.images.device)
        self.adapter.step(batch.images, batch.labels, student_logits.detach())
        if cuda:
            torch.cuda.synchronize(batch.images.device)
        self.teacher_time_s += time.perf_counter() - start

    # -- the method -------------------------------------------------------------------------------------------
    def forward(self, batch: Batch, epoch: int):
        p = self.params
        logits = self.student(batch.images)
        if self._adapting(epoch):
            self._teacher_step(batch, logits.detach())
        if self.training:
            self.student_steps += 1
        zt = self.teacher_logits(batch)  # eval mode, no gradients: the updated teacher
        losses = {}
        if p.ce_weight > 0:
            losses["ce"] = p.ce_weight * F.cross_entropy(logits, batch.labels)
        if p.kd_weight > 0:
            losses["kd"] = p.kd_weight * kd_loss(logits, zt, p.aid.tau)
        return logits, losses

    def cost_report(self) -> dict:
        """The online adaptation's extra cost: teacher optimisation steps, their wall time, extra forward passes
        (one training-mode teacher forward + backward per step, plus one T0 forward when L_CS or the tempered
        target needs it), on top of the plain KD cost of one teacher forward per student step."""
        return {
            "teacher_steps": self.teacher_steps,
            "student_steps": self.student_steps,
            "teacher_time_s": self.teacher_time_s,
            "teacher_time_per_step_s": self.teacher_time_s / max(self.teacher_steps, 1),
            "extra_teacher_forwards": self.teacher_steps * (2 if self.t0 is not None else 1),
            "extra_teacher_backwards": self.teacher_steps,
        }

    # -- resume -----------------------------------------------------------------------------------------------
    def get_extra_state(self):
        return {
            "teacher": self.teacher.state_dict(),
            "teacher_opt": self.adapter.optimizer.state_dict(),
            "teacher_steps": self.adapter.steps,
            "student_steps": self.student_steps,
            "teacher_time_s": self.teacher_time_s,
        }

    def set_extra_state(self, state):
        if not state:
            return
        self.teacher.load_state_dict(state["teacher"])
        self.adapter.load_state_dict({"optimizer": state["teacher_opt"], "steps": state.get("teacher_steps", 0)})
        self.student_steps = int(state.get("student_steps", 0))
        self.teacher_time_s = float(state.get("teacher_time_s", 0.0))


__all__ = ["AIDOnline", "AIDOnlineParams"]
