"""Run outputs: metrics to JSONL and TensorBoard (wandb optional), a rich progress bar with img/s and ETA."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class MetricsLogger:
    def __init__(self, run_dir: Path | None, tensorboard: bool, wandb: bool, config: dict | None = None):
        self.path = run_dir / "metrics.jsonl" if run_dir else None
        self.tb = None
        self.wb = None
        if run_dir and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"))
        if run_dir and wandb:
            try:
                import wandb as _wandb
            except ImportError:
                from ..errors import UserError

                raise UserError("train.wandb=true needs the wandb package: pip install aidkd[wandb]") from None
            self.wb = _wandb.init(project="aidkd", name=run_dir.name, config=config, dir=str(run_dir))

    def log(self, record: dict) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
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
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln).get("epoch", 0) <= keep_epochs]
    path.write_text("".join(ln + "\n" for ln in kept))


class EpochProgress:
    """A progress bar over one epoch's steps, showing img/s; silent when disabled or not on rank 0."""

    def __init__(self, enabled: bool, total_epochs: int):
        self.enabled = enabled and sys.stderr.isatty()
        self.total_epochs = total_epochs
        self.progress = None

    def __enter__(self):
        if self.enabled:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[ips]:.0f} img/s"),
                TextColumn("loss {task.fields[loss]:.3f}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.progress.__enter__()
        return self

    def start_epoch(self, epoch: int, steps: int):
        self._t0 = time.perf_counter()
        if self.progress:
            self.task = self.progress.add_task(
                "train", total=steps, epoch=epoch + 1, epochs=self.total_epochs, ips=0.0, loss=0.0
            )

    def update(self, images_seen: int, loss: float):
        if self.progress:
            ips = images_seen / max(time.perf_counter() - self._t0, 1e-9)
            self.progress.update(self.task, advance=1, ips=ips, loss=loss)

    def end_epoch(self):
        if self.progress:
            self.progress.remove_task(self.task)

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)
