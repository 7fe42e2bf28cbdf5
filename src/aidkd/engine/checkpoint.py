"""Checkpoints: written atomically (temp file + rename), read with ``weights_only=True``."""
from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

from ..errors import UserError
from ..export import is_safetensors, read_safetensors

FORMAT = "aidkd-checkpoint-v1"


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


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely; a missing or unreadable file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} not found; check the path")
    if is_safetensors(path):
        return read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or not a torch file
        if "global" in str(e).lower() and "weights only" in str(e).lower():  # refused pickled objects: could run code
            raise UserError(f"checkpoint {str(path)!r} is unsafe: it holds pickled objects other than tensors, so "
                            "it was refused (load only checkpoints you trust, re-saved as plain state dicts)") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {str(path)!r} cannot be read ({first[:160]}); it is corrupt or not a PyTorch file") from None
    if not isinstance(obj, dict):
        raise UserError(f"checkpoint {str(path)!r} does not hold a dict of weights")
    return obj


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
