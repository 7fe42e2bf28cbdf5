"""The report of the Fashion-MNIST capacity-gap benchmark: tables (mean +- std over seeds), plots, verdicts."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

SIG = 0.05  # two-sided paired t-test level for the verdicts


def _load(root: Path, jobs) -> dict[str, dict]:
    out = {}
    for j in jobs:
        f = root / "results" / f"{j}.json"
        if f.exists():
            out[j] = json.loads(f.read_text())
    return out


def _wall(r: dict) -> float:
    """A job's wall time; a training run interrupted and resumed counts the time of all its sessions."""
    return max(r["job_wall_s"], (r.get("summary") or {}).get("wall_time_s", 0.0))


def _ms(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} +- {statistics.stdev(xs):.2f}"


def paired(a: list[float], b: list[float]) -> dict:
    """Paired comparison a - b over seeds: mean, std, n, two-sided p (t-test; None below 2 pairs)."""
    d = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    res = {"n": len(d), "mean": statistics.mean(d) if d else float("nan"),
           "std": statistics.stdev(d) if len(d) > 1 else float("nan"), "p": None}
    if len(d) > 1:
        if res["std"] == 0:
            res["p"] = 0.0 if res["mean"] != 0 else 1.0
        else:
            from scipy import stats

            res["p"] = float(stats.ttest_1samp(d, 0.0).pvalue)
    return res


def _verdict(cmp: dict, want_positive: bool = True) -> str:
    if cmp["n"] < 2 or cmp["p"] is None:
        return "not significant (fewer than 2 seeds)"
    if cmp["p"] < SIG:
        positive = cmp["mean"] > 0
        return "confirmed" if positive == want_positive else "refuted"
    return "not significant"


def _fmt_cmp(c: dict) -> str:
    p = "n/a" if c["p"] is None else f"{c['p']:.3f}"
    std = "" if math.isnan(c["std"]) else f" +- {c['std']:.2f}"
    return f"{c['mean']:+.2f}{std} (n={c['n']}, p={p})"


