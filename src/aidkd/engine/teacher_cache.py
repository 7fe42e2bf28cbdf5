"""A teacher-output cache: the frozen teacher's logits on every training sample, computed once.

Without augmentation the teacher sees the same view of each sample every epoch, so its logits can be computed
once and served by sample index; on a CPU this removes the teacher forward from every step (about 3x on
res32x4 -> res8x4, see docs/results/perf.md). The cache is an *indexed* teacher: methods ask for
``teacher_logits(batch)`` and get ``logits[batch.index]``. Feature-based methods need the real teacher.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..progress import progress_enabled, track_images
from .distributed import all_reduce_sum


class CachedTeacher(nn.Module):
    indexed = True

    def __init__(self, logits: Tensor, source: str = "teacher"):
        super().__init__()
        self.register_buffer("logits", logits)
        self.source = source

    def forward(self, images: Tensor, index: Tensor) -> Tensor:
        return self.logits[index.to(self.logits.device)].to(images.device)

    def forward_features(self, images: Tensor):
        raise UserError(
            f"this method needs the teacher's features, but the teacher is served from a logit cache ({self.source}); "
            "set teacher.cache=off"
        )


@torch.no_grad()
def teacher_logits_on_train(teacher: nn.Module, train_loader, num_train: int, device: torch.device,
                            dtype: torch.dtype | None = None) -> Tensor:
    """Run ``teacher`` over every training sample once (in order, unaugmented) and return (N, C) logits."""
    from .trainer import autocast

    teacher.eval()
    out: Tensor | None = None
    seen = torch.zeros(num_train, device=device)
    for batch in track_images(train_loader.as_eval(), "teacher-output cache", progress_enabled()):
        with autocast(device, dtype):
            z = teacher(batch.images).float()
        if out is None:
            out = torch.zeros(num_train, z.shape[1], device=device)
        out.index_put_((batch.index,), z, accumulate=True)
        seen.index_put_((batch.index,), torch.ones_like(batch.index, dtype=seen.dtype), accumulate=True)
    if out is None:
        raise RuntimeError("the training loader is empty; cannot build a teacher cache")
    all_reduce_sum(out)  # under DDP each rank has filled its own shard
    all_reduce_sum(seen)
    if not bool((seen > 0).all()):
        raise RuntimeError("the training loader did not visit every sample; cannot build a teacher cache")
    return out / seen.unsqueeze(1)
