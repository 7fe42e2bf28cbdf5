"""A saved checkpoint evaluated on a split (``aidkd eval``), and the one way to build the data split of a checkpoint's
own config (``aidkd eval``, ``aidkd analyze``). The accuracy itself is the engine's :func:`~aidkd.engine.recipe.evaluate`."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pydantic import ValidationError

from .config import DataConfig, apply_overrides, validation_message
from .data import build_data
from .engine.recipe import evaluate
from .engine.runtime import resolve_device
from .errors import UserError
from .files.checkpoint import FORMAT, checkpoint_config, load_checkpoint
from .models import create_model, load_weights

#: data options that hold on any dataset; the others (``val_split``, ``train_subset``, ...) describe the
#: checkpoint's own dataset and are dropped when another dataset is named
_PORTABLE_DATA_KEYS = ("root", "batch_size", "eval_batch_size", "in_memory", "workers", "download")


def eval_data_config(data: str | None, checkpoints: Sequence[str | Path | dict | None] = (),
                     overrides: list[str] | None = None) -> DataConfig:
    """The data config to evaluate on: the ``data`` section of the first aidkd checkpoint among ``checkpoints``
    (paths or loaded dicts; others are skipped), so that ``val`` and ``train`` are the held-out and training
    samples of that run; ``data`` names the dataset (another dataset keeps only the portable options: root,
    batch sizes, workers); dotted ``overrides`` (``data.root=...``) on top; never augmented or balanced."""
    d: dict = {}
    for c in checkpoints:
        cfg = checkpoint_config(c) if c is not None else None
        if cfg and isinstance(cfg.get("data"), dict):
            d = dict(cfg["data"])
            break
    if data:
        if d.get("name") not in (None, data):
            d = {k: v for k, v in d.items() if k in _PORTABLE_DATA_KEYS}
        d["name"] = data
    if not d.get("name"):
        raise UserError("no dataset: pass --data NAME (the checkpoints are not aidkd checkpoints that name theirs)")
    d = apply_overrides({"data": d}, overrides or [])["data"]
    d.update(augment=False, balanced=None)
    try:
        return DataConfig(**d)
    except ValidationError as e:
        raise UserError(f"bad data option: {validation_message(e, DataConfig)}") from None


def build_split(data: str | None, checkpoints: Sequence[str | Path | dict | None], split: str = "test",
                overrides: list[str] | None = None, device: str = "auto"):
    """(loader of ``split``, DataSpec, device) for :func:`eval_data_config`."""
    dcfg = eval_data_config(data, checkpoints, overrides)
    if split == "val" and dcfg.val_split == 0:
        raise UserError("--split val needs a validation split: add data.val_split=0.1 (as in training)")
    dev = resolve_device(device)
    bundle = build_data(dcfg, device=dev)
    loader = {"test": bundle.test, "val": bundle.val, "train": bundle.train.as_eval()}[split]
    return loader, bundle.spec, dev


def evaluate_checkpoint(path: str, dataset: str | None = None, split: str = "test", model: str | None = None,
                        overrides: list[str] | None = None, device: str = "auto") -> dict:
    """Top-1/top-5 of a checkpoint (an aidkd checkpoint, or a published state dict with ``model`` named)."""
    ck = load_checkpoint(path)
    arch, kwargs = model, {}
    if ck.get("format") == FORMAT:
        arch = arch or ck["arch"]
        kwargs = dict(ck.get("model_kwargs", {}))
    elif arch is None or dataset is None:
        raise UserError(f"{path!r} is not an aidkd checkpoint: pass --model NAME and --data DATASET")
    loader, spec, dev = build_split(dataset, [ck], split, overrides, device)
    net = create_model(arch, num_classes=spec.num_classes, in_chans=spec.input_size[0], input_hw=spec.input_size[1],
                       **kwargs)
    load_weights(net, ck)
    net.to(dev)
    res = evaluate(net, loader, dev)
    return {"checkpoint": str(path), "model": arch, "dataset": spec.name, "split": split, **res}
