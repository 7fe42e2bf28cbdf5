"""The optimisation of the training recipe: the optimiser of an ``optim`` section, the learning rate set per step, one
update. The engine's runs and AID's teacher adaptation both step through :func:`optimizer_step`."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..config import OptimConfig


def make_optimizer(params: Iterable[Tensor], o: OptimConfig) -> torch.optim.Optimizer:
    """SGD or AdamW with the settings of an ``optim`` section."""
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, factor: Callable[[int], float]) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate set per step: base rate x ``factor(steps taken)``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(loss: Tensor, optimizer: torch.optim.Optimizer, schedule, average_grads_of: nn.Module | None = None
                   ) -> None:
    """One update: gradients of ``loss`` (bf16 autocast needs no loss scaling), averaged over processes for a
    module that no DDP wrapper averages (``average_grads_of``), the optimiser's step, the schedule's step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if average_grads_of is not None:
        average_grads_over_processes(average_grads_of)
    optimizer.step()
    schedule.step()


def average_grads_over_processes(model: nn.Module) -> None:
    """Under torch.distributed, every parameter's gradient replaced by its mean over processes."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for q in model.parameters():
        if q.grad is not None:
            dist.all_reduce(q.grad)
            q.grad.div_(world)


__all__ = ["average_grads_over_processes", "make_optimizer", "make_schedule", "optimizer_step"]
