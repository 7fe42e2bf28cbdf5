"""Ladders of teacher assistants: TAKD and DGKD.

* TAKD (Mirzadeh et al., AAAI'20): a chain teacher -> assistant(s) -> student, each link distilled from the one
  above it (the config's method, ``kd`` for the published chain).
* DGKD (Son et al., ICCV'21): each link distilled from the teacher *and* every assistant above it at once (the
  ``dgkd`` method, the earlier links as the run's ``assistants``).

Both are plans over the stage layer: each link is a train stage in its own folder
``<output.dir>/<output.name>-link<i>-<model>``. A finished link of the same config and guides is reused and an
interrupted one resumes, so a ladder resumes link by link; a folder holding another config is refused by the
engine unless ``overwrite``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .config import RunConfig, TeacherConfig
from .errors import UserError
from .stages import StageStore, train_stage
from .stages.train import summary_of


def _check_ladder(cfg: RunConfig, assistants: list[str], what: str) -> None:
    if not assistants:
        raise UserError(f"{what} needs at least one assistant: pass --assistants NAME[,NAME...]")
    if cfg.teacher.name is None or not (cfg.teacher.checkpoint or cfg.teacher.pretrained):
        raise UserError(f"{what} starts from a trained teacher: set teacher.name and teacher.checkpoint")
    if cfg.assistants:
        raise UserError(f"{what} builds the assistants itself: remove assistants from the config and name them "
                        "with --assistants")


def _train_ladder(cfg: RunConfig, models: list[str], overwrite: bool,
                  guide: Callable[[RunConfig, list[TeacherConfig]], None]) -> list[dict]:
    """Train ``models`` in order, each link a stage in ``<output.dir>/<output.name>-link<i>-<model>``; ``guide``
    sets a link's guides from the links trained before it. Return every link's summary."""
    store = StageStore(cfg.output.dir, overwrite=overwrite, verbose=False)
    base = cfg.run_name()
    trained: list[TeacherConfig] = []
    summaries = []
    for i, model in enumerate(models):
        link = cfg.model_copy(deep=True)
        link.model.name = model
        guide(link, trained)
        link.output.name = f"{base}-link{i + 1}-{model}"
        res = train_stage(store, link.output.name, link, folder=Path(link.output.dir) / link.output.name)
        summaries.append(summary_of(res))
        trained.append(TeacherConfig(name=model, checkpoint=str(res.checkpoint)))
    return summaries


def run_takd(cfg: RunConfig, assistants: list[str], overwrite: bool = False) -> list[dict]:
    """Run the chain ``cfg.teacher -> assistants... -> cfg.model``; return every link's summary."""
    _check_ladder(cfg, assistants, "TAKD")
    if cfg.method.name == "vanilla":
        raise UserError("TAKD links are distillation runs: set method.name (kd for the published chain)")

    def from_previous(link: RunConfig, trained: list[TeacherConfig]) -> None:
        if trained:  # the link above: its architecture and best checkpoint
            link.teacher.name, link.teacher.checkpoint = trained[-1].name, trained[-1].checkpoint
            link.teacher.pretrained = False

    return _train_ladder(cfg, [*assistants, cfg.model.name], overwrite, from_previous)


def run_dgkd(cfg: RunConfig, assistants: list[str], overwrite: bool = False) -> list[dict]:
    """Train the ladder ``assistants...`` (largest first) and then ``cfg.model``, each from ``cfg.teacher`` and
    every link trained before it, with the config's ``dgkd`` settings; return every link's summary."""
    _check_ladder(cfg, assistants, "DGKD")
    if cfg.method.name != "dgkd":
        raise UserError(f"DGKD trains every link with method dgkd, not {cfg.method.name!r}: set method.name=dgkd")

    def from_all_above(link: RunConfig, trained: list[TeacherConfig]) -> None:
        link.assistants = [g.model_copy() for g in trained]

    return _train_ladder(cfg, [*assistants, cfg.model.name], overwrite, from_all_above)
