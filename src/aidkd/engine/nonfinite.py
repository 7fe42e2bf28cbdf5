"""What a run does when its loss becomes NaN or inf (``train.on_nonfinite``): stop with one line naming the first bad
step, or skip such steps up to ``train.max_skipped_steps`` in a row."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import RunConfig
from ..errors import UserError
from .distributed import DistInfo, all_reduce_sum


class NonFiniteMonitor:
    """Watches the training loss for NaN / inf.

    ``stop`` mode keeps, on the device, the first bad step of the epoch and the loss terms at that step
    (:meth:`observe` never synchronises); :meth:`check` reads them on the host (every ``train.log_every`` steps and
    at the end of the epoch) and raises one line naming the first bad step exactly. ``skip`` mode decides on the
    host at every step (:meth:`skip_step`), since skipping an update is a host decision."""

    def __init__(self, cfg: RunConfig, device: torch.device, run_dir: Path, dist_info: DistInfo):
        self.mode, self.limit = cfg.train.on_nonfinite, cfg.train.max_skipped_steps
        self.device, self.run_dir, self.dist = device, run_dir, dist_info
        self.in_a_row = 0
        self.names: list[str] = []
        self.start_epoch(0)

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.bad_terms: torch.Tensor | None = None
        self.skipped = 0

    def observe(self, step: int, loss: torch.Tensor, losses: dict) -> None:
        if not self.names:
            self.names = list(losses)
        terms = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        newly = ~torch.isfinite(loss.detach()) & (self.bad_step < 0)
        self.bad_step = torch.where(newly, torch.full_like(self.bad_step, step), self.bad_step)
        self.bad_terms = terms if self.bad_terms is None else torch.where(newly, terms, self.bad_terms)

    def check(self, epochs_done: int) -> None:
        step = int(self.bad_step.item())
        if step >= 0:
            terms = self.bad_terms.tolist() if self.bad_terms is not None else []
            self._fail(step, dict(zip(self.names, terms, strict=True)), epochs_done, "")

    def skip_step(self, step: int, loss: torch.Tensor, losses: dict, epochs_done: int) -> bool:
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        all_reduce_sum(bad)  # every process skips the same steps (DDP needs the same number of backward passes)
        if bad.item() == 0:
            self.in_a_row = 0
            return False
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            self._fail(step, {k: float(v.detach()) for k, v in losses.items()}, epochs_done,
                       f" ({self.in_a_row} non-finite steps in a row, train.max_skipped_steps={self.limit})")
        return True

    def _fail(self, step: int, terms: dict, epochs_done: int, why: str) -> None:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        bad = [k for k, v in terms.items() if not torch.isfinite(torch.tensor(v))]
        last = self.run_dir / "checkpoints" / "last.pt"
        if epochs_done and last.is_file():
            where = (f"the last good checkpoint is {str(last)!r} (epoch {epochs_done}); lower optim.lr (or change "
                     "sched) and rerun with --resume-with-changes")
        else:
            where = "no epoch finished, so nothing was written; lower optim.lr (or change sched) and rerun"
        alt = ("raise train.max_skipped_steps" if self.mode == "skip"
               else "set train.on_nonfinite=skip to drop such steps")
        raise UserError(f"the loss became non-finite at epoch {self.epoch + 1} step {step}"
                        f"{' in ' + ', '.join(bad) if bad else ''} ({shown}){why}; {where}, or {alt}")


__all__ = ["NonFiniteMonitor"]
