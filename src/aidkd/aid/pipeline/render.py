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


def results_markdown(r: dict) -> str:
    """The results table (Markdown) of :func:`collect_results`'s dict."""
    t, d, a = r["teacher"], r["decomposition"], r["aid"]
    n = len(r["seeds"])
    lines = [
        f"# AID pipeline: {r['dataset']}, teacher {t['name']} -> student {r['student']}",
        "",
        f"Seeds {', '.join(map(str, r['seeds']))} ({'mean ± std over ' + str(n) + ' seeds' if n > 1 else 'one seed'}); "
        f"{r['epochs']} distillation epochs. Student accuracy: test top-1 (%), at the last epoch and at the epoch "
        f"selected by the engine (selection: {r['vanilla']['selection']}).",
        "",
        "## Teacher and adaptation",
        "",
        "| | before AID | after AID |",
        "|---|---|---|",
        f"| teacher top-1 (%, {t['acc_split']}) | {_num(t['acc_before'], 2)} | {_num(t['acc_after'], 2)} |",
        f"| L_KD (teacher ‖ S_ref, {d['split']}) | {_num(d['kd_before'])} | {_num(d['kd_after'])} |",
        f"| L_CS (class-wise similarity) | {_num(d['cs_before'])} | {_num(d['cs_after'])} |",
        f"| L_IC (inner-class distribution) | {_num(d['ic_before'])} | {_num(d['ic_after'])} |",
        f"| I_T (teacher's inner-class information) | {_num(d.get('teacher_info_before'))} | "
        f"{_num(d.get('teacher_info_after'))} |",
        "",
        f"AID: mode {a['mode']}, ic_target {a['ic_target']}, tau {a['tau']:g}, lambda_ic {a['lambda_ic']:g}, "
        f"lambda_cs {a['lambda_cs']:g}, lambda_ce {a['lambda_ce']:g}"
        + (f", epochs {a['epochs']}" if a["mode"] != "projection" else f", alpha {a['alpha']:g}")
        + (f", beta {a['beta']:.3f}" if a.get("beta") is not None else "")
        + f". Reference S_ref: {r['reference']['kind']} (top-1 {_num(r['reference']['acc'], 2)}%).",
    ]
    c = r.get("adaptation_cost") or {}
    if c.get("fraction") is not None:
        lines += ["", f"AID's cost: the adaptation took {c['adapt_s']:.1f} s, {100 * c['fraction']:.1f}% of one "
                      f"distillation from the adapted teacher ({c['distill_s']:.1f} s on average)."]
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
    lines += ["", "## Stages", "", "| stage | status (this run) | wall time (s) | folder |", "|---|---|---|---|"]
    for s in r["stages"]:
        folder = Path(s["dir"]).name if s["dir"] else s["checkpoint"]
        lines.append(f"| {s['stage']} | {s['status']} | {_num(s['wall_time_s'], 1)} | {folder} |")
    lines += ["", f"Pipeline wall time of this invocation: {r['pipeline_wall_time_s']:.1f} s "
                  "(skipped stages cost nothing; their recorded wall time is shown above).", ""]
    return "\n".join(lines)


__all__ = ["results_markdown"]
