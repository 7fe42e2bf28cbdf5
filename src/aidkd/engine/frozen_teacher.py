"""The frozen teacher as the engine serves it: lean (the same logits for less arithmetic), and from the shared
view cache when ``teacher.cache`` is on (:func:`serve_teacher`).

A frozen teacher is only ever evaluated, so its batch norms are constant affine maps and can be folded into the
convolutions before them (``torch.fx.experimental.optimization.fuse``: the model is traced and every
conv -> batch norm pair with no other user of the conv's output is replaced by one convolution). It runs under
``torch.inference_mode`` and, optionally, in channels_last memory format. Its logits equal the original
model's to float rounding (tests/test_speed.py checks every CIFAR zoo family with batch norm).

Models whose forward has Python control flow on tensor shapes cannot be traced (VGG, ShuffleV2 in this zoo):
they are served unfolded, and :attr:`LeanTeacher.folded` says so. ``forward_features`` always runs the
original model, so feature-based methods see the features they expect.

Measured on a 2-core CPU (docs/results/lean_teacher.md): against the plain forward under ``no_grad``,
inference mode alone is worth nothing measurable, folding 1.07x (resnet32x4) and 1.27x (resnet56), and
channels_last on top of folding nothing more; the student's step gains 1.15-1.26x from channels_last. So the
teacher folds by default, and the engine's ``train.channels_last`` (on by default) puts the student, its
batches and the teacher in channels_last together. On CUDA the engine's bf16 autocast and ``train.compile``
apply to the teacher's forward as they do to the student's.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..errors import UserError


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, str]:
    """``(folded copy of model in eval mode, "")`` or, when the model cannot be traced, ``(model, reason)``."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(copy.deepcopy(model).eval()), ""
    except Exception as e:  # torch.fx raises several types for untraceable Python (TraceError, TypeError, ...)
        return model, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


class LeanTeacher(nn.Module):
    """A frozen teacher for distillation: ``forward(x)`` gives the logits of the folded model under inference
    mode (as an ordinary tensor, so that losses may save it for their backward); ``forward_features`` and
    ``state_dict`` are the original model's."""

    def __init__(self, model: nn.Module, fold: bool = True, channels_last: bool = False):
        super().__init__()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        fast, why = fold_batchnorm(model) if fold else (model, "folding off")
        self.folded = fast is not model
        self.not_folded_reason = why
        self.channels_last = channels_last
        if channels_last:
            fast = fast.to(memory_format=torch.channels_last)
        object.__setattr__(self, "fast", fast)  # not a submodule: state_dict stays the original model's

    def _apply(self, fn, recurse=True):  # .to(device) / .half() move the folded copy too
        super()._apply(fn, recurse)
        if self.fast is not self.model:
            self.fast._apply(fn, recurse)
        return self

    def train(self, mode: bool = True):
        return super().train(False)  # always evaluated

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self.fast(x)
        return out.clone()  # an inference tensor cannot be saved for backward; a copy of the logits can

    def forward_features(self, x: Tensor):
        return self.model.forward_features(x)


def serve_teacher(cfg, teacher: nn.Module, data, device: torch.device, dtype: torch.dtype | None = None, *,
                  is_main: bool = True, wait=lambda: None, log=print) -> nn.Module:
    """The frozen teacher of run config ``cfg`` as its method will call it: a :class:`LeanTeacher`
    (``teacher.lean``) when the method uses only the teacher's logits, served from the shared view cache
    (:mod:`aidkd.engine.view_cache`) when ``teacher.cache`` is on. ``dtype`` is the run's autocast dtype; under
    DDP the main process builds the cache and the others ``wait``."""
    from ..methods import METHODS

    if getattr(teacher, "indexed", False):  # already serves fixed targets (a projection teacher)
        return teacher
    use = METHODS.get(cfg.method.name).teacher_use
    t = cfg.teacher
    if t.cache != "off" and use != "logits":
        what = "features" if use == "features" else "weights, which it trains"
        raise UserError(f"teacher.cache={t.cache}: method {cfg.method.name!r} needs the teacher's {what}, which a "
                        "logit cache cannot serve; set teacher.cache=off")
    weights = teacher
    if use == "logits" and t.lean:  # in the run's memory format already, for the view cache's build
        teacher = LeanTeacher(teacher, channels_last=cfg.train.channels_last)
    if t.cache == "off":
        return teacher
    from . import view_cache

    loader = data.train
    if not hasattr(loader, "replay_views"):
        raise UserError(f"teacher.cache={t.cache} needs an in-memory dataset; dataset {cfg.data.name!r} is read "
                        "from files here: set data.in_memory=on or teacher.cache=off")
    if t.cache == "sampled" and loader.augment is None:
        raise UserError("teacher.cache=sampled replays stored augmented views, but data.augment is off; use "
                        "teacher.cache=views")
    spec = view_cache.spec_of_loader(loader, t.cache, t.cache_views if t.cache == "sampled" else 0, t.cache_topk,
                                     str(dtype).removeprefix("torch.") if dtype else "float32")
    return view_cache.load_or_build(teacher, weights, loader, spec, data.spec.num_classes, device,
                                    t.cache_budget_gb, source=str(t.checkpoint or t.name), log=log,
                                    is_main=is_main, wait=wait)
