"""torch.distributed helpers: the same command runs alone or under ``torchrun`` (DDP; nccl on CUDA, gloo on CPU).

Every collective has a timeout (``train.dist_timeout_s``, default 300 s): the process group is created with it,
so a peer that stalls (SIGSTOP) or dies ends the job instead of hanging it; :func:`distributed_errors` turns the
timeout or the lost connection into one line naming this process's rank. On gloo the timeout applies to each
collective as it is. On nccl PyTorch applies it through its watchdog (``TORCH_NCCL_ASYNC_ERROR_HANDLING``, on by
default in current releases), which aborts the process when a collective exceeds it.

``WORLD_SIZE`` > 1 without ``RANK`` or without a rendezvous (``MASTER_ADDR`` / ``MASTER_PORT``, which torchrun
sets) is refused at once with one line, instead of waiting for peers that will never come; with a rendezvous,
each process says at once what it waits for (its rank, the timeout and the address) before it waits.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from ..errors import UserError

T = TypeVar("T")


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: str | None = None) -> int:
    raw = os.environ.get(name, default)
    if raw is None:
        raise UserError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} is set but {name} is not; start several "
                        "processes with torchrun (torchrun --nproc_per_node N -m aidkd.cli ...) or unset WORLD_SIZE")
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer; unset it or start with torchrun") from None


def init_distributed(device_type: str, timeout_s: float = 300.0) -> DistInfo:
    """Join the process group that ``torchrun`` describes through environment variables (no-op when alone)."""
    world = _env_int("WORLD_SIZE", "1")
    if world <= 1:
        return DistInfo()
    rank = _env_int("RANK")
    local = _env_int("LOCAL_RANK", "0")
    if not 0 <= rank < world:
        raise UserError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world}); start with torchrun")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing and not dist.is_initialized():
        raise UserError(f"WORLD_SIZE={world} and RANK={rank} are set but {' and '.join(missing)} are not: there is "
                        "no rendezvous; start with torchrun, or unset WORLD_SIZE and RANK to train in one process")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        # said at once: a process started without its peers would otherwise wait silently for the whole timeout
        print(f"rank {rank} of {world}: waiting up to {timeout_s:g} s (train.dist_timeout_s) for the other "
              f"{world - 1} process{'es' if world > 2 else ''} at {os.environ.get('MASTER_ADDR')}:"
              f"{os.environ.get('MASTER_PORT')}", flush=True)
        try:
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError, OSError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError(f"rank {rank} of {world}: the process group did not form within {timeout_s:g} s at "
                            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} ({first}); start every "
                            "process with torchrun, or raise train.dist_timeout_s") from None
    return DistInfo(rank, world, local)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_errors(info: DistInfo, timeout_s: float):
    """Turn a collective's timeout or a lost peer into a UserError naming this rank (only under torchrun)."""
    if not info.enabled:
        yield
        return
    try:
        yield
    except UserError:
        raise
    except RuntimeError as e:  # gloo / nccl errors (DistBackendError is a RuntimeError)
        text = str(e)
        low = text.lower()
        if not any(w in low for w in ("timed out", "timeout", "connection", "peer", "gloo", "nccl", "closed")):
            raise
        first = text.strip().splitlines()[0][:160] if text.strip() else type(e).__name__
        raise UserError(f"rank {info.rank} of {info.world_size}: a collective failed or timed out (limit "
                        f"{timeout_s:g} s, train.dist_timeout_s): another process stalled or died ({first}); rerun "
                        "the same command to resume from the last checkpoint") from None


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj):
    if dist.is_available() and dist.is_initialized():
        lst = [obj]
        dist.broadcast_object_list(lst, src=0)
        return lst[0]
    return obj


def on_main(info: DistInfo, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give every rank its result; a UserError there is raised on every rank (so
    no process is left waiting in a collective for one that gave up)."""
    if not info.enabled:
        return fn()
    out: tuple = ("ok", None)
    if info.is_main:
        try:
            out = ("ok", fn())
        except UserError as e:
            out = ("error", str(e))
    out = broadcast_object(out)
    if out[0] == "error":
        raise UserError(out[1])
    return out[1]
