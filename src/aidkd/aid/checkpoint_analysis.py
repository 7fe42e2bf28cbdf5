"""``aidkd analyze`` as Python functions: the L_CS / L_IC decomposition of checkpoints on a data split.

    from aidkd.aid.checkpoint_analysis import analyze_checkpoints, analyze_ladder_checkpoints
    res = analyze_checkpoints("runs/t/checkpoints/best.pt", "runs/s/checkpoints/best.pt", out_dir="runs/analysis")
    rows = analyze_ladder_checkpoints([("cnn_small", "a.pt"), ("cnn_large", "b.pt")], student="s.pt",
                                      out_dir="runs/ladder")

They load the models (:func:`aidkd.stages.artifacts.load_model`), build the split of the checkpoints' own data
config (:func:`aidkd.checkpoint_eval.build_split`), call
:func:`aidkd.aid.analysis.analyze` / :func:`~aidkd.aid.analysis.analyze_ladder` and write ``analysis.json``
(or ``ladder.json``) and the PNG plots.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from ..files.checkpoint import atomic_write_json, checkpoint_config
from ..files.rundir import ANALYSIS_FILES, own_folder
from ..errors import UserError
from ..teachers import runs_images
from ..checkpoint_eval import build_split
from ..stages import json_safe
from ..stages.artifacts import load_model


def _check_split_served(model, split: str, what: str) -> None:
    """A teacher of stored per-sample targets serves the training split only."""
    if not runs_images(model) and split != "train":
        raise UserError(f"{what} is a projection teacher (per-sample targets of the training split): use --split train")


def analyze_checkpoints(
    teacher: str | Path,
    student: str | Path | None,
    *,
    teacher_name: str | None = None,
    student_name: str | None = None,
    data: str | None = None,
    split: str = "test",
    tau: float = 4.0,
    out_dir: str | Path | None = "runs/analysis",
    overrides: list[str] | None = None,
    device: str = "auto",
    inner_classes: Sequence[int] | None = None,
    num_inner: int = 2,
) -> dict:
    """Decompose KD(teacher || student) on a split of the data; with ``out_dir``, write ``analysis.json``,
    ``components.png`` and ``inner_class_<k>.png`` for ``inner_classes`` (default: the ``num_inner`` classes
    with the largest per-class L_IC). Names are needed only for checkpoints that are not aidkd checkpoints.
    The result holds the inner-class information of both models (``teacher_info`` I_T, ``student_info`` I_S).
    Without a ``student``, the teacher alone is analysed: its I_T (the decomposition against itself is zero)."""
    from .analysis import analyze, collect_class_probs, plot_inner_class

    loader, spec, dev = build_split(data, [teacher, student], split, overrides, device)
    bad = [k for k in inner_classes or [] if not 0 <= k < spec.num_classes]
    if bad:
        raise UserError(f"--inner-classes {bad[0]} is out of range: {spec.name} has classes 0..{spec.num_classes - 1}")
    t = load_model(teacher, spec, teacher_name)
    s = load_model(student, spec, student_name) if student is not None else t
    _check_split_served(t, split, "the teacher")
    _check_split_served(s, split, "the student")
    res = analyze(t, s, loader, tau, spec.num_classes, dev, out_dir, inner_classes, spec.classes)
    if out_dir is not None and not inner_classes and student is not None:
        pc = res["per_class"]["ic"]
        order = sorted((k for k in range(len(pc)) if pc[k] is not None and not math.isnan(pc[k])),
                       key=lambda k: -pc[k])[:num_inner]
        probs = collect_class_probs(t, s, loader, order, tau, dev)
        for k in order:
            name = spec.classes[k] if spec.classes else str(k)
            res["plots"].append(str(plot_inner_class(probs[k]["p"], probs[k]["q"], Path(out_dir) / f"inner_class_{k}.png",
                                                     class_index=k, class_name=name, class_names=spec.classes)))
    res.update(teacher=str(teacher), student=None if student is None else str(student), teacher_arch=getattr(t, "arch", teacher_name),
               student_arch=getattr(s, "arch", student_name), dataset=spec.name, split=split, class_names=spec.classes)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "analysis.json", json_safe(res))
    return res


def analyze_ladder_checkpoints(
    teachers: Sequence[tuple[str, str | Path]],
    student: str | Path | None = None,
    *,
    student_name: str | None = None,
    distilled: dict[str, str | Path] | None = None,
    data: str | None = None,
    split: str = "test",
    tau: float = 4.0,
    out_dir: str | Path | None = "runs/analysis",
    overrides: list[str] | None = None,
    device: str = "auto",
) -> dict:
    """A ladder of teachers ``[(label, checkpoint), ...]`` against one student checkpoint (``ladder.png``) and/or
    against each teacher's own distilled student ``distilled = {label: checkpoint}`` (the residual KD loss,
    ``ladder_distilled.png``). A label doubles as the architecture name of a checkpoint that is not an aidkd
    checkpoint. Writes ``ladder.json`` and per-teacher ``components_<label>.png``."""
    from .analysis import analyze_ladder, plot_components, plot_ladder

    if not teachers:
        raise UserError("the ladder needs teachers: --teacher NAME=CHECKPOINT, repeated")
    distilled = dict(distilled or {})
    unknown = sorted(set(distilled) - {lab for lab, _ in teachers})
    if unknown:
        raise UserError(f"distilled student(s) for unknown teacher(s) {', '.join(unknown)}; the labels must match "
                        "--teacher NAME=...")
    if student is None and not distilled:
        raise UserError("the ladder needs a student (--student) or each teacher's distilled student (--distilled)")
    if student is None and set(distilled) != {lab for lab, _ in teachers}:
        raise UserError("without --student, every teacher needs its distilled student (--distilled NAME=CHECKPOINT)")
    ckpts = [c for _, c in teachers] + ([student] if student else []) + list(distilled.values())
    loader, spec, dev = build_split(data, ckpts, split, overrides, device)
    models = []
    for label, path in teachers:
        arch = None if checkpoint_config(path) is not None else label
        m = load_model(path, spec, arch)
        _check_split_served(m, split, f"teacher {label!r}")
        models.append((label, m))
    out: dict = {"dataset": spec.name, "split": split, "temperature": tau,
                 "teachers": {lab: str(p) for lab, p in teachers}}
    plots = []
    d = Path(out_dir) if out_dir is not None else None
    if d is not None:
        own_folder(d, "--out", "analysis", ANALYSIS_FILES, (".png",))
    if student is not None:
        s = load_model(student, spec, student_name)
        rows = analyze_ladder(models, s, loader, tau, spec.num_classes, dev)
        out.update(student=str(student), rows=rows)
        if d is not None:
            plots.append(str(plot_ladder(rows, d / "ladder.png")))
            for r in rows:
                plots.append(str(plot_components(r, d / f"components_{r['name']}.png", class_names=spec.classes)))
    if distilled:
        studs = {lab: load_model(p, spec, student_name) for lab, p in distilled.items()}
        with_own = [(lab, m) for lab, m in models if lab in studs]
        rows_d = analyze_ladder(with_own, next(iter(studs.values())), loader, tau, spec.num_classes, dev, students=studs)
        out.update(distilled={lab: str(p) for lab, p in distilled.items()}, rows_distilled=rows_d)
        if d is not None:
            plots.append(str(plot_ladder(rows_d, d / "ladder_distilled.png")))
    out["plots"] = plots
    if d is not None:
        atomic_write_json(d / "ladder.json", json_safe(out))
    return out


__all__ = ["analyze_checkpoints", "analyze_ladder_checkpoints"]
