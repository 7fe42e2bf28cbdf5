"""A stage kind: a frozen model's logits on every training sample, served to students as ``teacher.kind: logits``.

The table is computed once per (model file content, data config) and reused by every run that distils from that
model; without augmentation the teacher sees the same view of each sample every epoch, so the students' numbers
are those of distilling from the model itself.
"""
from __future__ import annotations

from pathlib import Path

from .core import StageResult, StageStore


def logits_stage(store: StageStore, name: str, checkpoint: str | Path, data: dict, device: str = "cpu",
                 arch: str | None = None, kwargs: dict | None = None) -> StageResult | None:
    """The training-split logits of the model in ``checkpoint`` (``arch``/``kwargs`` for a published state dict)
    on the data of the data config ``data`` (a dict), as the stage's ``logits.pt``. The result also holds the
    model's parameter count and its accuracy on the training views."""
    config = {"data": data, "device": device, "arch": arch, "kwargs": kwargs or {}}

    def run(folder: Path, overwrite: bool) -> tuple[dict, str]:
        from ..config import DataConfig
        from ..data import build_data
        from ..engine.teacher_cache import CachedTeacher, teacher_logits_on_train
        from ..engine.trainer import resolve_device
        from ..models import num_params
        from .artifacts import load_model

        dev = resolve_device(device)
        d = build_data(DataConfig(**data), device=dev)
        model = load_model(checkpoint, d.spec, arch, kwargs).to(dev).eval()
        logits = teacher_logits_on_train(model, d.train, d.spec.num_train, dev)
        CachedTeacher(logits, source=str(checkpoint)).save(folder / "logits.pt")
        acc = 100.0 * float((logits.argmax(1).cpu() == d.train.labels.cpu()).double().mean())
        return {"checkpoint": "logits.pt", "num_params": num_params(model), "train_view_acc": acc,
                "shape": list(logits.shape)}, "ran"

    return store.run(name, "logits", config, {"model": checkpoint}, run)


__all__ = ["logits_stage"]