def write_report(root: Path, profile: str, jobs: dict, report_path: str) -> Path:
    from .fmnist_gap import LARGEST, PROFILES, TEACHERS, VARIANTS

    R = _load(root, jobs)
    seeds = PROFILES[profile]["seeds"]
    fig_dir = Path(report_path).parent / Path(report_path).stem
    fig_dir.mkdir(parents=True, exist_ok=True)

    def acc(job: str, key: str = "last_test_acc"):
        r = R.get(job)
        return None if r is None else r["summary"].get(key)

    def accs(fmt: str, key: str = "last_test_acc") -> list:
        return [acc(fmt.format(s=s), key) for s in seeds]

    lines = [f"# Fashion-MNIST capacity-gap benchmark ({profile} profile)", ""]
    flag = {"full": "", "quick": " --quick"}.get(profile, f" --profile {profile}")
    lines += [f"Produced by `aidkd bench fmnist-gap{flag}` "
              f"(outputs under `{root}`); {len(R)} of {len(jobs)} jobs finished.", ""]
    p = PROFILES[profile]
    lines += ["Setting: Fashion-MNIST 28x28, 10% of train held out for validation (fixed split), no augmentation "
              f"(teacher outputs cached), SGD momentum 0.9, lr 0.05 cosine, batch 128; teachers {p['teacher_epochs']} "
              f"epochs, students {p['student_epochs']} epochs; seeds {seeds}. Student `{p['student']}`; teachers "
              f"{', '.join('`' + t + '`' for t in TEACHERS)}. Accuracies are test top-1 (%), mean +- std over seeds: "
              "**last** = last epoch, **sel** = the epoch chosen on the validation split.", ""]

    # teachers
    lines += ["## Teachers", "", "| teacher | params | val (sel) | test last | test sel | wall s |", "|---|---|---|---|---|---|"]
    tparams = {}
    for t in TEACHERS:
        r = R.get(f"teacher_{t}")
        if r:
            s = r["summary"]
            tparams[t] = r["params"]
            lines.append(f"| {t} | {r['params']:,} | {s['best_acc']:.2f} | {s['last_test_acc']:.2f} | "
                         f"{s['best_test_acc']:.2f} | {s['wall_time_s']:.0f} |")
    lines.append("")

    # students
    rows = [("vanilla", "-", "s{s}_vanilla")]
    for t in TEACHERS:
        rows.append(("KD", t, f"s{{s}}_kd_{t}"))
    for t in TEACHERS:
        rows.append(("AID+KD (ft, default)", t, f"s{{s}}_aid-ft+kd_{t}"))
    for m in ("dkd", "dist", "ctkd"):
        rows.append((m.upper(), LARGEST, f"s{{s}}_{m}_{LARGEST}"))
    rows += [("AID+DKD (ft)", LARGEST, f"s{{s}}_aid-ft+dkd_{LARGEST}"),
             ("AID+DIST (ft)", LARGEST, f"s{{s}}_aid-ft+dist_{LARGEST}"),
             ("TAKD (via " + "cnn_small)", LARGEST, f"s{{s}}_takd_{LARGEST}"),
             ("born-again KD", LARGEST, f"s{{s}}_ban_{LARGEST}")]
    for var in VARIANTS:
        if var != "ft":
            rows.append((f"AID+KD ({var})", LARGEST, f"s{{s}}_aid-{var}+kd_{LARGEST}"))
    lines += ["## Students", "", "| method | teacher | test last | test sel | seeds | wall s (mean) |", "|---|---|---|---|---|---|"]
    for name, t, fmt in rows:
        last, sel = accs(fmt), accs(fmt, "best_test_acc")
        n = sum(x is not None for x in last)
        if n == 0:
            continue
        walls = [_wall(R[fmt.format(s=s)]) for s in seeds if fmt.format(s=s) in R]
        lines.append(f"| {name} | {t} | {_ms(last)} | {_ms(sel)} | {n} | {statistics.mean(walls):.0f} |")
    lines.append("")

    # adaptation
    lines += ["## Adaptation (teacher side)", "",
              "L_CS / L_IC: the decomposition of KD(teacher || reference student) on the training split, before and "
              "after adaptation. Teacher accuracy on the validation split.", "",
              "| variant | teacher | teacher val before | after | L_CS before | after | L_IC before | after | adapt s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for t in TEACHERS:
        for var in VARIANTS:
            js = [R.get(f"s{s}_adapt-{var}_{t}") for s in seeds]
            js = [j for j in js if j]
            if not js:
                continue
            g = lambda k, js=js: _ms([j.get(k) for j in js])  # noqa: E731
            lines.append(f"| {var} | {t} | {g('teacher_val_acc_before')} | {g('teacher_val_acc_after')} | "
                         f"{g('train_cs_before')} | {g('train_cs_after')} | {g('train_ic_before')} | "
                         f"{g('train_ic_after')} | {g('adapt_wall_s')} |")
    lines.append("")

    # decomposition per teacher
    decomp = _decomposition(root, seeds, R, TEACHERS)
    lines += ["## The decomposition against teacher size", "",
              "KD(teacher || student) split into L_CS + L_IC on the training split (tau = 4, times tau^2), for the "
              "vanilla student and for the student distilled from that teacher (the residual).", "",
              "| teacher | params | vs vanilla: L_CS | L_IC | vs KD student: L_CS | L_IC |", "|---|---|---|---|---|---|"]
    for t in TEACHERS:
        d = decomp.get(t)
        if d:
            lines.append(f"| {t} | {tparams.get(t, 0):,} | {_ms(d['van_cs'])} | {_ms(d['van_ic'])} | "
                         f"{_ms(d['kd_cs'])} | {_ms(d['kd_ic'])} |")
    lines.append("")

    # verdicts
    lines += ["## Verdicts (the claims of docs/aid.md section 7)", "",
              f"Paired over seeds (same seed = same student initialisation and batch order); two-sided t-test, "
              f"level {SIG}. Differences in accuracy points of last-epoch test accuracy.", ""]
    lines += _verdicts(R, seeds, accs, decomp)
    lines.append("")

    # plots
    figs = _plots(fig_dir, R, seeds, accs, decomp, tparams)
    if figs:
        lines += ["## Plots", ""]
        rel = fig_dir.name
        lines += [f"![{f.stem}]({rel}/{f.name})" for f in figs]
        lines.append("")

    # wall time per stage
    kinds: dict[str, list[float]] = {}
    for r in R.values():
        kinds.setdefault(r["kind"], []).append(_wall(r))
    lines += ["## Wall time per stage", "", "| stage | jobs | total min | mean s |", "|---|---|---|---|"]
    for k, v in sorted(kinds.items()):
        lines.append(f"| {k} | {len(v)} | {sum(v) / 60:.1f} | {statistics.mean(v):.0f} |")
    lines.append("")
    out = Path(report_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = Path(report_path).with_suffix(".notes.md")
    if extra.exists():  # hand-written discussion kept beside the generated report
        lines += [extra.read_text()]
    out.write_text("\n".join(lines))
    (out.with_suffix(".json")).write_text(json.dumps({"profile": profile, "results": R, "decomposition": decomp},
                                                     indent=1, default=str))
    return out


def _decomposition(root: Path, seeds, R, teachers) -> dict:
    import torch

    from ..aid.split import split_decomposition_from_logits

    out = {}
    labels = None
    for t in teachers:
        tf = root / "logits" / f"teacher_{t}.pt"
        if not tf.exists():
            continue
        tl = torch.load(tf, weights_only=True)
        d = {"van_cs": [], "van_ic": [], "kd_cs": [], "kd_ic": []}
        for s in seeds:
            for key, job in (("van", f"s{s}_vanilla"), ("kd", f"s{s}_kd_{t}")):
                f = root / "logits" / f"{job}.pt"
                if not f.exists():
                    d[f"{key}_cs"].append(None)
                    d[f"{key}_ic"].append(None)
                    continue
                if labels is None:
                    labels = _train_labels(root)
                dec = split_decomposition_from_logits(tl, torch.load(f, weights_only=True), labels, 4.0, 10)
                d[f"{key}_cs"].append(dec.cs)
                d[f"{key}_ic"].append(dec.ic)
        out[t] = d
    return out


def _train_labels(root: Path):
    from ..config import DataConfig
    from ..data import build_data
    from .fmnist_gap import _data_cfg

    prof = json.loads((root / "profile.json").read_text())["profile"]
    return build_data(DataConfig(**_data_cfg(prof)), device="cpu").train.labels


def _verdicts(R, seeds, accs, decomp) -> list[str]:
    from .fmnist_gap import LAMBDA_SWEEP, LARGEST, TEACHERS

    out = []
    kd = {t: accs(f"s{{s}}_kd_{t}") for t in TEACHERS}
    # 0. the premise of every claim: KD helps this student
    answers = []
    for t in TEACHERS:
        c = paired(kd[t], accs("s{s}_vanilla"))
        if c["n"]:
            v = {"confirmed": "yes", "refuted": "no, significantly below"}.get(_verdict(c), "not significantly")
            answers.append(f"from {t} {_fmt_cmp(c)}: **{v}**")
    if answers:
        out.append("0. **Premise: KD helps this student** (KD vs the vanilla student, by teacher): "
                   + "; ".join(answers) + ". Where KD does not help, the claims are tested outside the regime "
                   "they are about; the AID variants are all measured on " + LARGEST + ".")
    # 1. capacity gap
    if all(all(x is not None for x in kd[t]) for t in TEACHERS):
        means = {t: statistics.mean(kd[t]) for t in TEACHERS}
        best_small = max(TEACHERS[:-1], key=lambda t: means[t])
        c = paired(kd[LARGEST], kd[best_small])
        # the claim predicts no gain: a significant gain refutes it, a significant loss confirms it
        v = {"confirmed": "refuted", "refuted": "confirmed"}.get(_verdict(c), "not significant")
        out.append(f"1. **Capacity gap** (KD from {LARGEST} vs the best smaller teacher, {best_small}): "
                   f"{_fmt_cmp(c)}; KD means by teacher: " + ", ".join(f"{t} {means[t]:.2f}" for t in TEACHERS)
                   + f". Verdict: **{v}** (the claim predicts that the largest teacher gives no better student).")
    # 2. residual components
    if all(t in decomp and all(x is not None for x in decomp[t]["kd_ic"]) for t in (TEACHERS[0], LARGEST)):
        dic = [a - b for a, b in zip(decomp[LARGEST]["kd_ic"], decomp[TEACHERS[0]]["kd_ic"])]
        dcs = [a - b for a, b in zip(decomp[LARGEST]["kd_cs"], decomp[TEACHERS[0]]["kd_cs"])]
        c = paired(dic, dcs)
        out.append(f"2. **Inner-class part grows more** (residual vs the KD student, {TEACHERS[0]} -> {LARGEST}): "
                   f"growth of L_IC {statistics.mean(dic):+.3f}, of L_CS {statistics.mean(dcs):+.3f}; "
                   f"difference {_fmt_cmp(c)}. Verdict: **{_verdict(c)}**.")
    # 3. AID + KD beats KD, most for the largest gap
    gains = {t: paired(accs(f"s{{s}}_aid-ft+kd_{t}"), kd[t]) for t in TEACHERS}
    if gains[LARGEST]["n"]:
        g_l = gains[LARGEST]
        txt = ", ".join(f"{t} {_fmt_cmp(gains[t])}" for t in TEACHERS if gains[t]["n"])
        v = _verdict(g_l)
        largest_is_max = all(g_l["mean"] >= gains[t]["mean"] for t in TEACHERS if gains[t]["n"])
        if all(gains[t]["mean"] <= 0 for t in TEACHERS if gains[t]["n"]):
            shape = "no teacher shows a gain (every mean difference is negative)"
        else:
            shape = f"the gain is {'largest' if largest_is_max else 'not largest'} for the largest gap"
        out.append(f"3. **AID+KD beats KD** (default fine-tuning; gain by teacher: {txt}). Verdict for the largest "
                   f"teacher: **{v}**; {shape}.")
    # 4. degree of adaptation
    vals = {lam: accs(f"s{{s}}_aid-{v}+kd_{LARGEST}") for lam, v in LAMBDA_SWEEP}
    have = {lam: v for lam, v in vals.items() if all(x is not None for x in v)}
    if len(have) >= 3:
        means = {lam: statistics.mean(v) for lam, v in have.items()}
        best = max(means, key=means.get)
        top = max(have)
        c = paired(have[best], have[top]) if best != top else {"n": 0, "mean": 0, "std": float("nan"), "p": None}
        c_none = paired(have[best], kd[LARGEST])  # the best degree against no adaptation (plain KD)
        too_much_hurts = c["n"] > 0 and _verdict(c) == "confirmed"
        beats_none = _verdict(c_none) == "confirmed"
        if best == top:
            v = "refuted (the strongest adaptation is the best)"
        elif too_much_hurts and beats_none:
            v = "confirmed"
        elif too_much_hurts:
            v = "partly: too much adaptation hurts, but no degree tried beats no adaptation (plain KD)"
        else:
            v = "not significant"
        out.append(f"4. **Moderate adaptation is best** (lambda_ic sweep, AID+KD from {LARGEST}: "
                   + ", ".join(f"{lam}: {means[lam]:.2f}" for lam in sorted(means))
                   + f"; best {best} vs strongest {top}: {_fmt_cmp(c) if c['n'] else 'same'}; best vs plain KD: "
                   + f"{_fmt_cmp(c_none)}). Verdict: **{v}**.")
    else:
        out.append(f"4. **Moderate adaptation is best**: not measured (the lambda_ic sweep needs at least 3 values; "
                   f"this profile ran {len(have)}).")
    # 5. composes with DKD and DIST
    for m in ("dkd", "dist"):
        c = paired(accs(f"s{{s}}_aid-ft+{m}_{LARGEST}"), accs(f"s{{s}}_{m}_{LARGEST}"))
        if c["n"]:
            out.append(f"5. **AID+{m.upper()} > {m.upper()}** ({LARGEST}): {_fmt_cmp(c)}. Verdict: **{_verdict(c)}**.")
    # 6. vs TAKD and born-again
    aid = accs(f"s{{s}}_aid-ft+kd_{LARGEST}")
    cost = _costs(R, seeds)
    for name, fmt in (("TAKD", "s{s}_takd_" + LARGEST), ("born-again KD", "s{s}_ban_" + LARGEST)):
        c = paired(aid, accs(fmt))
        if c["n"]:
            v = _verdict(c)
            if name == "TAKD":
                acc_ok = v != "refuted"
                cheaper = cost is not None and cost["aid"] < cost["takd"]
                v = ("confirmed" if acc_ok and cheaper else
                     "refuted on cost" if acc_ok else "refuted on accuracy" if cheaper else "refuted")
                v += f" (accuracy: {_verdict(c)}; cost: AID {'cheaper' if cheaper else 'dearer'})"
            out.append(f"6. **AID+KD vs {name}** ({LARGEST}): {_fmt_cmp(c)}. Verdict: **{v}**.")
    if cost:
        out.append(f"   Cost beyond the KD student it reuses: AID adaptation {cost['aid']:.0f} s + distillation; "
                   f"TAKD assistant {cost['takd']:.0f} s + distillation (mean wall s per seed, on a shared machine).")
    # 7. teacher accuracy kept
    ft = [R[f"s{s}_adapt-ft_{LARGEST}"] for s in seeds if f"s{s}_adapt-ft_{LARGEST}" in R]
    drops = [r["teacher_val_acc_before"] - r["teacher_val_acc_after"] for r in ft]
    if drops:
        tol = ft[0]["params"]["acc_tolerance"]
        over = sum(d > tol for d in drops)
        v = ("confirmed" if over == 0 else "refuted" if over == len(drops) else
             f"borderline: {over} of {len(drops)} seeds past the tolerance, mean drop {statistics.mean(drops):.2f}")
        out.append(f"7. **The adapted teacher keeps its accuracy** (default fine-tuning, {LARGEST}, val drop per seed: "
                   + ", ".join(f"{d:+.2f}" for d in drops) + f"; tolerance {tol}). Verdict: **{v}**.")
    # a control: where the entropy bisection leaves the teacher as it is, the projection is KD up to rounding
    aa = f"s{{s}}_aid-proj_tempered+kd_{LARGEST}"
    betas = [(R.get(f"s{s}_adapt-proj_tempered_{LARGEST}") or {}).get("beta") for s in seeds]
    c = paired(accs(aa), kd[LARGEST])
    if c["n"] >= 2 and all(b is not None and b >= 0.999 for b in betas):
        out.append("")
        out.append(f"**Noise floor (an A/A control).** The entropy bisection gave beta = 1 on every seed: the teacher "
                   "is already as smooth as the reference, the tempered target is the teacher's own distribution, and "
                   f"AID+KD (proj_tempered) is plain KD from {LARGEST} up to float rounding. Its paired difference "
                   f"from KD, {_fmt_cmp(c)}, is how far two runs with the same targets drift apart. Differences of "
                   "that size are noise whatever their p-value, and with some twenty comparisons a few p < 0.05 are "
                   "expected by chance alone.")
    return out


def _costs(R, seeds) -> dict | None:
    from .fmnist_gap import LARGEST

    a = [_wall(R[f"s{s}_adapt-ft_{LARGEST}"]) for s in seeds if f"s{s}_adapt-ft_{LARGEST}" in R]
    t = [_wall(R[f"s{s}_takd-assistant_{LARGEST}"]) for s in seeds if f"s{s}_takd-assistant_{LARGEST}" in R]
    if a and t:
        return {"aid": statistics.mean(a), "takd": statistics.mean(t)}
    return None


def _plots(fig_dir: Path, R, seeds, accs, decomp, tparams) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fmnist_gap import LAMBDA_SWEEP, LARGEST, TEACHERS

    figs = []
    ts = [t for t in TEACHERS if t in tparams]
    if not ts:
        return figs

    def mean_std(v):
        v = [x for x in v if x is not None]
        if not v:
            return float("nan"), 0.0
        return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [tparams[t] for t in ts]
    for label, fmt in (("KD", "s{{s}}_kd_{t}"), ("AID+KD", "s{{s}}_aid-ft+kd_{t}")):
        ms = [mean_std(accs(fmt.format(t=t))) for t in ts]
        ax.errorbar(xs, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3, label=label)
    van = mean_std(accs("s{s}_vanilla"))
    ax.axhline(van[0], color="gray", ls="--", label="vanilla student")
    ax.set_xscale("log")
    ax.set_xlabel("teacher parameters")
    ax.set_ylabel("student test acc (%, last epoch)")
    ax.legend()
    fig.tight_layout()
    figs.append(fig_dir / "student_acc_vs_teacher.png")
    fig.savefig(figs[-1], dpi=110)
    plt.close(fig)

    if decomp:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        dts = [t for t in ts if t in decomp]
        for key, label, style in (("kd_cs", "L_CS (vs KD student)", "o-"), ("kd_ic", "L_IC (vs KD student)", "s-"),
                                  ("van_cs", "L_CS (vs vanilla)", "o--"), ("van_ic", "L_IC (vs vanilla)", "s--")):
            ms = [mean_std(decomp[t][key]) for t in dts]
            ax.errorbar([tparams[t] for t in dts], [m for m, _ in ms], yerr=[s for _, s in ms], fmt=style,
                        capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("teacher parameters")
        ax.set_ylabel("loss component (x tau^2)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        figs.append(fig_dir / "components_vs_teacher.png")
        fig.savefig(figs[-1], dpi=110)
        plt.close(fig)

    pts = [(lam, mean_std(accs(f"s{{s}}_aid-{v}+kd_{LARGEST}"))) for lam, v in LAMBDA_SWEEP]
    pts = [(lam, m) for lam, m in pts if not math.isnan(m[0])]
    if len(pts) >= 2:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.errorbar([lam for lam, _ in pts], [m[0] for _, m in pts], yerr=[m[1] for _, m in pts], marker="o",
                    capsize=3, label="AID+KD")
        kd = mean_std(accs(f"s{{s}}_kd_{LARGEST}"))
        ax.axhline(kd[0], color="C1", ls="--", label="KD")
        ax.set_xscale("log")
        ax.set_xlabel("lambda_ic")
        ax.set_ylabel("student test acc (%, last epoch)")
        ax.set_title(f"degree of adaptation ({LARGEST})")
        ax.legend()
        fig.tight_layout()
        figs.append(fig_dir / "lambda_sweep.png")
        fig.savefig(figs[-1], dpi=110)
        plt.close(fig)
    return figs
