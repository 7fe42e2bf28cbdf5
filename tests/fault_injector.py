"""The aidkd command with a fault injected, for the kill tests (tests/test_faults.py): run as
``python tests/fault_injector.py ARGS`` (or as torchrun's script) it is ``aidkd ARGS``, except that with
``AIDKD_FAULT=KIND:N`` the process SIGKILLs itself at the N-th ``KIND`` point of its training runs:

* ``step``: after an optimiser step of the engine's recipe;
* ``metrics``: after an epoch's metrics line is written;
* ``checkpoint``: half-way through writing a run's checkpoint file (before its rename).

``AIDKD_FAULT_RANK=R`` limits it to the process of rank R; ``AIDKD_FAULT_SIGNAL=STOP`` stops the process (a stalled
peer) instead of killing it. Counts are per process, across the runs it makes (a pipeline's stages). The engine
carries no hook of its own: the points are the recipe's functions, wrapped here.
"""
import io
import os
import signal
import sys

import torch

from aidkd.cli import main
from aidkd.engine import recipe
from aidkd.engine.logging import MetricsLogger
from aidkd.files.checkpoint import _atomic_write


def _arm(kind: str, at: int, sig: int) -> None:
    count = {"n": 0}

    def point() -> None:
        count["n"] += 1
        if count["n"] == at:
            os.kill(os.getpid(), sig)

    if kind == "step":
        step = recipe.optimizer_step

        def optimizer_step(*args, **kwargs):
            step(*args, **kwargs)
            point()
        recipe.optimizer_step = optimizer_step
    elif kind == "metrics":
        log = MetricsLogger.log

        def log_then_point(self, record):
            log(self, record)
            point()
        MetricsLogger.log = log_then_point
    elif kind == "checkpoint":
        def save_checkpoint(obj, path):
            buf = io.BytesIO()
            torch.save(obj, buf)
            data = buf.getvalue()

            def write(f):
                f.write(data[: len(data) // 2])
                f.flush()
                point()
                f.write(data[len(data) // 2:])
            _atomic_write(path, write)
        recipe.save_checkpoint = save_checkpoint
    else:
        raise SystemExit(f"AIDKD_FAULT: unknown kind {kind!r}")


if __name__ == "__main__":
    spec = os.environ.get("AIDKD_FAULT")
    rank = os.environ.get("AIDKD_FAULT_RANK")
    if spec and (rank is None or rank == os.environ.get("RANK", "0")):
        kind, at = spec.split(":")
        _arm(kind, int(at), getattr(signal, "SIG" + os.environ.get("AIDKD_FAULT_SIGNAL", "KILL")))
    sys.exit(main(sys.argv[1:]))
