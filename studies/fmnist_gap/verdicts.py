"""The study's claims (docs/aid.md section 7), each judged from the finished results as a structured record.

A record is ``{"claim", "title", "comparison", "verdict"}``: ``comparison`` holds the numbers the verdict rests
on (paired differences over seeds, means, costs), ``verdict`` one of a few fixed words (``confirmed``,
``refuted``, ``not significant``, ``borderline``, ...), with ``detail`` where a verdict has parts. The Markdown
wording lives in :mod:`.render`; tests check these records.

Inputs: ``acc(job_id)`` -> last-epoch test accuracy (None if not finished), ``adapt(job_id)`` -> an adaptation's
record (None if not finished), ``decomp`` (per teacher: the L_CS / L_IC lists per seed), ``wall(job_id)``.

Every paired comparison carries its 95% confidence interval and its minimum detectable effect (the true mean
difference a two-sided paired t-test at 0.05 detects with 80% power, from the differences' std and n: the
noncentral t distribution); :func:`holm` corrects the p-values of all the report's comparisons together, and
:func:`noise_goal` checks the instrument against its goal (an A/A std at most 0.35 points, KD at least 1 point
above the vanilla student at p < 0.01 from two teachers, the largest teacher not the best).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from .plan import LAMBDA_SWEEP, Arm, JobId

SIG = 0.05  # two-sided paired t-test level for the verdicts
POWER = 0.8  # the power the minimum detectable effects are computed for
AA_GOAL = 0.35  # the noise floor the instrument aims at: std of the paired A/A difference, in points
KD_GAIN_GOAL, KD_GAIN_P = 1.0, 0.01  # KD above the vanilla student by at least this much, at this p


def min_detectable_effect(std: float, n: int, alpha: float = SIG, power: float = POWER) -> float:
    """The smallest true mean difference that a two-sided one-sample (paired) t-test at level ``alpha`` detects
    with probability ``power``, for n differences of standard deviation ``std`` (nan below 2; solved on the
    noncentral t distribution, so exact for normal differences)."""
    if n < 2 or math.isnan(std):
        return float("nan")
    if std == 0:
        return 0.0
    from scipy import optimize, stats

    df, crit = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)

    def power_at(ncp: float) -> float:  # both rejection tails; scipy gives nan where the far one underflows
        far = stats.nct.cdf(-crit, df, ncp)
        return stats.nct.sf(crit, df, ncp) + (0.0 if math.isnan(far) else far)

    hi = 1.0
    while power_at(hi) < power:  # a bracket (the noncentral t is unstable far beyond what is needed)
        hi *= 2
    ncp = optimize.brentq(lambda x: power_at(x) - power, 0.0, hi)
    return ncp * std / math.sqrt(n)


def confidence_interval(mean: float, std: float, n: int, level: float = 1 - SIG) -> tuple[float, float]:
    """The t confidence interval of a mean of n differences (nan below 2)."""
    if n < 2 or math.isnan(std):
        return float("nan"), float("nan")
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


def paired(a: list, b: list) -> dict:
    """Paired comparison a - b over seeds: mean, std, n, two-sided p (t-test; None below 2 pairs), the 95%
    confidence interval ``ci``, the minimum detectable effect ``mde`` (80% power), and beside the t-test the
    Wilcoxon signed-rank p ``wilcoxon_p`` and the Hodges-Lehmann estimate ``hl``."""
    d = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    res = {"n": len(d), "mean": statistics.mean(d) if d else float("nan"),
           "std": statistics.stdev(d) if len(d) > 1 else float("nan"), "p": None}
    if len(d) > 1:
        if res["std"] == 0:
            res["p"] = 0.0 if res["mean"] != 0 else 1.0
        else:
            from scipy import stats

            res["p"] = float(stats.ttest_1samp(d, 0.0).pvalue)
    res["ci"] = list(confidence_interval(res["mean"], res["std"], res["n"]))
    res["mde"] = min_detectable_effect(res["std"], res["n"])
    res["wilcoxon_p"], res["hl"] = wilcoxon_p(d), hodges_lehmann(d)
    return res


def wilcoxon_p(d: list[float]) -> float | None:
    """The two-sided Wilcoxon signed-rank p of differences ``d`` (None below 2 non-zero differences)."""
    if sum(x != 0 for x in d) < 2:
        return None
    from scipy import stats

    return float(stats.wilcoxon(d).pvalue)


def hodges_lehmann(d: list[float]) -> float:
    """The Hodges-Lehmann estimate of the centre of ``d``: the median of the Walsh averages (d_i + d_j) / 2, i <= j."""
    if not d:
        return float("nan")
    return statistics.median((d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d)))


def holm(pvalues: dict[str, float], alpha: float = SIG) -> dict[str, dict]:
    """Holm's step-down correction of a family of p-values: name -> {"p_holm" (adjusted, monotone), "survives"
    (rejected at ``alpha`` after correction)}."""
    order = sorted(pvalues, key=pvalues.get)
    m, out, running, rejecting = len(order), {}, 0.0, True
    for i, name in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[name]))
        rejecting = rejecting and pvalues[name] <= alpha / (m - i)
        out[name] = {"p_holm": running, "survives": rejecting}
    return out


def comparisons(recs: list[dict]) -> dict[str, dict]:
    """Every paired comparison inside the claims' records (the A/A controls left out), by a label
    ``claim/title/key[/sub-key]``: the family :func:`holm` corrects."""
    out: dict[str, dict] = {}

    def walk(label: str, x) -> None:
        if isinstance(x, dict) and {"n", "mean", "std", "p"} <= set(x):
            out[label] = x
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(f"{label}/{k}", v)

    for r in recs:
        if r["claim"] != "A/A":  # the controls measure the noise; they are no claim
            walk(f"{r['claim']}/{r['title']}", r["comparison"])
    return out


def corrected(recs: list[dict], alpha: float = SIG) -> list[dict]:
    """One row per comparison of ``recs`` with a p-value: label, the comparison, its Holm-adjusted p and whether
    it survives the correction over all of them."""
    cmps = {k: c for k, c in comparisons(recs).items() if c["p"] is not None}
    adj = holm({k: c["p"] for k, c in cmps.items()}, alpha)
    return [{"label": k, **c, **adj[k]} for k, c in cmps.items()]


def noise_goal(recs: list[dict], teachers: list[str]) -> dict | None:
    """The instrument against its goal, from the premise and the KD A/A records of a study of the teacher ladder
    ``teachers`` (None without an A/A record):
    ``aa_std`` per A/A control, ``kd_gain_teachers`` (KD >= 1 point above vanilla at p < 0.01), ``largest_best``,
    and ``reached`` (all three parts met; the A/A std of the largest teacher's control decides the first)."""
    aa = {r["teacher"]: r["comparison"]["kd_aa_minus_kd"] for r in recs if r["claim"] == "A/A" and "teacher" in r}
    if not aa:
        return None
    premise = next((r["comparison"]["kd_minus_vanilla"] for r in recs if r["claim"] == "0"), {})
    gains = [t for t, c in premise.items() if c["mean"] >= KD_GAIN_GOAL and c["p"] is not None and c["p"] < KD_GAIN_P]
    kd_means = {t: c["mean"] for t, c in premise.items()}  # KD - vanilla: the same order as KD's own means
    largest_best = None if set(kd_means) != set(teachers) else max(kd_means, key=kd_means.get) == teachers[-1]
    floor = aa.get(teachers[-1], next(iter(aa.values())))["std"]
    return {"aa_std": {t: c["std"] for t, c in aa.items()}, "floor": floor, "goal": AA_GOAL,
            "kd_gain_teachers": gains, "largest_best": largest_best,
            "reached": floor <= AA_GOAL and len(gains) >= 2 and largest_best is False}


def significance(cmp: dict, want_positive: bool = True) -> str:
    """confirmed / refuted (significant, in / against the predicted direction) / not significant [(fewer than 2
    seeds)]."""
    if cmp["n"] < 2 or cmp["p"] is None:
        return "not significant (fewer than 2 seeds)"
    if cmp["p"] < SIG:
        return "confirmed" if (cmp["mean"] > 0) == want_positive else "refuted"
    return "not significant"


def _record(claim: str, title: str, comparison: dict, verdict: str, **detail) -> dict:
    return {"claim": claim, "title": title, "comparison": comparison, "verdict": verdict, **detail}


def judge(seeds: list[int], teachers: list[str], acc: Callable, adapt: Callable, decomp: dict,
          wall: Callable) -> list[dict]:
    """Every claim's record for the teacher ladder ``teachers`` (smallest first), in the order of docs/aid.md
    section 7 (claims 5 and 6 have two records each)."""
    largest = teachers[-1]
    def accs(a: Arm) -> list:
        return [acc(str(a.job(s))) for s in seeds]

    out = []
    kd = {t: accs(Arm("kd", t)) for t in teachers}
    van = accs(Arm("vanilla"))
    # 0. the premise of every claim: KD helps this student
    by_teacher = {t: paired(kd[t], van) for t in teachers}
    by_teacher = {t: c for t, c in by_teacher.items() if c["n"]}
    if by_teacher:
        answers = {t: {"confirmed": "yes", "refuted": "no, significantly below"}.get(significance(c), "not significantly")
                   for t, c in by_teacher.items()}
        out.append(_record("0", "Premise: KD helps this student", {"kd_minus_vanilla": by_teacher}, "per teacher",
                           answers=answers))
    # 1. capacity gap: the claim predicts that the largest teacher gives no better student
    if all(all(x is not None for x in kd[t]) for t in teachers):
        means = {t: statistics.mean(kd[t]) for t in teachers}
        best_small = max(teachers[:-1], key=lambda t: means[t])
        c = paired(kd[largest], kd[best_small])
        v = {"confirmed": "refuted", "refuted": "confirmed"}.get(significance(c), "not significant")
        out.append(_record("1", "Capacity gap", {"largest_minus_best_smaller": c, "best_smaller": best_small,
                                                 "kd_means": means}, v))
    # 2. the inner-class part of the residual grows more than the class-wise part
    if all(t in decomp and all(x is not None for x in decomp[t]["kd_ic"]) for t in (teachers[0], largest)):
        dic = [a - b for a, b in zip(decomp[largest]["kd_ic"], decomp[teachers[0]]["kd_ic"])]
        dcs = [a - b for a, b in zip(decomp[largest]["kd_cs"], decomp[teachers[0]]["kd_cs"])]
        c = paired(dic, dcs)
        out.append(_record("2", "Inner-class part grows more", {"growth_ic": statistics.mean(dic),
                                                                "growth_cs": statistics.mean(dcs),
                                                                "ic_minus_cs": c}, significance(c)))
    # 3. AID + KD beats KD, most for the largest gap
    gains = {t: paired(accs(Arm("aid-ft+kd", t)), kd[t]) for t in teachers}
    gains = {t: g for t, g in gains.items() if g["n"]}
    if largest in gains:
        if all(g["mean"] <= 0 for g in gains.values()):
            shape = "no gain"
        else:
            shape = "largest for the largest gap" if all(gains[largest]["mean"] >= g["mean"] for g in gains.values()) \
                else "not largest for the largest gap"
        out.append(_record("3", "AID+KD beats KD", {"gain_by_teacher": gains}, significance(gains[largest]),
                           shape=shape))
    # 4. a moderate degree of adaptation is best
    vals = {lam: accs(Arm(f"aid-{v}+kd", largest)) for lam, v in LAMBDA_SWEEP}
    have = {lam: v for lam, v in vals.items() if all(x is not None for x in v)}
    if len(have) >= 3:
        means = {lam: statistics.mean(v) for lam, v in have.items()}
        best = max(means, key=means.get)
        top = max(have)
        c = paired(have[best], have[top]) if best != top else None
        c_none = paired(have[best], kd[largest])  # the best degree against no adaptation (plain KD)
        too_much_hurts = c is not None and significance(c) == "confirmed"
        if best == top:
            v = "refuted"
        elif too_much_hurts and significance(c_none) == "confirmed":
            v = "confirmed"
        elif too_much_hurts:
            v = "partly"
        else:
            v = "not significant"
        out.append(_record("4", "Moderate adaptation is best", {"means": means, "best": best, "strongest": top,
                                                                "best_minus_strongest": c,
                                                                "best_minus_kd": c_none}, v))
    else:
        out.append(_record("4", "Moderate adaptation is best", {"lambda_values": len(have)}, "not measured"))
    # 5. AID composes with DKD and DIST
    for m in ("dkd", "dist"):
        c = paired(accs(Arm(f"aid-ft+{m}", largest)), accs(Arm(m, largest)))
        if c["n"]:
            out.append(_record("5", f"AID+{m.upper()} > {m.upper()}", {"aid_minus_method": c, "method": m},
                               significance(c)))
    # 6. against TAKD (accuracy and cost) and born-again KD
    aid = accs(Arm("aid-ft+kd", largest))
    a_cost = [wall(str(JobId("adapt-ft", s, largest))) for s in seeds]
    t_cost = [wall(str(JobId("takd-assistant", s, largest))) for s in seeds]
    a_cost, t_cost = [x for x in a_cost if x is not None], [x for x in t_cost if x is not None]
    cost = {"aid": statistics.mean(a_cost), "takd": statistics.mean(t_cost)} if a_cost and t_cost else None
    for name, what in (("TAKD", "takd"), ("born-again KD", "ban")):
        c = paired(aid, accs(Arm(what, largest)))
        if not c["n"]:
            continue
        v = significance(c)
        detail = {}
        if name == "TAKD":
            acc_ok = v != "refuted"
            cheaper = cost is not None and cost["aid"] < cost["takd"]
            detail = {"accuracy": v, "cost": "cheaper" if cheaper else "dearer"}
            v = ("confirmed" if acc_ok and cheaper else "refuted on cost" if acc_ok else
                 "refuted on accuracy" if cheaper else "refuted")
        out.append(_record("6", f"AID+KD vs {name}", {"aid_minus_other": c, "cost_s": cost if name == "TAKD" else None},
                           v, **detail))
    # 7. the adapted teacher keeps its accuracy
    ft = [r for r in (adapt(str(JobId("adapt-ft", s, largest))) for s in seeds) if r is not None]
    drops = [r["teacher_val_acc_before"] - r["teacher_val_acc_after"] for r in ft]
    if drops:
        tol = ft[0]["params"]["acc_tolerance"]
        over = sum(d > tol for d in drops)
        v = "confirmed" if over == 0 else "refuted" if over == len(drops) else "borderline"
        out.append(_record("7", "The adapted teacher keeps its accuracy", {"val_drops": drops, "tolerance": tol,
                                                                          "seeds_over": over,
                                                                          "mean_drop": statistics.mean(drops)}, v))
    # the causal test of the decomposition: the class-wise part alone should match or beat KD from the largest
    # teacher, the inner-class part alone fall behind it
    for part, want_positive in (("cs", True), ("ic", False)):
        by_t = {t: paired(accs(Arm(f"kd-{part}", t)), kd[t]) for t in teachers}
        by_t = {t: c for t, c in by_t.items() if c["n"]}
        if largest in by_t:
            out.append(_record("C", f"KD from L_{part.upper()} only vs KD", {f"kd_{part}_minus_kd": by_t},
                               significance(by_t[largest], want_positive), part=part))
    # A/A controls: KD through the L_CS + L_IC path, the same objective up to float rounding
    for t in teachers:
        c = paired(accs(Arm("kd-aa", t)), kd[t])
        if c["n"] >= 2:
            out.append(_record("A/A", f"Noise floor: KD twice from {t}", {"kd_aa_minus_kd": c}, "noise floor",
                               teacher=t))
    # a control: where the entropy bisection leaves the teacher as it is, the projection is KD up to rounding
    betas = [(adapt(str(JobId("adapt-proj_tempered", s, largest))) or {}).get("beta") for s in seeds]
    c = paired(accs(Arm("aid-proj_tempered+kd", largest)), kd[largest])
    if c["n"] >= 2 and all(b is not None and b >= 0.999 for b in betas):
        out.append(_record("A/A", "Noise floor (an A/A control)", {"same_targets_minus_kd": c}, "noise floor"))
    return out


def fmt_cmp(c: dict) -> str:
    p = "n/a" if c["p"] is None else f"{c['p']:.3f}"
    std = "" if math.isnan(c["std"]) else f" +- {c['std']:.2f}"
    extra = "" if math.isnan(c.get("mde", math.nan)) else \
        f", 95% CI [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}], MDE {c['mde']:.2f}"
    return f"{c['mean']:+.2f}{std} (n={c['n']}, p={p}{extra})"
