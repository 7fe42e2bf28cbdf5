"""Evaluate a checkpoint on a split."""
from __future__ import annotations

import json

from .config import DataConfig, apply_overrides
from .engine.checkpoint import FORMAT, load_checkpoint
from .errors import UserError


def evaluate_checkpoint(path: str, dataset: str | None = None, split: str = "test", model: str | None = None,
                        overrides: list[str] | None = None, device: str = "auto") -> dict:
    """Top-1/top-5 of a checkpoint (an aidkd checkpoint, or a published state dict with ``model`` named)."""
    from pydantic import ValidationError

    from .data import build_data
    from .engine.trainer import evaluate, resolve_device
    from .models import create_model, load_weights

    ck = load_checkpoint(path)
    data_d: dict = {}
    arch = model
    kwargs: dict = {}
    if ck.get("format") == FORMAT:
        cfg = json.loads(ck["config"])
        data_d = dict(cfg.get("data", {}))
        arch = arch or ck["arch"]
        kwargs = dict(ck.get("model_kwargs", {}))
    elif arch is None or dataset is None:
        raise UserError(f"{path!r} is not an aidkd checkpoint: pass --model NAME and --data DATASET")
    if dataset:
        data_d["name"] = dataset
    data_d = apply_overrides({"data": data_d}, overrides or [])["data"]
    data_d.update(augment=False, balanced=None, train_subset=data_d.get("train_subset"))
    try:
        dcfg = DataConfig(**data_d)
    except ValidationError as e:
        raise UserError(f"bad data option: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}") from None
    if split == "val" and dcfg.val_split == 0:
        raise UserError("--split val needs a validation split: add data.val_split=0.1 (as in training)")
    dev = resolve_device(device)
    data = build_data(dcfg, device=dev)
    spec = data.spec
    net = create_model(arch, num_classes=spec.num_classes, in_chans=spec.input_size[0], input_hw=spec.input_size[1], **kwargs)
    load_weights(net, ck)
    net.to(dev)
    loader = {"test": data.test, "val": data.val, "train": data.train.as_eval()}[split]
    res = evaluate(net, loader, dev)
    return {"checkpoint": str(path), "model": arch, "dataset": dcfg.name, "split": split, **res}
