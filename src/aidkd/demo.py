"""``aidkd demo``: the AID flow end to end on scikit-learn's digits (ships with scikit-learn, no network).

The demo is the AID pipeline (:func:`aidkd.aid.pipeline.run_pipeline`) on the shipped config ``pipeline/demo``
(``pipeline/demo_quick`` with ``--quick``): a teacher T0, the vanilla student (which is also the pretrained student
S_p), the published adaptation T0 -> T (the teacher fine-tuned with the KD loss towards S_p), and students distilled
with KD and DKD from T0 and from T. The pipeline runs and reuses the stages; this module only renders its results
dict:

(a) the student table (test top-1, last epoch and selected epoch, mean +- std over seeds, the AID gain);
(b) the decomposition L_KD = L_CS + L_IC of the teacher against S_p, the teacher's inner-class information and
    the inner-class agreement of teacher and S_p, before and after the adaptation, on the test split;
(c) the adapted teacher's accuracy against the original's;

plus ``demo.png`` (the components as stacked bars, and the students) and two closing lines: what the numbers
showed, honestly for a dataset this small, and where the files are.
"""
from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .aid.pipeline import PIPELINE_FILES, load_pipeline_config, run_pipeline
from .errors import UserError
from .files.rundir import claim_folder
from .plots import pyplot
from .progress import StageProgress, console, progress_enabled, set_quiet, stage_epochs

CONFIG, QUICK_CONFIG = "pipeline/demo", "pipeline/demo_quick"
#: one test image of digits, in accuracy points (360 test images)
DIGITS_TEST_IMAGES = 360


def demo_config(quick: bool = False, out: str | None = None, seeds: list[int] | None = None,
                overrides: list[str] | None = None):
    """The demo's :class:`~aidkd.aid.pipeline.PipelineConfig`: the shipped config, its output folder and seeds
    replaced when given, then any dotted ``overrides``."""

    ov = [f"output.dir={out}"] if out else []
    if seeds is not None:
        if not seeds:
            raise UserError("--seeds needs at least one seed, e.g. --seeds 0,1,2")
        ov.append(f"seeds=[{', '.join(str(s) for s in seeds)}]")
    return load_pipeline_config(QUICK_CONFIG if quick else CONFIG, ov + list(overrides or []))


def run_demo(out: str = "runs/demo", quick: bool = False, seeds: list[int] | None = None, quiet: bool = False,
             overwrite: bool = False, overrides: list[str] | None = None) -> dict:
    """Run (or reuse) the demo's pipeline into ``out``, print its tables and write ``demo.png``.

    Returns the pipeline's dict (``results``, ``stages``, ``table``, ``out_dir``) with ``plot`` (the PNG)."""

    cfg = demo_config(quick, out, seeds, overrides)
    claim_folder(cfg.output.dir, "--out", PIPELINE_FILES, subdirs=True)  # before a word is printed
    if quiet:
        set_quiet()
    bar = progress_enabled(quiet)
    if not quiet:
        console.print(f"[bold]aidkd demo[/]{' --quick' if quick else ''}: digits (8x8, 10 classes), teacher "
                      f"{cfg.teacher.name} -> student {cfg.student.name}, seeds {cfg.seeds}; finished stages in "
                      f"{cfg.output.dir} are reused")
    with StageProgress(bar, stage_epochs(cfg)) as progress:
        res = run_pipeline(cfg, overwrite=overwrite, on_epoch_end=progress.hook, verbose=not quiet and not bar)
    r = res["results"]
    out_dir = Path(res["out_dir"])
    plot = plot_demo(r, out_dir / "demo.png")
    if not quiet:

        stdout = Console(width=max(100, console.width or 100))
        stdout.print(student_table(r))
        stdout.print(decomposition_table(r))
        stdout.print(teacher_line(r), soft_wrap=True)
        for line in closing_lines(r, out_dir, plot):
            stdout.print(line, soft_wrap=True)
    return {**res, "plot": str(plot)}


