"""A stage kind: a frozen model's logits on every view of the training split (one view without augmentation),
the file a student reads as ``teacher.kind: logits``.

The stage writes the views file of :mod:`aidkd.teachers.views` (the same builder, file and serving class as the
engine's ``teacher.cache``) into a plan's own stage folder, keyed by the content of the model's weights and of the
training split, the augmentation's views and the storage precision. The logits are stored in float32, so that a
student distils from exactly the model's outputs on the view its batch holds.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..config import DataConfig
from ..data import build_data
from ..engine.runtime import resolve_device
from ..teachers.views import fingerprint, spec_of_loader, write_views
from .artifacts import load_model
from .core import StageResult, StageStore


def logits_stage(store: StageStore, name: str, checkpoint: str | Path, data: dict, device: str = "cpu",
                 arch: str | None = None, kwargs: dict | None = None) -> StageResult | None:
    """The logits of the model in ``checkpoint`` (``arch``/``kwargs`` for a published state dict) on every view
    of the training split of the data config ``data`` (a dict), as the stage's ``views.pt``; with the store's
    ``reuse_only``, None when it is not finished. The result also holds the model's parameter count and its
    accuracy on the stored views."""
    dev = resolve_device(device)
    d = build_data(DataConfig(**data), device=dev)
    model = load_model(checkpoint, d.spec, arch, kwargs).to(dev).eval()
    loader, classes = d.train, d.spec.num_classes
    spec = spec_of_loader(loader, precision="float32")
    fp = fingerprint(model, loader.images, loader.labels, loader.mean, loader.std, spec)

    def run(folder: Path, overwrite: bool) -> tuple[dict, str]:
        info = write_views(model, model, loader, spec, classes, dev, folder / "views.pt", store.log)
        return {"checkpoint": "views.pt", "source": str(checkpoint), **info}, "ran"

    # the config is the content hash of the weights and the split: the same weights under another path find it
    config = {"content": fp, "spec": asdict(spec), "num_classes": classes}
    return store.run(name, "teacher-views", config, {}, run)


__all__ = ["logits_stage"]
