"""Evidence v4's verdicts and report: the published AID judged in the regime where KD helps a converged student.

The claims, each a record ``{"claim", "title", "comparison", "verdict"}`` as in :mod:`.verdicts`, every
comparison paired over seeds (the same seed: the same student initialisation and batch order):

* ``0`` the premise, KD minus the vanilla student, per teacher;
* ``A/A`` the replicated KD control from the largest teacher (the second run through the L_CS + L_IC path): the
  std of its two runs' difference is the noise floor; their mean is the control of the headline;
* ``1`` the capacity gap: KD from the largest teacher minus KD from the best smaller one;
* ``H`` the headline: the published AID (the middle degree) + KD minus the KD control, from the largest teacher;
* ``G`` the same gain from every teacher of the ladder;
* ``T`` the pre-specified trend over teacher size (the paper's Table 2: AID's gain grows with the teacher): per
  seed, the least-squares slope of the gain against log10 of the teacher's parameters, their mean tested against 0;
* ``K`` KD's own trend over teacher size (the capacity gap predicts a negative slope), the same way;
* ``D`` the pre-specified trend over the degree of adaptation at the largest teacher: per seed, the slope of the
  AID + KD accuracy against the degree's rank, tested against 0.

Beside each t-test: the Wilcoxon signed-rank p and the Hodges-Lehmann estimate (:func:`.verdicts.paired`); every
claim's comparisons form one Holm family (:func:`.verdicts.corrected`).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path

from aidkd.files.rundir import check_report_file, own_folder, write_report_json, write_report_text

from .plan import PROFILES, Arm, JobId, ladder, plan
from .render import _DATASETS, _ms, _wall, precision_clause, records
from .verdicts import corrected, fmt_cmp, paired, significance


def _slopes(xs: list[float], per_seed: list[list]) -> list[float]:
    """The least-squares slope of each seed's values (None where missing) against ``xs``."""
    out = []
    for ys in per_seed:
        pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
        if len(pts) < 2:
            continue
        mx, my = statistics.mean(p[0] for p in pts), statistics.mean(p[1] for p in pts)
        sxx = sum((x - mx) ** 2 for x, _ in pts)
        out.append(sum((x - mx) * (y - my) for x, y in pts) / sxx)
    return out


def _trend(xs: list[float], series: list[list]) -> dict:
    """The paired test of a pre-specified trend: per seed (``series[i]`` the seed's values along ``xs``), the
    slope; their mean against 0."""
    slopes = _slopes(xs, [list(s) for s in zip(*series, strict=True)]) if series else []
    return paired(slopes, [0.0] * len(slopes))