# ----------------------------------------------------------------------------------------------------- rendering
def _pm(st: dict | None, signed: bool = False) -> str:
    if not st or st.get("mean") is None:
        return "-"
    m = f"{st['mean']:+.2f}" if signed else f"{st['mean']:.2f}"
    return m if st["n"] < 2 else f"{m} ± {st['std']:.2f}"


def student_table(r: dict):
    """(a) the students: test top-1 (%) at the last epoch and at the selected epoch, and the AID gain."""

    n = len(r["seeds"])
    t = Table(title=f"(a) students ({r['student']}), test top-1 %, "
                    f"{'mean ± std over ' + str(n) + ' seeds' if n > 1 else 'one seed'}")
    for col in ("student", "teacher", "last epoch", f"selected epoch ({r['vanilla']['selection']})", "AID gain (last)"):
        t.add_column(col, justify="left" if col in ("student", "teacher") else "right")
    v = r["vanilla"]
    t.add_row("vanilla (CE only)", "-", _pm(v["last_stats"]), _pm(v["best_stats"]), "")
    for m in r["methods"]:
        name = m["method"].upper()
        ref = " (= S_p, seed 0)" if m["name"] == "kd" and r["reference"]["kind"] == "distilled" else ""
        t.add_row(f"{name}{ref}", "T0 (original)", _pm(m["baseline"]["last_stats"]), _pm(m["baseline"]["best_stats"]),
                  "")
        t.add_row(f"AID + {name}", "T (adapted)", _pm(m["aid"]["last_stats"]), _pm(m["aid"]["best_stats"]),
                  _pm(m["gain_last"], signed=True))
    return t


def decomposition_table(r: dict):
    """(b) L_KD = L_CS + L_IC of the teacher against S_p, I_T and the inner-class agreement, before (T0) and after
    (T) the adaptation."""

    d = r["decomposition"]
    t = Table(title=f"(b) teacher vs S_p ({d['split']}, tau {r['aid']['tau']:g}): L_KD = L_CS + L_IC")
    for col in ("", "T0 (before AID)", "T (after AID)", "change"):
        t.add_column(col, justify="left" if not col else "right")
    for key, label in (("kd", "L_KD (total)"), ("cs", "L_CS class-wise similarity"),
                       ("ic", "L_IC inner-class distribution"), ("teacher_info", "I_T teacher's inner-class info"),
                       ("agreement", "inner-class agreement rho")):
        b, a = d.get(f"{key}_before"), d.get(f"{key}_after")
        t.add_row(label, _num(b), _num(a), "-" if b is None or a is None else f"{a - b:+.3f}")
    return t


