"""A run's records: metrics to JSONL and TensorBoard (wandb optional), read back on resume."""
from __future__ import annotations

import json
import os
from pathlib import Path



class MetricsLogger:
    """Appends one JSON line per epoch to ``metrics.jsonl`` and writes TensorBoard (and wandb) scalars.

    The writers open on the first :meth:`log` (the run folder is created only when the first epoch ends).
    ``first_epoch``: the epoch of the first record this logger will write; TensorBoard points from that step on
    are purged when the writer opens, so a resumed run never shows an epoch twice."""

    def __init__(self, run_dir: Path | None, tensorboard: bool, wandb: bool, config: dict | None = None,
                 first_epoch: int = 1):
        self.run_dir, self.use_tb, self.use_wb, self.config = run_dir, tensorboard, wandb, config
        self.path = run_dir / "metrics.jsonl" if run_dir else None
        self.first_epoch = first_epoch
        self.tb = None
        self.wb = None
        self._open = False
        if run_dir and wandb:
            try:
                import wandb  # noqa: F401  (only whether it is installed)
            except ImportError:
                from ..errors import UserError

                raise UserError("train.wandb=true needs the wandb package: pip install aidkd[wandb]") from None

    def _start(self) -> None:
        self._open = True
        if not self.run_dir:
            return
        if self.use_tb:
            from torch.utils.tensorboard import SummaryWriter

            purge = self.first_epoch if self.first_epoch > 1 else None
            self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)
        if self.use_wb:
            import wandb as _wandb

            self.wb = _wandb.init(project="aidkd", name=self.run_dir.name, config=self.config, dir=str(self.run_dir))

    def log(self, record: dict) -> None:
        if not self._open:
            self._start()
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        step = record.get("epoch", 0)
        if self.tb:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(k.replace(".", "/"), v, step)
            self.tb.flush()
        if self.wb:
            self.wb.log(record, step=step)

    def close(self) -> None:
        if self.tb:
            self.tb.close()
        if self.wb:
            self.wb.finish()


def truncate_metrics(path: Path, keep_epochs: int) -> None:
    """On resume, drop records of epochs after the checkpoint so the file has no duplicates."""
    if not path.exists():
        return
    kept = []
    for ln in path.read_text().splitlines():
        try:
            if ln.strip() and json.loads(ln).get("epoch", 0) <= keep_epochs:
                kept.append(ln)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    from ..files.checkpoint import atomic_write_text

    atomic_write_text(path, "".join(ln + "\n" for ln in kept))


def last_evaluated_record(path: Path) -> dict:
    """The metrics record of the last evaluated epoch in ``metrics.jsonl`` ({} when there is none): what a run
    resumed after its last epoch reports as its last evaluation."""
    out: dict = {}
    if path.is_file():
        for ln in path.read_text().splitlines():
            try:
                rec = json.loads(ln)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "test.top1" in rec:
                out = rec
    return out
