"""Checkpoints to share: a model's weights as safetensors, with a small JSON of what is needed to use them.

``aidkd export RUN_OR_CKPT --format safetensors`` writes

* ``<name>.safetensors``: the weights (tensors only: a file that cannot execute code when read), with the JSON
  below also in the file's header metadata under ``"aidkd"``, so that the file alone is enough to load;
* ``<name>.json``: the architecture (``arch``, ``model_kwargs``, ``num_classes``, ``in_chans``, ``input_hw``),
  the dataset's class names and normalisation (``mean``, ``std`` of images in [0, 1]), the epoch and metrics of
  the checkpoint, and the run's config.

:func:`aidkd.files.checkpoint.read_safetensors` turns such a file back into the dict of an aidkd checkpoint (``format``, ``arch``,
``model``, ``config``...), which is what every checkpoint reader of the package returns for a ``.safetensors``
path; a safetensors file without the header (e.g. a published one) reads as a bare state dict.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .config import DataConfig
from .data.build import load_source
from .errors import UserError
from .files.checkpoint import (FORMAT, META_KEY, SAFETENSORS_FIELDS, SUFFIX, atomic_write_bytes, atomic_write_text,
                               is_safetensors, read_checkpoint)
from .files.rundir import check_creatable, report_marked
from .models.checkpoint import extract_state_dict


def _checkpoint_of(source: Path) -> Path:
    if source.is_dir():
        for name in ("best.pt", "last.pt"):
            if (source / "checkpoints" / name).is_file():
                return source / "checkpoints" / name
        raise UserError(f"{source} is not a run directory with checkpoints/best.pt; give a run or a checkpoint file")
    return source


def _data_info(config: dict, num_classes: int | None) -> dict:
    """Class names and normalisation of the run's dataset (from its loader; files are read, nothing trained)."""
    data = dict(config.get("data") or {})
    if not data:
        return {"dataset": None, "classes": None, "mean": None, "std": None}
    try:
        src = load_source(DataConfig(**{**data, "download": False}))
    except UserError as e:
        raise UserError(f"the normalisation of dataset {data.get('name')!r} needs its files ({e})") from None
    classes = list(src.classes) if src.classes else None
    if classes is not None and num_classes is not None and len(classes) != num_classes:
        classes = None
    return {"dataset": src.name, "classes": classes, "mean": list(src.mean), "std": list(src.std)}


def _written_by_aidkd(path: Path) -> bool:
    """Whether an existing file is an export of aidkd's: weights with its header, or a sidecar with its mark."""
    if is_safetensors(path):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return META_KEY in (f.metadata() or {})
        except (SafetensorError, OSError, ValueError):
            return False
    return report_marked(path)  # the sidecar: a JSON object with written_by aidkd


def export_safetensors(source: str | Path, out: str | Path | None = None, overwrite: bool = False) -> tuple[Path, Path]:
    """Write the student of a run directory (its ``checkpoints/best.pt``) or a checkpoint file as safetensors
    plus JSON (see the module docstring); returns (weights path, JSON path). Existing files are refused unless
    ``overwrite``."""
    src = Path(source)
    if not src.exists():
        raise UserError(f"{str(src)!r} not found: give a run directory or a checkpoint file")
    ckpt = _checkpoint_of(src)
    obj = read_checkpoint(ckpt)
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise UserError(f"{ckpt} is not an aidkd checkpoint (no architecture recorded); export needs one written "
                        "by aidkd train / distill / adapt")
    sd, _ = extract_state_dict(obj, f"checkpoint {str(ckpt)!r}")
    config = json.loads(obj["config"]) if isinstance(obj.get("config"), str) else {}
    meta = {k: obj[k] for k in SAFETENSORS_FIELDS if k in obj}
    meta.update(_data_info(config, obj.get("num_classes")), source=str(ckpt.resolve()), config=config,
                written_by="aidkd")

    weights = Path(out) if out else (src / f"{src.name}{SUFFIX}" if src.is_dir() else ckpt.with_suffix(SUFFIX))
    if not is_safetensors(weights):
        raise UserError(f"--out {weights}: the file name must end in {SUFFIX}")
    sidecar = weights.with_suffix(".json")
    check_creatable(weights.parent, "--out")
    for p in (weights, sidecar):
        if p.is_symlink() or (p.exists() and not p.is_file()):
            raise UserError(f"--out: {p} exists and is not a file; choose another --out")
        if p.exists() and not overwrite:
            raise UserError(f"{p} exists; pass --overwrite to replace it")
        if p.exists() and not _written_by_aidkd(p):
            raise UserError(f"--overwrite refused: {p} was not written by aidkd export (it carries no aidkd mark); "
                            "move it away or choose another --out")
    # contiguous copies: safetensors refuses tensors that share memory (tied weights)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}
    text = json.dumps(meta, indent=1, default=str)
    atomic_write_bytes(weights, save(tensors, metadata={META_KEY: text}))
    atomic_write_text(sidecar, text + "\n")
    return weights, sidecar


__all__ = ["export_safetensors"]