def _num(x, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def teacher_line(r: dict) -> str:
    """(c) the adapted teacher's accuracy against the original's."""
    t = r["teacher"]
    before, after = t.get("acc_before"), t.get("acc_after")
    if before is None or after is None:
        return "(c) teacher accuracy: not measured"
    warn = "  [bold red]more than the tolerance[/]" if t.get("acc_warning") else ""
    return (f"(c) teacher {t['name']} test top-1: T0 {before:.2f}%  ->  adapted T {after:.2f}% "
            f"({after - before:+.2f} points, {r['aid']['epochs']} adaptation epoch(s)){warn}")


def _resolved(st: dict) -> bool:
    """Whether a mean difference stands out of the noise: over 2 seeds or more, |mean| above two standard errors
    and above one test image."""
    if st.get("mean") is None or st["n"] < 2:
        return False
    one_image = 100.0 / DIGITS_TEST_IMAGES
    return abs(st["mean"]) > max(2 * st["std"] / math.sqrt(st["n"]), one_image)


def closing_lines(r: dict, out_dir: Path, plot: Path) -> list[str]:
    """Two lines: what the run showed (and what digits cannot show), and where the files are."""
    d, t = r["decomposition"], r["teacher"]
    gains = []
    for m in r["methods"]:
        g = m["gain_last"]
        if g.get("mean") is None:
            continue
        verdict = "one seed: untested" if g["n"] < 2 else "resolved" if _resolved(g) else "within noise"
        gains.append(f"AID+{m['method'].upper()} {_pm(g, signed=True)} ({verdict})")
    ic_b, ic_a = d.get("ic_before"), d.get("ic_after")
    moved = (f"AID (objective {r['aid']['objective']}) moved L_IC of the teacher against S_p from {ic_b:.3f} to {ic_a:.3f} (L_CS "
             f"{d['cs_before']:.3f} -> {d['cs_after']:.3f}) at {t['acc_after'] - t['acc_before']:+.2f} points of "
             "teacher accuracy" if None not in (ic_b, ic_a, t.get("acc_before"), t.get("acc_after")) else
             "AID adapted the teacher")
    n = len(r["seeds"])
    line1 = (f"Shown: {moved}; student gains over distilling from T0, last epoch: {', '.join(gains) or '-'}. "
             f"Digits is easy and small ({DIGITS_TEST_IMAGES} test images, one image = "
             f"{100 / DIGITS_TEST_IMAGES:.2f} points, {n} seed{'s' if n > 1 else ''}): it shows the mechanics, not "
             "whether AID beats KD; for that see docs/results/pipeline_fmnist_published.md and docs/results/fmnist_gap.md.")
    line2 = (f"Files: {out_dir}/ (results.md, results.json, demo.png, one folder per stage with its checkpoints and "
             f"metrics); plot {plot}; rerunning reuses the finished stages.")
    return [line1, line2]


def plot_demo(r: dict, path: str | Path) -> Path:
    """``demo.png``: left, L_CS and L_IC of the teacher against S_p before and after AID as stacked bars
    (their sum is L_KD); right, the students' last-epoch test accuracy, from T0 and from T."""

    plt = pyplot()
    d = r["decomposition"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    cs = [d.get("cs_before") or 0.0, d.get("cs_after") or 0.0]
    ic = [d.get("ic_before") or 0.0, d.get("ic_after") or 0.0]
    x = [0, 1]
    ax1.bar(x, cs, width=0.55, label="L_CS (class-wise similarity)", color="#4c72b0")
    ax1.bar(x, ic, width=0.55, bottom=cs, label="L_IC (inner-class distribution)", color="#dd8452")
    for i in x:
        ax1.text(i, cs[i] + ic[i], f"L_KD {cs[i] + ic[i]:.3f}", ha="center", va="bottom", fontsize=9)
    ax1.set_ylim(0, 1.15 * max(a + b for a, b in zip(cs, ic)) or 1.0)
    ax1.set_xticks(x, ["T0 (original)", "T (adapted)"])
    ax1.set_ylabel(f"KD loss against S_p ({d.get('split')}, tau {r['aid']['tau']:g})")
    ax1.set_title("L_KD = L_CS + L_IC, before and after AID")
    ax1.legend(fontsize=8, loc="lower right")

    labels, means, stds, colors = ["vanilla"], [r["vanilla"]["last_stats"]["mean"]], \
        [r["vanilla"]["last_stats"]["std"]], ["#999999"]
    for m in r["methods"]:
        for part, prefix, color in (("baseline", "", "#4c72b0"), ("aid", "AID+", "#dd8452")):
            st = m[part]["last_stats"]
            labels.append(prefix + m["method"].upper())
            means.append(st["mean"])
            stds.append(st["std"])
            colors.append(color)
    vals = [v if v is not None else float("nan") for v in means]
    ax2.bar(range(len(vals)), vals, yerr=[s or 0.0 for s in stds], color=colors, capsize=3)
    finite = [v for v in vals if not math.isnan(v)]
    if finite:
        ax2.set_ylim(max(0.0, min(finite) - 5), min(100.0, max(finite) + 2))
    ax2.set_xticks(range(len(labels)), labels, rotation=20)
    ax2.set_ylabel("student test top-1 (%), last epoch")
    n = len(r["seeds"])
    ax2.set_title(f"students ({r['student']}), {n} seed{'s' if n > 1 else ''}")
    fig.suptitle(f"aidkd demo: digits, {r['teacher']['name']} -> {r['student']}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["CONFIG", "QUICK_CONFIG", "closing_lines", "decomposition_table", "demo_config", "plot_demo", "run_demo",
           "student_table", "teacher_line"]
