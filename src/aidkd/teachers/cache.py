"""The shared teacher-output cache of ``teacher.cache``: one :mod:`views file <aidkd.teachers.views>` per content
fingerprint, built once and read by every run, seed and method that distils from the same teacher on the same data.

The cache lives under ``$AIDKD_CACHE`` (default ``~/.cache/aidkd/teacher_views``, outside any run folder), one
folder per fingerprint (:func:`aidkd.teachers.views.fingerprint`: the teacher's weights, the training split, the
augmentation, the storage format)::

    <root>/<fingerprint>/views.pt     the stored logits (written atomically)
    <root>/<fingerprint>/info.json    what the build measured, written last: the folder is finished

A build holds an exclusive lock on its fingerprint (``fcntl.flock``), so two processes that need the same cache
build it once; the storage cost is printed before the build starts, and a build beyond ``teacher.cache_budget_gb``
is refused with the number.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..files.checkpoint import atomic_write_json, read_json_object
from ..files.rundir import check_creatable, clean_stale_tmp
from .views import CacheSpec, ViewsTeacher, describe_cost, fingerprint, human_bytes, serve_views, storage_bytes, write_views

INFO = "info.json"


def cache_root() -> Path:
    """``$AIDKD_CACHE`` or ``~/.cache/aidkd/teacher_views``."""
    env = os.environ.get("AIDKD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "aidkd" / "teacher_views"


@contextlib.contextmanager
def _locked(root: Path, fp: str):
    """An exclusive lock on the cache ``fp`` in ``root`` while it is looked for and built, so that processes that
    need the same cache build it once (different caches build in parallel)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".teacher-views-{fp}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_views(teacher: nn.Module, weights: nn.Module, loader, spec: CacheSpec, num_classes: int,
                 device: torch.device, budget_gb: float = float("inf"), log=print, is_main: bool = True,
                 wait=lambda: None, root: str | Path | None = None) -> tuple[Path, str]:
    """``(views.pt of the cache of teacher over loader's training split, "found" | "built")``: found when the
    folder of its fingerprint is finished, else built by the main process under the cache's lock (the others
    ``wait``, then find it). ``weights`` is the module whose weights identify the teacher."""
    root = Path(root).expanduser() if root is not None else cache_root()
    check_creatable(root, "AIDKD_CACHE")  # a file there, or a folder that cannot be written
    fp = fingerprint(weights, loader.images, loader.labels, loader.mean, loader.std, spec)
    folder = root / fp

    def finished() -> bool:
        return read_json_object(folder / INFO) is not None and (folder / "views.pt").is_file()

    status = "found"
    if not finished() and is_main:
        n = loader.images.shape[0]
        need = storage_bytes(n, spec.stored_views, num_classes, spec.topk, spec.precision)
        if need > budget_gb * 1e9:  # refused before a line is printed or a file is made
            raise UserError(f"the teacher view cache needs {human_bytes(need)}, over teacher.cache_budget_gb="
                            f"{budget_gb:g}; raise the budget, store fewer classes (teacher.cache_topk=10) or "
                            "fewer views (teacher.cache=sampled)")
        with _locked(root, fp):
            if not finished():  # else built by another process while this one waited for the lock
                log(f"teacher view cache {fp}: {describe_cost(n, spec, num_classes)}")
                folder.mkdir(parents=True, exist_ok=True)
                clean_stale_tmp(folder)  # the temp file of a build that was killed (as large as the cache)
                info = write_views(teacher, weights, loader, spec, num_classes, device, folder / "views.pt", log)
                atomic_write_json(folder / INFO, {"fingerprint": fp, **info})
                status = "built"
    wait()
    if not finished():
        raise UserError(f"the teacher view cache {fp} was not built in {root}; rerun")
    return folder / "views.pt", status


def serve_cached(teacher: nn.Module, weights: nn.Module, loader, spec: CacheSpec, num_classes: int,
                 device: torch.device, budget_gb: float, source: str = "teacher", log=print, is_main: bool = True,
                 wait=lambda: None) -> ViewsTeacher:
    """The :class:`~aidkd.teachers.views.ViewsTeacher` of ``teacher`` over ``loader``'s training split, from its
    cache (:func:`cached_views`); ``teacher`` serves images that are no view of the split."""
    path, _ = cached_views(teacher, weights, loader, spec, num_classes, device, budget_gb, log, is_main, wait)
    return serve_views(path, loader, teacher, source=f"{source}, cache {path.parent.name[:10]}")


__all__ = ["cache_root", "cached_views", "serve_cached"]
