"""Online AID (``aid_online``): teacher adaptation and distillation interleaved in one run (docs/aid.md section 3).

Every ``teacher_every`` training steps, before the student's step, the teacher takes one L_AID step towards the
*current* student (the student's logits on the same batch, detached):

    L_AID = lambda_ce CE(z^T, y) + lambda_ic L_IC(T -> S) + lambda_cs L_CS(T0 -> T)

with its own SGD optimizer (cosine decay over the run), T0 a frozen copy of the initial teacher. Then the
student is trained with CE + KD from the updated teacher (eval mode, no gradients). The teacher stays outside the
method's module tree, as for every method: the engine's optimizer never sees it, and the teacher step runs under
``torch.enable_grad`` on its own. Its extra cost is counted (:meth:`AIDOnline.cost_report`).

The adapted teacher's weights, its optimizer and the counters travel in the method's state dict as *extra
state*, so a resumed run continues from the adapted teacher, not from T0.
"""
from __future__ import annotations

import copy
import time
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from ..errors import UserError
from ..losses.kd import kd_loss
from ..methods.base import METHODS, Batch, Method, MethodParams
from .adapt import aid_loss, cosine_lr


class AIDOnlineParams(MethodParams):
    tau: float = Field(4.0, gt=0)  # temperature of the student's KD and of the AID loss
    ce_weight: float = Field(1.0, ge=0)  # student: CE
    kd_weight: float = Field(1.0, ge=0)  # student: tau^2 KL(teacher || student)
    lambda_ce: float = Field(1.0, ge=0)  # teacher step: CE
    lambda_ic: float = Field(1.0, ge=0)  # teacher step: L_IC(T -> current student)
    lambda_cs: float = Field(1.0, ge=0)  # teacher step: L_CS(T0 -> T)
    detach_class_weights: bool = True
    ic_target: Literal["reference", "tempered"] = "reference"  # reference = the current student
    beta: Optional[float] = Field(None, gt=0, le=1)
    entropy_weights: Literal["teacher", "own"] = "teacher"
    sinkhorn_iters: int = Field(50, ge=1)
    teacher_lr: float = Field(0.01, gt=0)
    teacher_momentum: float = Field(0.9, ge=0, lt=1)
    teacher_weight_decay: float = Field(5e-4, ge=0)
    teacher_sched: Literal["cosine", "constant"] = "cosine"
    teacher_every: int = Field(1, ge=1)  # one teacher step every this many student steps
    adapt_epochs: Optional[int] = Field(None, ge=0)  # adapt only during the first epochs (None: the whole run)
    freeze_bn: bool = False  # teacher step with eval-mode batch norm


@METHODS.register("aid_online")
class AIDOnline(Method):
    """KD from a teacher that takes an L_AID step towards the current student between student steps."""

    registered_name = "aid_online"
    teacher_use = "training"
    Params = AIDOnlineParams

    def __init__(self, student, teacher, params: AIDOnlineParams, ctx):
        if getattr(teacher, "indexed", False):
            raise UserError("aid_online adapts a real teacher model: turn off teacher.cache and projection teachers")
        super().__init__(student, teacher, params, ctx)  # freezes the teacher; it is unfrozen for its own steps
        p = self.params
        needs_t0 = p.lambda_cs > 0 or (p.lambda_ic > 0 and p.ic_target == "tempered")
        t0 = copy.deepcopy(teacher).eval() if needs_t0 else None
        object.__setattr__(self, "t0", t0)  # frozen original teacher, not a submodule either
        for q in self.teacher.parameters():
            q.requires_grad_(True)
        object.__setattr__(
            self,
            "teacher_opt",
            torch.optim.SGD(
                self.teacher.parameters(), lr=p.teacher_lr, momentum=p.teacher_momentum, weight_decay=p.teacher_weight_decay
            ),
        )
        self.total_teacher_steps = max(1, ((p.adapt_epochs or ctx.epochs) * ctx.steps_per_epoch) // p.teacher_every)
        self.teacher_steps = 0
        self.student_steps = 0
        self.teacher_time_s = 0.0
        self.last_teacher_terms: dict[str, torch.Tensor] = {}

    # -- the teacher step -------------------------------------------------------------------------------------
    def _adapting(self, epoch: int) -> bool:
        p = self.params
        if not self.training:
            return False
        if p.adapt_epochs is not None and epoch >= p.adapt_epochs:
            return False
        return self.student_steps % p.teacher_every == 0

    def _teacher_step(self, batch: Batch, student_logits: torch.Tensor) -> None:
        p = self.params
        cuda = batch.images.is_cuda
        if cuda:
            torch.cuda.synchronize(batch.images.device)
        start = time.perf_counter()
        t0 = self.t0
        if t0 is not None:
            dev = next(t0.parameters(), torch.empty(0)).device
            if dev != batch.images.device:
                t0.to(batch.images.device)
        with torch.enable_grad():
            self.teacher.train(not p.freeze_bn)
            try:
                zt = self.teacher(batch.images)
                with torch.no_grad():
                    z0 = t0(batch.images) if t0 is not None else None
                terms, _ = aid_loss(
                    zt,
                    z0,
                    student_logits.detach(),
                    batch.labels,
                    tau=p.tau,
                    lambda_ce=p.lambda_ce,
                    lambda_ic=p.lambda_ic,
                    lambda_cs=p.lambda_cs,
                    detach_class_weights=p.detach_class_weights,
                    ic_target=p.ic_target,
                    beta=p.beta,
                    entropy_weights=p.entropy_weights,
                    sinkhorn_iters=p.sinkhorn_iters,
                )
                loss = sum(terms.values())
                lr = p.teacher_lr
                if p.teacher_sched == "cosine":
                    lr = cosine_lr(p.teacher_lr, self.teacher_steps, self.total_teacher_steps)
                for g in self.teacher_opt.param_groups:
                    g["lr"] = lr
                self.teacher_opt.zero_grad(set_to_none=True)
                loss.backward()
                _all_reduce_grads(self.teacher)
                self.teacher_opt.step()
            finally:
                self.teacher.eval()
        self.last_teacher_terms = {k: v.detach() for k, v in terms.items()}
        if cuda:
            torch.cuda.synchronize(batch.images.device)
        self.teacher_time_s += time.perf_counter() - start
        self.teacher_steps += 1

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
            losses["kd"] = p.kd_weight * kd_loss(logits, zt, p.tau)
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
            "teacher_opt": self.teacher_opt.state_dict(),
            "teacher_steps": self.teacher_steps,
            "student_steps": self.student_steps,
            "teacher_time_s": self.teacher_time_s,
        }

    def set_extra_state(self, state):
        if not state:
            return
        self.teacher.load_state_dict(state["teacher"])
        self.teacher_opt.load_state_dict(state["teacher_opt"])
        self.teacher_steps = int(state.get("teacher_steps", 0))
        self.student_steps = int(state.get("student_steps", 0))
        self.teacher_time_s = float(state.get("teacher_time_s", 0.0))


def _all_reduce_grads(model: torch.nn.Module) -> None:
    """Average the teacher's gradients over processes under torch.distributed, so that every rank's copy of the
    adapting teacher stays identical (the teacher is not wrapped in DDP)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for q in model.parameters():
        if q.grad is not None:
            dist.all_reduce(q.grad)
            q.grad.div_(world)


__all__ = ["AIDOnline", "AIDOnlineParams"]