def judge_v4(seeds: list[int], teachers: list[str], params: dict, degrees: list[str], ckpt: int,
             acc: Callable[[JobId], float | None]) -> list[dict]:
    """Every claim's record (see the module docstring); ``params``: teacher -> parameter count; ``acc``: a
    student's last-epoch test accuracy (None if not finished)."""
    largest, default = teachers[-1], degrees[len(degrees) // 2]

    def accs(what: str, t: str | None = None) -> list:
        return [acc(Arm(what, t, ckpt if t else 0).job(s)) for s in seeds]

    van = accs("vanilla")
    kd = {t: accs("kd", t) for t in teachers}
    replica = accs("kd-aa", largest)
    control = [None if a is None or b is None else (a + b) / 2 for a, b in zip(kd[largest], replica, strict=True)]
    aid = {t: accs(f"aid-{default}+kd", t) for t in teachers}
    out = []
    premise = {t: paired(kd[t], van) for t in teachers}
    out.append({"claim": "0", "title": "Premise: KD helps this student", "comparison": {"kd_minus_vanilla": premise},
                "verdict": {t: significance(c) for t, c in premise.items()}})
    out.append({"claim": "A/A", "title": f"KD run twice from {largest}", "teacher": largest,
                "comparison": {"kd_aa_minus_kd": paired(replica, kd[largest])}, "verdict": "control"})
    finished = {t: statistics.mean(x for x in kd[t] if x is not None) for t in teachers[:-1]
                if any(x is not None for x in kd[t])}
    if finished:
        best = max(finished, key=finished.get)
        c = paired(kd[largest], kd[best])
        out.append({"claim": "1", "title": "Capacity gap", "comparison": {"largest_minus_best_smaller": c},
                    "best_smaller": best, "verdict": significance(c, want_positive=False)})
    head = paired(aid[largest], control)
    out.append({"claim": "H", "title": f"Published AID ({default}) + KD vs KD, from {largest}",
                "comparison": {"aid_minus_kd_control": head}, "verdict": significance(head)})
    gains = {t: paired(aid[t], kd[t]) for t in teachers}
    out.append({"claim": "G", "title": "AID's gain by teacher", "comparison": {"aid_minus_kd": gains},
                "verdict": {t: significance(c) for t, c in gains.items()}})
    logp = [math.log10(params[t]) for t in teachers] if all(t in params for t in teachers) else None
    if logp:
        gain_series = [[None if a is None or b is None else a - b for a, b in zip(aid[t], kd[t], strict=True)]
                       for t in teachers]
        t_cmp, k_cmp = _trend(logp, gain_series), _trend(logp, [kd[t] for t in teachers])
        out.append({"claim": "T", "title": "AID's gain grows with the teacher (slope per decade of parameters)",
                    "comparison": {"gain_slope": t_cmp}, "verdict": significance(t_cmp)})
        out.append({"claim": "K", "title": "KD's accuracy falls with the teacher (slope per decade of parameters)",
                    "comparison": {"kd_slope": k_cmp}, "verdict": significance(k_cmp, want_positive=False)})
    if len(degrees) >= 3:
        d_cmp = _trend(list(range(len(degrees))), [accs(f"aid-{v}+kd", largest) for v in degrees])
        out.append({"claim": "D", "title": f"AID + KD against the degree of adaptation ({', '.join(degrees)})",
                    "comparison": {"degree_slope": d_cmp}, "verdict": significance(d_cmp)})
    return out


def _arm_rows(teachers: list[str], degrees: list[str], ckpt: int) -> list[tuple[str, str, Arm]]:
    largest, default = teachers[-1], degrees[len(degrees) // 2]
    rows = [("vanilla", "-", Arm("vanilla"))] + [("KD", t, Arm("kd", t, ckpt)) for t in teachers]
    rows += [("KD, second run (L_CS + L_IC path)", largest, Arm("kd-aa", largest, ckpt))]
    rows += [(f"AID ({default}) + KD", t, Arm(f"aid-{default}+kd", t, ckpt)) for t in teachers]
    rows += [(f"AID ({v}) + KD", largest, Arm(f"aid-{v}+kd", largest, ckpt)) for v in degrees if v != default]
    return rows


def _before_after(reports: list[dict], key: str) -> str:
    """``mean before -> mean after`` of ``key`` over adaptation reports."""
    b = [x[f"{key}_before"] for x in reports if x.get(f"{key}_before") is not None]
    a = [x[f"{key}_after"] for x in reports if x.get(f"{key}_after") is not None]
    return f"{statistics.mean(b):.3f} -> {statistics.mean(a):.3f}" if a and b else "-"


def _adapt_lines(recs: dict, seeds: list[int], teachers: list[str], degrees: list[str], ckpt: int) -> list[str]:
    """The adaptation, teacher side: accuracy, I_T and the inner-class agreement with the vanilla student, before
    and after, on held-out data (the validation split) and on the student's training images."""
    largest, default = teachers[-1], degrees[len(degrees) // 2]
    out = ["## The adaptation (teacher side)", "",
           "The teacher fine-tuned with the KD loss towards the vanilla student of the same seed (E_a = 10% of the "
           "distillation epochs). I_T: the teacher's inner-class information (tau 4); agreement: the inner-class "
           "agreement with the vanilla student; held-out: the validation split; train: the student's training "
           "images. Before -> after, mean over seeds.", "",
           "| teacher | degree | acc held-out | I_T held-out | I_T train | agreement held-out | agreement train |",
           "|---|---|---|---|---|---|---|"]
    for t in teachers:
        for v in degrees if t == largest else [default]:
            reps = [recs[str(JobId(f"adapt-{v}", s, t, ckpt))]["report"] for s in seeds
                    if str(JobId(f"adapt-{v}", s, t, ckpt)) in recs]
            if reps:
                trains = [r.get("train", {}) for r in reps]
                out.append(f"| {t} | {v} | {_before_after(reps, 'teacher_acc')} | {_before_after(reps, 'teacher_info')} | "
                           f"{_before_after(trains, 'teacher_info')} | {_before_after(reps, 'agreement')} | "
                           f"{_before_after(trains, 'agreement')} |")
    return out + [""]


def _verdict_lines(verdicts: list[dict]) -> list[str]:
    out = ["## Verdicts", ""]
    for r in verdicts:
        c = r["comparison"]
        if r["claim"] in ("0", "G"):
            (key, by_teacher), = c.items()
            out.append(f"- **{r['title']}**: " + "; ".join(f"{t} {fmt_cmp(x)} (**{r['verdict'][t]}**)"
                                                        for t, x in by_teacher.items()))
        elif r["claim"] == "A/A":
            out.append(f"- **{r['title']}** (noise floor): {fmt_cmp(c['kd_aa_minus_kd'])}")
        else:
            (key, x), = c.items()
            extra = f" against {r['best_smaller']}" if "best_smaller" in r else ""
            out.append(f"- **{r['title']}**{extra}: {fmt_cmp(x)}. Verdict: **{r['verdict']}**.")
    return out + [""]


def _holm_lines(verdicts: list[dict]) -> list[str]:
    rows = corrected(verdicts)
    out = [f"## All comparisons, one Holm family ({len(rows)})", "",
           "| comparison | n | mean +- std | 95% CI | MDE | t-test p | Wilcoxon p | Hodges-Lehmann | Holm p | survives |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w = "-" if r.get("wilcoxon_p") is None else f"{r['wilcoxon_p']:.3f}"
        out.append(f"| {r['label']} | {r['n']} | {r['mean']:+.2f} +- {r['std']:.2f} | [{r['ci'][0]:+.2f}, "
                   f"{r['ci'][1]:+.2f}] | {r['mde']:.2f} | {r['p']:.3f} | {w} | {r['hl']:+.2f} | {r['p_holm']:.3f} | "
                   f"{'yes' if r['survives'] else 'no'} |")
    return out + [""]


def _size_plot(path: Path, seeds, teachers, params, degrees, ckpt, acc) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = degrees[len(degrees) // 2]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ts = [t for t in teachers if t in params]
    for label, what in (("KD", "kd"), (f"AID ({default}) + KD", f"aid-{default}+kd")):
        ms = [[a for a in (acc(JobId(what, s, t, ckpt)) for s in seeds) if a is not None] for t in ts]
        if all(ms):
            ax.errorbar([params[t] for t in ts], [statistics.mean(m) for m in ms],
                        yerr=[statistics.stdev(m) if len(m) > 1 else 0.0 for m in ms], marker="o", capsize=3,
                        label=label)
    van = [a for a in (acc(JobId("vanilla", s)) for s in seeds) if a is not None]
    if van:
        ax.axhline(statistics.mean(van), color="gray", ls="--", label="vanilla student")
    ax.set_xscale("log")
    ax.set_xlabel("teacher parameters")
    ax.set_ylabel("student test top-1 (%), last epoch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_v4_report(profile: str, root: Path, R: dict, report_path: Path) -> Path:
    """The report of a v4 profile from its finished stages ``R``: the teachers, the students (last and selected
    epoch), the noise floor, the verdicts with every comparison in one Holm family, the adaptation's teacher side,
    the student-accuracy-against-teacher-size plot and the cost per arm; ``.json`` beside it."""
    p = PROFILES[profile]
    seeds, teachers, degrees, ckpt = p["seeds"], ladder(profile), p["degrees"], p["ckpt"]
    for f in (report_path, report_path.with_suffix(".json")):
        check_report_file(f)
    fig_dir = report_path.parent / report_path.stem
    own_folder(fig_dir, "--report", "report figures", suffixes=(".png",))
    recs, _ = records(profile, R)

    def rec(job: JobId, key: str = "last_test_acc"):
        r = recs.get(str(job))
        return None if r is None or "summary" not in r else r["summary"].get(key)

    params = {t: recs[str(JobId("teacher", teacher=t, ckpt=ckpt))]["params"] for t in teachers
              if (recs.get(str(JobId("teacher", teacher=t, ckpt=ckpt))) or {}).get("params")}
    student = (recs.get(str(JobId("vanilla", seeds[0]))) or {}).get("params")  # from its logits stage
    n_jobs = sum(len(w) for w in plan(profile))
    lines = [f"# Evidence v4 ({profile} profile): the published AID where KD helps", "",
             f"Produced by `python -m studies.fmnist_gap --profile {profile} --report {report_path}` (stages under "
             f"`{root}`); {len(recs)} of {n_jobs} jobs finished.", "",
             f"Setting: {_DATASETS.get(p.get('dataset', 'fashion_mnist'))}, student `{p['student']}` on "
             + (f"{p['train_subset']:,} training images" if p["train_subset"] else "the whole training split") + ", "
             f"batch {p['batch_size']}, {p['student_epochs']} epochs, validated every {p['eval_every']}; teachers "
             f"trained on the whole training split (checkpoint {ckpt}){precision_clause(recs)}; seeds {seeds}. "
             "Accuracies: test top-1 (%), mean +- std over seeds; **last** = last epoch, **sel** = the epoch chosen "
             "on the validation split.", "",
             "## Teachers", "", "| teacher | params | x the student | val (sel) | test last | served |", "|---|---|---|---|---|---|"]
    for t in teachers:
        r = recs.get(str(JobId("teacher", teacher=t, ckpt=ckpt)))
        if r:
            s, served = r["summary"], "shipped, sha256 verified" if r.get("source") == "shipped" else "trained here"
            ratio = f"{params[t] / student:.0f}" if student and t in params else "-"
            lines.append(f"| {t} | {params.get(t, 0):,} | {ratio} | {s['best_acc']:.2f} | {s['last_test_acc']:.2f} | "
                         f"{served} |")
    lines += ["", "## Students", "", "| arm | teacher | test last | test sel | seeds | wall s (mean) |",
              "|---|---|---|---|---|---|"]
    for name, t, a in _arm_rows(teachers, degrees, ckpt):
        last = [rec(a.job(s)) for s in seeds]
        if any(x is not None for x in last):
            walls = [_wall(recs[str(a.job(s))]) for s in seeds if str(a.job(s)) in recs]
            lines.append(f"| {name} | {t} | {_ms(last)} | {_ms([rec(a.job(s), 'best_test_acc') for s in seeds])} | "
                         f"{sum(x is not None for x in last)} | {statistics.mean(walls):.0f} |")
    verdicts = judge_v4(seeds, teachers, params, degrees, ckpt, rec)
    lines += [""] + _verdict_lines(verdicts) + _holm_lines(verdicts) + _adapt_lines(recs, seeds, teachers, degrees, ckpt)
    plot = fig_dir / "student_acc_vs_teacher_size.png"
    _size_plot(plot, seeds, teachers, params, degrees, ckpt, rec)
    lines += ["## Plot", "", f"![student accuracy against the teacher's size]({fig_dir.name}/{plot.name})", ""]
    notes = report_path.with_suffix(".notes.md")
    if notes.is_file():
        lines += [notes.read_text().rstrip(), ""]
    write_report_text(report_path, "\n".join(lines))
    write_report_json(report_path.with_suffix(".json"), {"profile": profile, "results": recs, "verdicts": verdicts,
                                                         "holm": corrected(verdicts)})
    return report_path
