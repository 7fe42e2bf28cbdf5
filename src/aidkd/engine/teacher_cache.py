"""A teacher-output cache: the frozen teacher's logits on every training sample, computed once.

Without augmentation the teacher sees the same view of each sample every epoch, so its logits can be computed
once and served by sample index (:class:`CachedTeacher`, one kind of :class:`IndexedTeacher`); on a CPU this removes the teacher forward from every step (about 3x on
res32x4 -> res8x4, see docs/results/perf.md). The cache is an *indexed* teacher: methods ask for
``teacher_logits(batch)`` and get ``logits[batch.index]``. Feature-based methods need the real teacher.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..progress import progress_enabled, track_images
from .distributed import all_reduce_sum


class IndexedTeacher(nn.Module):
    """A teacher that serves fixed per-sample logits by sample index (``forward(images, index)``); it has no
    features, so it serves logit-based methods only. Subclasses say how the logits of ``index`` are made."""

    indexed = True
    source = "per-sample outputs"

    @property
    def table(self) -> Tensor:
        """The (num_samples, num_classes) buffer the logits are made from."""
        raise NotImplementedError

    @property
    def num_samples(self) -> int:
        return self.table.shape[0]

    @property
    def num_classes(self) -> int:
        return self.table.shape[1]

    def logits_at(self, index: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, images: Tensor, index: Tensor | None) -> Tensor:
        if index is None:
            raise UserError(f"the teacher serves per-sample outputs ({self.source}) and needs sample indices in "
                            "every batch")
        return self.logits_at(index.long()).to(images.device)

    def forward_features(self, images: Tensor):
        raise UserError(
            f"this method needs the teacher's features, but the teacher serves per-sample outputs ({self.source}); "
            "use a logit-based method or a teacher model (teacher.kind: model, teacher.cache: false)"
        )

    def check_fits(self, num_train: int, num_classes: int, where: str) -> None:
        """A one-line error when the table does not belong to this training split."""
        if (self.num_samples, self.num_classes) != (num_train, num_classes):
            raise UserError(f"{where} holds outputs for {self.num_samples} samples x {self.num_classes} classes, but "
                            f"the training split has {num_train} samples x {num_classes} classes; build it from "
                            "the same data config")


class CachedTeacher(IndexedTeacher):
    """A frozen teacher's logits on every training sample (``teacher.kind: logits`` or ``teacher.cache``)."""

    def __init__(self, logits: Tensor, source: str = "teacher"):
        super().__init__()
        self.register_buffer("logits", logits)
        self.source = source

    @property
    def table(self) -> Tensor:
        return self.logits

    def logits_at(self, index: Tensor) -> Tensor:
        return self.logits[index.to(self.logits.device)]

    def save(self, path: str | Path) -> None:
        """Write the table (atomically) as ``{"logits": (N, C) float32, "source": str}``."""
        from .checkpoint import save_checkpoint

        save_checkpoint({"logits": self.logits.detach().float().cpu(), "source": self.source}, path)

    @classmethod
    def load(cls, path: str | Path) -> "CachedTeacher":
        from .checkpoint import load_checkpoint

        obj = load_checkpoint(path)
        if not isinstance(obj, dict) or not isinstance(obj.get("logits"), Tensor):
            raise UserError(f"{str(path)!r} is not a teacher-output file (written by a logits stage); "
                            "check teacher.checkpoint and teacher.kind")
        return cls(obj["logits"], source=str(path))


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
