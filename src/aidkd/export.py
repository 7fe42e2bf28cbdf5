"""Checkpoints to share: a model's weights as safetensors, with a small JSON of what is needed to use them.

``aidkd export RUN_OR_CKPT --format safetensors`` writes

* ``<name>.safetensors``: the weights (tensors only: a file that cannot execute code when read), with the JSON
  below also in the file's header metadata under ``"aidkd"``, so that the file alone is enough to load;
* ``<name>.json``: the architecture (``arch``, ``model_kwargs``, ``num_classes``, ``in_chans``, ``input_hw``),
  the dataset's class names and normalisation (``mean``, ``std`` of images in [0, 1]), the epoch and metrics of
  the checkpoint, and the run's config.

:func:`read_safetensors` turns such a file back into the dict of an aidkd checkpoint (``format``, ``arch``,
``model``, ``config``...), which is what every checkpoint reader of the package returns for a ``.safetensors``
path; a safetensors file without the header (e.g. a published one) reads as a bare state dict.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError

SUFFIX = ".safetensors"
META_KEY = "aidkd"
#: the checkpoint entries the JSON keeps (besides the weights)
_FIELDS = ("arch", "num_classes", "in_chans", "input_hw", "model_kwargs", "epoch", "metrics")


def is_safetensors(path: str | Path) -> bool:
    return str(path).endswith(SUFFIX)


def read_safetensors(path: str | Path) -> dict:
    """An aidkd checkpoint dict from a ``.safetensors`` file written by :func:`export_safetensors` (or the bare
    state dict of one that has no aidkd header); a missing or unreadable file is a one-line UserError."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint {str(p)!r} not found; check the path")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"checkpoint {str(p)!r} cannot be read as safetensors ({str(e).splitlines()[0][:160]})") from None
    if META_KEY not in header:
        return tensors
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError:
        raise UserError(f"checkpoint {str(p)!r}: its aidkd header is not valid JSON; re-export it") from None
    from .engine.checkpoint import FORMAT

    ck = {k: meta[k] for k in _FIELDS if k in meta}
    ck.update(format=FORMAT, model=tensors, config=json.dumps(meta.get("config") or {}))
    return ck


def _checkpoint_of(source: Path) -> Path:
    if source.is_dir():
        for name in ("best.pt", "last.pt"):
            if (source / "checkpoints" / name).is_file():
                return source / "checkpoints" / name
        raise UserError(f"{source} is not a run directory with checkpoints/best.pt; give a run or a checkpoint file")
    return source


def _data_info(config: dict, num_classes: int | None) -> dict:
    """Class names and normalisation of the run's dataset (from its loader; files are read, nothing trained)."""
    from .config import DataConfig
    from .data.build import load_source

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
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return META_KEY in (f.metadata() or {})
        except (SafetensorError, OSError, ValueError):
            return False
    from .engine.rundir import report_marked

    return report_marked(path)  # the sidecar: a JSON object with written_by aidkd


def export_safetensors(source: str | Path, out: str | Path | None = None, overwrite: bool = False) -> tuple[Path, Path]:
    """Write the student of a run directory (its ``checkpoints/best.pt``) or a checkpoint file as safetensors
    plus JSON (see the module docstring); returns (weights path, JSON path). Existing files are refused unless
    ``overwrite``."""
    from safetensors.torch import save

    from .engine.checkpoint import FORMAT, atomic_write_bytes, atomic_write_text
    from .engine.rundir import check_creatable
    from .models.checkpoint import extract_state_dict, read_checkpoint

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
    meta = {k: obj[k] for k in _FIELDS if k in obj}
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


__all__ = ["META_KEY", "SUFFIX", "export_safetensors", "is_safetensors", "read_safetensors"]
