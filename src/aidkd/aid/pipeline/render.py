"""The pipeline's results dict (:func:`~aidkd.aid.pipeline.results.collect_results`) as a Markdown report."""
from __future__ import annotations

import math
from pathlib import Path


def _fmt(st: dict, digits: int = 2, signed: bool = False) -> str:
    if not st or st.get("mean") is None:
        return "-"
    m = f"{st['mean']:+.{digits}f}" if signed else f"{st['mean']:.{digits}f}"
    return m if st["n"] < 2 else f"{m} ± {st['std']:.{digits}f}"


def _num(x, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


#: the rows of the adaptation table: label, report key
ADAPTATION_ROWS = (("teacher top-1 (%)", "teacher_acc", 2), ("L_KD (teacher ‖ S_p)", "kd", 3),
                   ("L_CS (class-wise similarity)", "cs", 3), ("L_IC (inner-class distribution)", "ic", 3),
                   ("I_T (teacher's inner-class information)", "teacher_info", 3),
                   ("inner-class agreement rho (teacher, S_p)", "agreement", 3))


def adaptation_table(d: dict, train: dict | None) -> list[str]:
    """The before/after table of the adaptation: the held-out split (``d["split"]``) and, when measured, the
    training images, each column named by its split."""
    cols = [(d["split"], d)] + ([("train", train)] if train else [])
    head = "| | " + " | ".join(f"{name}: before | {name}: after" for name, _ in cols) + " |"
    lines = [head, "|---|" + "---|---|" * len(cols)]
    for label, key, digits in ADAPTATION_ROWS:
        cells = " | ".join(f"{_num(x.get(f'{key}_before'), digits)} | {_num(x.get(f'{key}_after'), digits)}"
                           for _, x in cols)
        lines.append(f"| {label} | {cells} |")
    return lines


def cost_table(c: dict) -> list[str]:
    """AID's cost against KD, TAKD and DGKD (the paper's Table 7), with the ratios and their goals."""
    def t(x) -> str:
        return "-" if x is None else f"{x:.1f}"

    def r(x, goal: str) -> str:
        return "-" if x is None else f"{x:.2f} ({goal})"

    fit = "" if _num(c.get("fit_s"), 1) == "-" else f", of which fine-tuning {_num(c['fit_s'], 1)}"
    return [
        "| run (one seed) | wall time (s) | ratio |",
        "|---|---|---|",
        f"| AID in all: S_p + adaptation + distillation | {t(c.get('aid_total_s'))} | "
        f"{r(c.get('aid_total_over_takd'), 'of TAKD; goal <= 0.35, paper 0.26')} |",
        f"| AID's own: adaptation ({t(c.get('adapt_s'))}{fit}) + distillation ({t(c.get('distill_s'))}) | "
        f"{t(c.get('aid_own_s'))} | {r(c.get('aid_own_over_kd'), 'x KD; goal <= 1.3')} |",
        f"| S_p (pretrained student) | {t(c.get('reference_s'))} | |",
        f"| KD from T0 | {t(c.get('kd_s'))} | |",
        f"| TAKD: assistant + distillation | {t(c.get('takd_s'))} | |",
        f"| DGKD: assistants + distillation | {t(c.get('dgkd_s'))} | "
        f"{r(c.get('aid_total_over_dgkd'), 'AID in all over DGKD; paper 0.55')} |",
    ]


def results_markdown(r: dict) -> str:
    """The results table (Markdown) of :func:`collect_results`'s dict."""
    t, d, a, ref = r["teacher"], r["decomposition"], r["aid"], r["reference"]
    n = len(r["seeds"])
    weights = ", ".join(f"{k} {a[k]:g}" for k in ("lambda_ce", "lambda_kd", "lambda_ic", "lambda_cs") if a.get(k))
    lines = [
        f"# AID pipeline: {r['dataset']}, teacher {t['name']} -> student {r['student']}",
        "",
        f"Seeds {', '.join(map(str, r['seeds']))} ({'mean ± std over ' + str(n) + ' seeds' if n > 1 else 'one seed'}); "
        f"{r['epochs']} distillation epochs. Student accuracy: test top-1 (%), at the last epoch and at the epoch "
        f"selected by the engine (selection: {r['vanilla']['selection']}).",
        "",
        "## Teacher and adaptation",
        "",
        f"AID: objective {a['objective']} ({weights}; tau {a['tau']:g}"
        + (f", {a['epochs']} epochs at lr {a['lr']:g}" if a["objective"] != "projection" else f", alpha {a['alpha']:g}")
        + (f", beta {a['beta']:.3f}" if a.get("beta") is not None else "")
        + f"). Pretrained student S_p: {ref['kind']} {ref.get('model') or ''}"
        + (" (a proxy)" if ref.get("proxy") else "") + f", top-1 {_num(ref['acc'], 2)}% ({d['split']}).",
        "",
        *adaptation_table(d, r.get("decomposition_train")),
    ]
    if t["acc_split"] != "test" and t.get("test_acc") is not None:
        lines += ["", f"T0 test top-1: {t['test_acc']:.2f}% (the projection teacher serves the training split only)."]
    if t.get("acc_warning"):
        lines += ["", f"**WARNING: the adapted teacher lost {t['acc_drop']:.2f} points, more than the tolerance of "
                      f"{t['acc_tolerance']:.2f}.**"]
    lines += [
        "",
        "## Students",
        "",
        "| method | without AID: last | without AID: best-sel. | with AID: last | with AID: best-sel. | "
        "AID gain: last | AID gain: best-sel. |",
        "|---|---|---|---|---|---|---|",
        f"| vanilla (CE only) | {_fmt(r['vanilla']['last_stats'])} | {_fmt(r['vanilla']['best_stats'])} | - | - | - | - |",
    ]
    for m in r["methods"]:
        lines.append(f"| {m['method']} | {_fmt(m['baseline']['last_stats'])} | {_fmt(m['baseline']['best_stats'])} | "
                     f"{_fmt(m['aid']['last_stats'])} | {_fmt(m['aid']['best_stats'])} | "
                     f"{_fmt(m['gain_last'], signed=True)} | {_fmt(m['gain_best'], signed=True)} |")
    if r.get("online"):
        o = r["online"]
        lines.append(f"| aid_online (KD, adapted online) | - | - | {_fmt(o['last_stats'])} | {_fmt(o['best_stats'])} "
                     "| - | - |")
    if r.get("takd"):
        k = r["takd"]
        lines.append(f"| TAKD (KD through {k['assistant']}) | {_fmt(k['last_stats'])} | {_fmt(k['best_stats'])} "
                     "| - | - | - | - |")
    if r.get("dgkd"):
        k = r["dgkd"]
        lines.append(f"| DGKD (T0 + {', '.join(k['assistants'])}) | {_fmt(k['last_stats'])} | "
                     f"{_fmt(k['best_stats'])} | - | - | - | - |")
    c = r.get("adaptation_cost") or {}
    if c.get("aid_own_s") is not None:
        lines += ["", "## Cost", "", *cost_table(c)]
    lines += ["", "## Stages", "", "| stage | status (this run) | wall time (s) | folder |", "|---|---|---|---|"]
    for s in r["stages"]:
        folder = Path(s["dir"]).name if s["dir"] else s["checkpoint"]
        lines.append(f"| {s['stage']} | {s['status']} | {_num(s['wall_time_s'], 1)} | {folder} |")
    lines += ["", f"Pipeline wall time of this invocation: {r['pipeline_wall_time_s']:.1f} s "
                  "(skipped stages cost nothing; their recorded wall time is shown above).", ""]
    return "\n".join(lines)


__all__ = ["adaptation_table", "cost_table", "results_markdown"]
