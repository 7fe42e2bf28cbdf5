"""TAKD (Mirzadeh et al., AAAI'20): distil through a chain teacher -> assistant(s) -> student.

Each link is an ordinary distillation run of the engine (the config's method, ``kd`` by default) from the
previous link's best checkpoint, with its own run directory ``<output.name>-link<i>-<model>``. A finished link
with the same config is skipped and an interrupted one resumes, so the chain resumes link by link.
"""
from __future__ import annotations

from pathlib import Path

from .config import RunConfig
from .engine import read_summary, train
from .errors import UserError


def run_takd(cfg: RunConfig, assistants: list[str], overwrite: bool = False) -> list[dict]:
    """Run the chain ``cfg.teacher -> assistants... -> cfg.model``; return every link's summary."""
    if not assistants:
        raise UserError("TAKD needs at least one assistant: pass --assistants NAME[,NAME...]")
    if cfg.teacher.name is None or not (cfg.teacher.checkpoint or cfg.teacher.pretrained):
        raise UserError("TAKD starts from a trained teacher: set teacher.name and teacher.checkpoint")
    if cfg.method.name == "vanilla":
        raise UserError("TAKD links are distillation runs: set method.name (kd for the published chain)")
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
        run_dir = Path(link.output.dir) / link.output.name
        s = read_summary(run_dir)
        if s is None or s.get("fingerprint") != link.fingerprint() or overwrite:
            s = train(link, overwrite=overwrite or s is not None)
        summaries.append(s)
        teacher_name, teacher_ckpt = model, str(run_dir / "checkpoints" / "best.pt")
    return summaries
