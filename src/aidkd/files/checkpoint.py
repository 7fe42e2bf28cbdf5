"""Checkpoints, the one module: their format, writing (atomically: temp file + rename) and reading (weights only).

* Format: an aidkd checkpoint is a dict with ``format`` = :data:`FORMAT`, ``arch``, ``num_classes``,
  ``in_chans``, ``input_hw``, ``model_kwargs``, ``model`` (the state dict), ``epoch`` and ``config`` (the run
  config as a JSON string); a training run's ``last.pt`` adds the method, optimizer, scheduler and RNG state.
  :func:`model_checkpoint` builds the model part, :func:`checkpoint_config` reads the config back.
* Writing: :func:`save_checkpoint` (any dict of tensors), :func:`atomic_write_bytes` / ``_text`` / ``_json``: a
  reader sees the old file or the new one, never a partial one.
* Reading: :func:`read_checkpoint` (``torch.load(weights_only=True)`` on the CPU, with exactly the numpy scalars and
  dtypes some published checkpoints carry allowed), :func:`load_checkpoint` (the same, and it must be a dict).
  A missing or unreadable file is a one-line :class:`~aidkd.errors.UserError`; no file can execute code.

Loading weights into a model (published layouts, prefixes, shape checks): :mod:`aidkd.models.checkpoint`.
"""
from __future__ import annotations

import importlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from ..errors import UserError

FORMAT = "aidkd-checkpoint-v1"
_SAFE_NUMPY = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype", "numpy.dtypes.")


def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file under the process's umask (temp files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temp file in the target's folder, fsync it, then rename it over ``path``: readers see
    the old file or the new one, never a partial one; on failure the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json_object(path: str | Path) -> dict | None:
    """The JSON object in a regular file, or None: missing, a link, unreadable, not JSON, or not an object."""
    p = Path(path)
    if p.is_symlink() or not p.is_file():
        return None
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return msg[0][:160] if msg else type(e).__name__


def _resolve(name: str):
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def read_checkpoint(path: str | Path):
    """``torch.load`` a file safely (weights only, on the CPU), or read a ``.safetensors`` file
    (:func:`read_safetensors`); a bad file is a one-line UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint {str(p)!r} not found; check the path")
    if is_safetensors(p):
        return read_safetensors(p)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, not a torch file, or unsafe globals
        first = e
    # published checkpoints sometimes carry numpy scalars (an accuracy, an epoch): allow exactly those
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(p)
    except Exception:  # noqa: BLE001
        unsafe = []
    if unsafe and all(u.startswith(_SAFE_NUMPY) for u in unsafe):
        try:
            import numpy as np

            dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")] \
                if hasattr(np, "dtypes") else []
            with torch.serialization.safe_globals([_resolve(u) for u in unsafe] + dtypes):
                return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            first = e
    if unsafe:  # anything else could run code when unpickled
        raise UserError(f"checkpoint {str(p)!r} is unsafe: it holds pickled objects other than tensors "
                        f"({', '.join(unsafe[:3])}), so it was refused (load only checkpoints you trust, re-saved as "
                        "plain state dicts)")
    raise UserError(f"checkpoint {str(p)!r} cannot be read ({_first_line(first)}); it is corrupt or not a PyTorch file")


def load_checkpoint(path: str | Path) -> dict:
    """:func:`read_checkpoint` of a file that must hold a dict (a checkpoint, not a bare tensor)."""
    obj = read_checkpoint(path)
    if not isinstance(obj, dict):
        raise UserError(f"checkpoint {str(path)!r} does not hold a dict of weights")
    return obj


def model_checkpoint(model: torch.nn.Module, arch: str, spec, model_kwargs: dict, config: dict, epoch: int,
                     in_chans: int | None = None) -> dict:
    """The model part of an aidkd checkpoint: ``model``'s weights, what builds it again (``arch``, the data of
    ``spec``, a :class:`~aidkd.data.DataSpec`, ``model_kwargs``), the run ``config`` and the ``epoch``."""
    return {
        "format": FORMAT, "arch": arch, "num_classes": spec.num_classes,
        "in_chans": in_chans or spec.input_size[0], "input_hw": spec.input_size[1],
        "model_kwargs": dict(model_kwargs), "model": model.state_dict(), "epoch": int(epoch),
        "config": json.dumps(config),
    }


def checkpoint_config(path_or_checkpoint: str | Path | dict) -> dict | None:
    """The run config stored in an aidkd checkpoint (a dict), or None for any other file."""
    obj = path_or_checkpoint if isinstance(path_or_checkpoint, dict) else read_checkpoint(path_or_checkpoint)
    if isinstance(obj, dict) and obj.get("format") == FORMAT and isinstance(obj.get("config"), str):
        return json.loads(obj["config"])
    return None


def rng_state() -> dict:
    st = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": st[0], "keys": torch.from_numpy(st[1].astype(np.int64)), "pos": int(st[2]),
                  "has_gauss": int(st[3]), "cached": float(st[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------- safetensors
SUFFIX = ".safetensors"
META_KEY = "aidkd"
#: the checkpoint entries the JSON keeps (besides the weights)
SAFETENSORS_FIELDS = ("arch", "num_classes", "in_chans", "input_hw", "model_kwargs", "epoch", "metrics")


def is_safetensors(path: str | Path) -> bool:
    return str(path).endswith(SUFFIX)


def read_safetensors(path: str | Path) -> dict:
    """An aidkd checkpoint dict from a ``.safetensors`` file written by :func:`aidkd.export.export_safetensors` (or the bare
    state dict of one that has no aidkd header); a missing or unreadable file is a one-line UserError."""
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
    ck = {k: meta[k] for k in SAFETENSORS_FIELDS if k in meta}
    ck.update(format=FORMAT, model=tensors, config=json.dumps(meta.get("config") or {}))
    return ck
