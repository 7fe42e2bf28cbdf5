"""The training engine: one recipe (:mod:`.recipe`) for every model, method and dataset, composed into
:func:`train` with the run folder's rules (:mod:`.trainer`).

The package's lower modules (:mod:`.runtime`, :mod:`.precision`, :mod:`.distributed`, :mod:`.schedule`) are used by
layers below the trainer (the teachers, AID's objective), so this package imports nothing on its own: ``train``,
``evaluate`` and ``read_summary`` are loaded when first asked for.
"""
from __future__ import annotations

import importlib

_NAMES = {"train": "trainer", "read_summary": "trainer", "evaluate": "recipe"}


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'aidkd.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)


__all__ = ["evaluate", "read_summary", "train"]
