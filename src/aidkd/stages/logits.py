"""A stage kind: a frozen model's logits on every view of the training split (one view without augmentation),
the file a student reads as ``teacher.kind: logits``.

It is the engine's view cache (:mod:`aidkd.engine.view_cache`, kind ``teacher-views``) kept in a plan's own stage
folder: the same builder, file and serving class, keyed by the content of the model's weights and of the training
split, the augmentation's views and the storage precision. The logits are stored in float32, so that a student
distils from exactly the model's outputs on the view its batch holds.
"""
from __future__ import annotations

from pathlib import Path

from .core import StageResult, StageStore


def logits_stage(store: StageStore, name: str, checkpoint: str | Path, data: dict, device: str = "cpu",
                 arch: str | None = None, kwargs: dict | None = None) -> StageResult | None:
    """The logits of the model in ``checkpoint`` (``arch``/``kwargs`` for a published state dict) on every view
    of the training split of the data config ``data`` (a dict), as the stage's ``views.pt``; with the store's
    ``reuse_only``, None when it is not finished. The result also holds the model's parameter count and its
    accuracy on the stored views."""
    from ..config import DataConfig
    from ..data import build_data
    from ..engine.trainer import resolve_device
    from ..engine.view_cache import spec_of_loader, view_cache_stage
    from .artifacts import load_model

    dev = resolve_device(device)
    d = build_data(DataConfig(**data), device=dev)
    model = load_model(checkpoint, d.spec, arch, kwargs).to(dev).eval()
    spec = spec_of_loader(d.train, precision="float32")
    res = view_cache_stage(model, model, d.train, spec, d.spec.num_classes, dev, source=str(checkpoint),
                           log=store.log, root=store.root, name=name, reuse_only=store.reuse_only)
    return None if res is None else store.add(res)


__all__ = ["logits_stage"]
