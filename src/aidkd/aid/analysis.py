"""Why does the capacity gap hurt? The L_CS / L_IC decomposition of a teacher-student pair, and plots.

* :func:`analyze`: one teacher, one student, one split: L_KD, L_CS, L_IC (totals and per class), accuracies;
  optionally the plots of the two components per class and of chosen classes' inner-class distributions.
* :func:`analyze_ladder`: a ladder of teachers of growing size against one student: each component against the
  teacher's parameter count (log x axis).

Plots use matplotlib's Agg backend and are written as PNG files to a given directory.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from ..files.rundir import ANALYSIS_FILES, own_folder
from ..errors import UserError
from ..models.base import num_params
from .split import SplitDecomposition, eval_mode, model_logits, split_decomposition, unpack_batch


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------------------------------------------
# numbers


@torch.no_grad()
def collect_class_probs(
    teacher: nn.Module,
    student: nn.Module,
    loader: Iterable,
    classes: Sequence[int],
    temperature: float = 4.0,
    device: torch.device | str = "cpu",
    max_per_class: int = 2000,
) -> dict[int, dict[str, Tensor]]:
    """The tempered probabilities p_i, q_i (float64, CPU) of the samples of the chosen ground-truth classes
    (at most ``max_per_class`` each, so memory stays bounded): {k: {"p": (n_k, C), "q": (n_k, C)}}."""
    device = torch.device(device)
    want = {int(k) for k in classes}
    parts: dict[int, dict[str, list[Tensor]]] = {k: {"p": [], "q": []} for k in want}
    have = {k: 0 for k in want}
    with eval_mode(teacher, student):
        for batch in loader:
            if all(have[k] >= max_per_class for k in want):
                break
            images, labels, index = unpack_batch(batch, device)
            mask = torch.zeros_like(labels, dtype=torch.bool)
            for k in want:
                mask |= labels == k
            if not bool(mask.any()):
                continue
            sel = mask.nonzero().squeeze(1)
            images, labels = images[sel], labels[sel]
            index = index[sel] if index is not None else None
            p = torch.softmax(model_logits(teacher, images, index).double() / temperature, 1).cpu()
            q = torch.softmax(model_logits(student, images, index).double() / temperature, 1).cpu()
            labels = labels.cpu()
            for k in want:
                m = labels == k
                take = min(int(m.sum()), max_per_class - have[k])
                if take > 0:
                    parts[k]["p"].append(p[m][:take])
                    parts[k]["q"].append(q[m][:take])
                    have[k] += take
    c = None
    out = {}
    for k in sorted(want):
        if parts[k]["p"]:
            out[k] = {"p": torch.cat(parts[k]["p"]), "q": torch.cat(parts[k]["q"])}
            c = out[k]["p"].shape[1]
    for k in sorted(want):
        if k not in out and c is not None:
            out[k] = {"p": torch.zeros(0, c, dtype=torch.float64), "q": torch.zeros(0, c, dtype=torch.float64)}
    return out


def analyze(
    teacher: nn.Module,
    student: nn.Module,
    loader: Iterable,
    temperature: float = 4.0,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    out_dir: str | Path | None = None,
    inner_classes: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    ic_mode: str = "identity",
) -> dict:
    """Decompose KD(teacher || student) on the split served by ``loader`` (classes grouped across the split).

    Returns a JSON-ready dict: ``kd``, ``cs``, ``ic`` totals (times tau^2), ``ic_fraction`` = L_IC / L_KD,
    ``teacher_acc``, ``student_acc`` (top-1, %), ``per_class`` (count, kd, cs, ic per class: per sample of that
    class; NaN for absent classes), ``teacher_params``, ``student_params`` and, when ``out_dir`` is given, the
    written ``plots``: ``components.png`` (L_CS and L_IC side by side, per class and total) and, for
    ``inner_classes``, ``inner_class_<k>.png`` (the teacher's and the student's inner-class distributions).
    """
    res = split_decomposition(teacher, student, loader, temperature, num_classes, device, ic_mode=ic_mode)
    out = res.to_dict()
    out["ic_fraction"] = res.ic / res.kd if res.kd > 0 else float("nan")
    out["teacher_params"] = num_params(teacher)
    out["student_params"] = num_params(student)
    if out_dir is not None:
        d = Path(out_dir)
        own_folder(d, "--out", "analysis", ANALYSIS_FILES, (".png",))
        plots = [str(plot_components(res, d / "components.png", class_names=class_names))]
        if inner_classes:
            probs = collect_class_probs(teacher, student, loader, inner_classes, temperature, device)
            for k, pq in probs.items():
                name = class_names[k] if class_names else str(k)
                plots.append(
                    str(plot_inner_class(pq["p"], pq["q"], d / f"inner_class_{k}.png", class_index=k, class_name=name,
                                         class_names=class_names))
                )
        out["plots"] = plots
    return out


def analyze_ladder(
    teachers: dict[str, nn.Module] | Sequence[tuple[str, nn.Module]],
    student: nn.Module,
    loader: Iterable,
    temperature: float = 4.0,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    out_dir: str | Path | None = None,
    students: dict[str, nn.Module] | None = None,
) -> list[dict]:
    """:func:`analyze` for every teacher of a ladder against one student architecture.

    ``student`` is used against every teacher, unless ``students`` maps a teacher's name to its own student
    (e.g. the student distilled from that teacher: the *residual* KD loss of the capacity-gap claim). Returns one
    dict per teacher (with ``name``), in order of parameter count; with ``out_dir`` writes ``ladder.png``.
    """
    items = list(teachers.items()) if isinstance(teachers, dict) else list(teachers)
    rows = []
    for name, t in items:
        s = (students or {}).get(name, student)
        r = analyze(t, s, loader, temperature, num_classes, device)
        r["name"] = name
        rows.append(r)
    rows.sort(key=lambda r: r["teacher_params"])
    if out_dir is not None:
        d = Path(out_dir)
        own_folder(d, "--out", "analysis", ANALYSIS_FILES, (".png",))
        plot_ladder(rows, d / "ladder.png")
    return rows


# ----------------------------------------------------------------------------------------------------------------
# plots


def _as_dict(result: SplitDecomposition | dict) -> dict:
    return result.to_dict() if isinstance(result, SplitDecomposition) else result


def plot_components(
    result: SplitDecomposition | dict, path: str | Path, class_names: Sequence[str] | None = None, max_classes: int = 50
) -> Path:
    """L_CS and L_IC side by side: per class (the ``max_classes`` classes with the largest L_KD, as grouped
    bars) and the split total (stacked bar: the two parts add up to L_KD)."""
    plt = _plt()
    r = _as_dict(result)
    pc = r["per_class"]
    idx = [k for k in range(len(pc["count"])) if pc["count"][k] > 0 and not math.isnan(pc["kd"][k])]
    idx = sorted(idx, key=lambda k: -pc["kd"][k])[:max_classes]
    idx.sort()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(6.0, 0.35 * len(idx) + 3.0), 4.0),
                                   gridspec_kw={"width_ratios": [max(len(idx), 1), 2]})
    x = list(range(len(idx)))
    w = 0.4
    ax1.bar([i - w / 2 for i in x], [pc["cs"][k] for k in idx], w, label="L_CS (class-wise similarity)")
    ax1.bar([i + w / 2 for i in x], [pc["ic"][k] for k in idx], w, label="L_IC (inner-class distribution)")
    ax1.set_xticks(x)
    ax1.set_xticklabels([class_names[k] if class_names else str(k) for k in idx], rotation=90, fontsize=7)
    ax1.set_xlabel("ground-truth class")
    ax1.set_ylabel("tau^2 x per-sample KL")
    ax1.set_title(f"per class (tau = {r['temperature']:g})")
    ax1.legend(fontsize=8)
    ax2.bar([0], [r["cs"]], 0.6, label="L_CS")
    ax2.bar([0], [r["ic"]], 0.6, bottom=[r["cs"]], label="L_IC")
    ax2.set_xticks([0])
    ax2.set_xticklabels(["total"])
    ax2.set_title(f"L_KD = {r['kd']:.3g}")
    ax2.legend(fontsize=8)
    fig.suptitle(f"teacher {r['teacher_acc']:.1f}%  student {r['student_acc']:.1f}%", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_ladder(rows: Sequence[dict], path: str | Path, size_key: str = "teacher_params") -> Path:
    """Each component (L_KD, L_CS, L_IC) against the teacher's size (parameter count, log x axis); ``rows`` as
    returned by :func:`analyze_ladder` (each with ``kd``, ``cs``, ``ic``, ``teacher_params`` and ``name``)."""
    plt = _plt()
    from matplotlib.ticker import NullFormatter

    rows = sorted(rows, key=lambda r: r[size_key])
    xs = [r[size_key] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label, marker in (("kd", "L_KD", "s"), ("cs", "L_CS (class-wise)", "o"), ("ic", "L_IC (inner-class)", "^")):
        ax1.plot(xs, [r[key] for r in rows], marker=marker, label=label)
    ax1.set_xscale("log")
    ax1.xaxis.set_minor_formatter(NullFormatter())
    ax1.set_xlabel("teacher parameters")
    ax1.set_ylabel("tau^2 x KL (teacher || student)")
    ax1.legend(fontsize=8)
    for x, r in zip(xs, rows):
        ax1.annotate(str(r.get("name", "")), (x, r["kd"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    frac = [r["ic"] / r["kd"] if r["kd"] > 0 else float("nan") for r in rows]
    ax2.plot(xs, frac, marker="^", color="C2")
    ax2.set_xscale("log")
    ax2.xaxis.set_minor_formatter(NullFormatter())
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("teacher parameters")
    ax2.set_ylabel("L_IC / L_KD")
    ax2.set_title("share of the inner-class part")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_inner_class(
    p: Tensor,
    q: Tensor,
    path: str | Path,
    class_index: int,
    class_name: str | None = None,
    num_columns: int = 4,
    class_names: Sequence[str] | None = None,
) -> Path:
    """The teacher's and the student's inner-class distributions r_{k,c} and r^_{k,c} of one class k, for the
    ``num_columns`` output classes c with the largest class-mean mass m_k(c) (the target class first): samples
    on the x axis sorted by the teacher's r, probability on a log y axis."""
    plt = _plt()
    if p.shape[0] == 0:
        raise UserError(f"class {class_index} has no samples in this split")
    p, q = p.double(), q.double()
    m = p.mean(0)
    order = [c for c in torch.argsort(m, descending=True).tolist()]
    if class_index in order:
        order.remove(class_index)
        order.insert(0, class_index)
    cols = order[:num_columns]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.2), squeeze=False)
    for ax, c in zip(axes[0], cols):
        r = p[:, c] / p[:, c].sum()
        rh = q[:, c] / q[:, c].sum()
        srt = torch.argsort(r, descending=True)
        ax.plot(r[srt].numpy(), label="teacher r", lw=1.5)
        ax.plot(rh[srt].numpy(), label="student r^", lw=1.0, alpha=0.8)
        ax.axhline(1.0 / p.shape[0], color="grey", lw=0.6, ls="--")
        ax.set_yscale("log")
        kl = float((r * (r.clamp_min(1e-300).log() - rh.clamp_min(1e-300).log())).sum())
        cname = class_names[c] if class_names else str(c)
        ax.set_title(f"c = {cname}  m_k(c) = {float(m[c]):.3f}\nKL(r || r^) = {kl:.3f}", fontsize=8)
        ax.set_xlabel("samples of the class (sorted)")
    axes[0][0].set_ylabel("r_{k,c}(i)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"inner-class distributions of class {class_name or class_index} (n = {p.shape[0]})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["analyze", "analyze_ladder", "collect_class_probs", "plot_components", "plot_inner_class", "plot_ladder"]
