"""One interface to run independent stages: in this process, in a local process pool, or on a SLURM cluster.

An executor has one method, ``map(fn, items) -> list`` (results in the order of ``items``; a job's error is
raised). ``fn`` and the items must be picklable for the pool and for SLURM (a module-level function and plain
data). A plan runs its stages in waves: every stage of a wave depends only on earlier waves.

* :class:`InProcessExecutor`: one after the other, here (the default of the pipeline; callbacks work);
* :class:`PoolExecutor`: ``concurrent.futures.ProcessPoolExecutor`` with ``workers`` processes (spawned);
* :class:`SubmititExecutor`: jobs submitted through submitit (``pip install aidkd[cluster]``): SLURM on a
  cluster, or submitit's local executor (``cluster="local"``) to test the same path on one machine.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import UserError


class Executor(Protocol):
    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list: ...


class InProcessExecutor:
    def map(self, fn, items):
        return [fn(x) for x in items]


class PoolExecutor:
    def __init__(self, workers: int = 2):
        if workers < 1:
            raise UserError(f"workers must be at least 1 (got {workers})")
        self.workers = workers

    def map(self, fn, items):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if not items:
            return []
        with ProcessPoolExecutor(max_workers=min(self.workers, len(items)), mp_context=mp.get_context("spawn")) as ex:
            return list(ex.map(fn, items))


class SubmititExecutor:
    """``folder``: where submitit keeps its logs and pickles; ``cluster``: None (SLURM when available, else
    local), ``"slurm"`` or ``"local"``; ``parameters``: submitit's (``timeout_min``, ``slurm_partition``,
    ``gpus_per_node``, ...)."""

    def __init__(self, folder: str | Path, cluster: str | None = None, **parameters):
        try:
            import submitit
        except ImportError:
            raise UserError("the SLURM executor needs submitit: pip install 'aidkd[cluster]'") from None
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        if parameters:
            self.executor.update_parameters(**parameters)

    def map(self, fn, items):
        if not items:
            return []
        jobs = self.executor.map_array(fn, list(items))
        return [j.result() for j in jobs]


def make_executor(name: str = "pool", workers: int = 2, folder: str | Path | None = None, **parameters) -> Executor:
    """``inprocess``, ``pool`` (``workers`` processes) or ``slurm`` / ``submitit-local`` (``folder`` for
    submitit's files)."""
    if name == "inprocess":
        return InProcessExecutor()
    if name == "pool":
        return PoolExecutor(workers)
    if name in ("slurm", "submitit-local"):
        if folder is None:
            raise UserError(f"executor {name!r} needs a folder for its job files")
        return SubmititExecutor(folder, cluster="slurm" if name == "slurm" else "local", **parameters)
    raise UserError(f"unknown executor {name!r}; choose inprocess, pool, slurm or submitit-local")


__all__ = ["Executor", "InProcessExecutor", "PoolExecutor", "SubmititExecutor", "make_executor"]
