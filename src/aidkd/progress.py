"""Progress bars for long work (pipeline stages, teacher adaptation, the teacher-output cache, benchmarks).

One rule decides whether a bar is drawn (:func:`progress_enabled`): never with ``quiet``, never when the
environment variable ``CI`` is set, never when stderr is not a terminal. Every bar shows what is running, its
ETA and the images per second.

* :class:`StageProgress`: one bar per pipeline stage, fed by the pipeline's ``on_epoch_end(stage, epoch,
  record)`` hook (the record's ``train.img_per_s`` gives the speed).
* :func:`track_images`: wraps an iterable of batches (anything with ``labels``, or ``(images, labels, ...)``
  tuples) in a bar that counts batches and images.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def progress_enabled(quiet: bool = False) -> bool:
    """Whether to draw a bar: not ``quiet``, not in CI (env ``CI`` set), and stderr is a terminal."""
    from .engine.logging import console

    return not quiet and not os.environ.get("CI") and console.is_terminal


def _progress(unit: str) -> Progress:
    from .engine.logging import console

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        TextColumn("{task.fields[ips]:.0f} img/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=True,
    )


class StageProgress:
    """A bar per pipeline stage, advanced after every epoch; use ``hook`` as the pipeline's ``on_epoch_end``.

    ``epochs_of(stage)`` gives a stage's total epochs (None: unknown, the bar then shows no ETA). Disabled
    (``enabled=False``), the hook does nothing."""

    def __init__(self, enabled: bool, epochs_of: Callable[[str], int | None]):
        self.enabled = enabled
        self.epochs_of = epochs_of
        self.progress: Progress | None = None
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if self.enabled:
            self.progress = _progress("epochs")
            self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)
            self.progress = None

    def hook(self, stage: str, epoch: int, record: dict) -> None:
        if self.progress is None:
            return
        if stage not in self.tasks:
            for old in self.tasks.values():  # one stage runs at a time: the previous ones are finished
                self.progress.update(old, visible=False)
            self.tasks[stage] = self.progress.add_task(f"stage {stage}", total=self.epochs_of(stage), ips=0.0)
        self.progress.update(self.tasks[stage], completed=epoch + 1, ips=float(record.get("train.img_per_s", 0.0)))


def _batch_size(batch) -> int:
    labels = getattr(batch, "labels", None)
    if labels is None and isinstance(batch, (tuple, list)) and len(batch) > 1:
        labels = batch[1]
    return int(labels.shape[0]) if labels is not None and hasattr(labels, "shape") else 0


def track_images(batches: Iterable[T], description: str, enabled: bool, total: int | None = None) -> Iterator[T]:
    """Yield from ``batches``, drawing a bar of batches with img/s and ETA when ``enabled``. ``total``: the
    number of batches (default ``len(batches)`` when it has one)."""
    if not enabled:
        yield from batches
        return
    if total is None and hasattr(batches, "__len__"):
        total = len(batches)  # type: ignore[arg-type]
    t0, seen = time.perf_counter(), 0
    with _progress("batches") as bar:
        task = bar.add_task(description, total=total, ips=0.0)
        for batch in batches:
            yield batch
            seen += _batch_size(batch)
            bar.update(task, advance=1, ips=seen / max(time.perf_counter() - t0, 1e-9))


__all__ = ["StageProgress", "progress_enabled", "track_images"]
