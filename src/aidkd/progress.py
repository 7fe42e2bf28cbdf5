"""Progress bars for long work (pipeline stages, teacher adaptation, the teacher-output cache, benchmarks).

One rule decides whether a bar is drawn (:func:`progress_enabled`): never with ``quiet`` or after
:func:`set_quiet` (the ``--quiet`` of the commands), never when the environment variable ``CI`` is set, never
when stderr is not a terminal. Every bar shows what is running, its ETA and its speed (images per second; jobs
per minute for a benchmark's jobs).

* :class:`StageProgress`: one bar per pipeline stage, fed by the pipeline's ``on_epoch_end(stage, epoch,
  record)`` hook (the record's ``train.img_per_s`` gives the speed); :func:`stage_epochs` gives each stage's
  length from a pipeline config.
* :func:`track_images`: wraps an iterable of batches (anything with ``labels``, or ``(images, labels, ...)``
  tuples) in a bar that counts batches and images.
* :class:`JobProgress`, :func:`track_jobs`: a bar over a benchmark's jobs.
* :class:`EpochProgress`: the engine's bar over one epoch's steps.

:data:`console` is the one rich console (stderr) every message and bar of aidkd goes to.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
console = Console(stderr=True)
_QUIET = False


def set_quiet(quiet: bool = True) -> None:
    """Turn every bar of this process off (``--quiet``) or back on."""
    global _QUIET
    _QUIET = bool(quiet)


def progress_enabled(quiet: bool = False) -> bool:
    """Whether to draw a bar: not ``quiet`` nor :func:`set_quiet`, not in CI (env ``CI`` set), and stderr is a
    terminal."""
    return not (quiet or _QUIET) and not os.environ.get("CI") and console.is_terminal


def _progress(unit: str, speed: str = "img/s") -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        TextColumn("{task.fields[ips]:.0f} " + speed), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=True,
    )


def stage_epochs(cfg) -> Callable[[str], int | None]:
    """A pipeline stage's epochs from its :class:`~aidkd.aid.pipeline.PipelineConfig` (teacher and reference
    have their own; every other engine stage runs ``base.train.epochs``)."""

    def epochs(stage: str) -> int | None:
        if stage == "teacher":
            return cfg.teacher.epochs or cfg.base.train.epochs
        if stage == "reference":
            return cfg.aid.reference_epochs or cfg.base.train.epochs
        return cfg.base.train.epochs

    return epochs


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


class JobProgress:
    """A bar over ``total`` jobs of which ``done`` are finished already; ``advance(name)`` after each job."""

    def __init__(self, enabled: bool, total: int, done: int = 0, description: str = "jobs"):
        self.enabled, self.total, self.done, self.description = enabled, total, done, description
        self.progress: Progress | None = None

    def __enter__(self):
        if self.enabled:
            self._t0, self._start = time.perf_counter(), self.done
            self.progress = _progress("jobs", "jobs/min")
            self.progress.__enter__()
            self.task = self.progress.add_task(self.description, total=self.total, completed=self.done, ips=0.0)
        return self

    def advance(self, name: str) -> None:
        self.done += 1
        if self.progress is not None:
            per_min = 60 * (self.done - self._start) / max(time.perf_counter() - self._t0, 1e-9)
            self.progress.update(self.task, completed=self.done, ips=per_min,
                                 description=f"{self.description}: {name} done")

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)
            self.progress = None


def track_jobs(items: list[T], description: str, enabled: bool, name: Callable[[T], str] = str) -> Iterator[T]:
    """Yield ``items`` (a benchmark's jobs, run one by one by the caller) under a :class:`JobProgress` bar."""
    with JobProgress(enabled, len(items), 0, description) as bar:
        for item in items:
            yield item
            bar.advance(name(item))




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


__all__ = ["EpochProgress", "JobProgress", "StageProgress", "progress_enabled", "console", "set_quiet", "stage_epochs", "track_images",
           "track_jobs"]
