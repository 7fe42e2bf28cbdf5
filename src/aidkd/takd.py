"""TAKD (Mirzadeh et al., AAAI'20): distil through a chain teacher -> assistant(s) -> student.

A plan over the stage layer: each link is a train stage (the config's method, ``kd`` by default) from the
previous link's best checkpoint, in its own folder ``<output.dir>/<output.name>-link<i>-<model>``. A finished
link of the same config and teacher file is reused and an interrupted one resumes, so the chain resumes link by
link; a folder holding another config is refused by the engine unless ``overwrite``.
"""
from __future__ import annotations

from pathlib import Path

from .config import RunConfig
from .errors import UserError
from .stages import StageStore, train_stage
from .stages.train import summary_of


def run_takd(cfg: RunConfig, assistants: list[str], overwrite: bool = False) -> list[dict]:
    """Run the chain ``cfg.teacher -> assistants... -> cfg.model``; return every link's summary."""
    if not assistants:
        raise UserError("TAKD needs at least one assistant: pass --assistants NAME[,NAME...]")
    if cfg.teacher.name is None or not (cfg.teacher.checkpoint or cfg.teacher.pretrained):
        raise UserError("TAKD starts from a trained teacher: set teacher.name and teacher.checkpoint")
    if cfg.method.name == "vanilla":
        raise UserError("TAKD links are distillation runs: set method.name (kd for the published chain)")
    store = StageStore(cfg.output.dir, overwrite=overwrite, verbose=False)
    base = cfg.run_name()
    teacher_name, teacher_ckpt = cfg.teacher.name, cfg.teacher.checkpoint
    summaries = []
    for i, model in enumerate([*assistants, cfg.model.name]):
        link = cfg.model_copy(deep=True)
        link.model.name = model
        link.teacher.name, link.teacher.checkpoint = teacher_name, teacher_ckpt
        if i > 0:
            link.teacher.pretrained = False
        link.output.name = f"{base}-link{i + 1}-{model}"
        res = train_stage(store, link.output.name, link, folder=Path(link.output.dir) / link.output.name)
        summaries.append(summary_of(res))
        teacher_name, teacher_ckpt = model, str(res.checkpoint)
    return summaries
