"""The study's report: tables (mean +- std over seeds), the verdict records in words, plots, and a JSON copy.

:func:`records` turns the finished stages into one plain record per job (the JSON the report is written from);
:func:`write_report` writes ``REPORT.md``, ``REPORT.json`` and ``REPORT/<plot>.png``; a hand-written
``REPORT.notes.md`` beside it is appended.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from aidkd.engine import read_summary
from aidkd.files.rundir import check_report_file, own_folder, write_report_json, write_report_text

from .plan import (
    BETA_SWEEP,
    LAMBDA_SWEEP,
    PROFILES,
    VARIANTS,
    assistant,
    data_config,
    device,
    ladder,
    live_teachers,
    Arm,
    JobId,
)
from .verdicts import SIG, corrected, fmt_cmp, judge, noise_goal


_DATASETS = {"fashion_mnist": "Fashion-MNIST 28x28", "digits": "scikit-learn's digits 8x8"}


# -------------------------------------------------------------------------------------------------- the records
def _train_labels(profile: str):
    from aidkd.config import DataConfig
    from aidkd.data import build_data

    return build_data(DataConfig(**data_config(profile)), device="cpu").train.labels


def _logits(res):
    """A logits stage's outputs on the unaugmented training views, (N, C)."""
    from aidkd.teachers import identity_logits

    return identity_logits(res.checkpoint)


def _test_hits(R: dict, job_id: JobId, weights: str, test):
    """Which test images the student of ``job_id`` gets right (bool, N), from its last checkpoint: the reported
    weights (``model``) or, for a run with an average, its training weights (``raw``)."""
    import torch

    from aidkd.files.checkpoint import load_checkpoint
    from aidkd.stages.artifacts import load_model

    res = R.get(job_id)
    if res is None or res.dir is None:
        return None
    last = res.dir / "checkpoints" / "last.pt"
    model = load_model(last, test.spec).eval()
    if weights == "raw":
        state = load_checkpoint(last)["method_state"]
        model.load_state_dict({k[len("student."):]: v for k, v in state.items() if k.startswith("student.")})
    hits = []
    with torch.no_grad():
        for batch in test.test:
            hits.append(model(batch.images).argmax(1) == batch.labels)
    return torch.cat(hits)


def churn_lines(profile: str, R: dict) -> list[str]:
    """Why the floor is where it is: the share of test images on which the two runs of each A/A pair disagree
    (one right, the other wrong), and the std of the paired difference that this churn alone gives if each
    image's outcome is an independent draw, 100 sqrt(churn / N), beside the measured one."""
    from aidkd.config import DataConfig
    from aidkd.data import build_data

    p, teachers = PROFILES[profile], ladder(profile)
    largest = teachers[-1]
    data = build_data(DataConfig(**data_config(profile)), device="cpu")
    out = []
    # the reported weights (the average, where the profile keeps one) and the training weights
    kinds = [("model", "average"), ("raw", "training weights")] if p.get("ema_decay") else [("model", "training weights")]
    for weights, label in kinds:
        for t in (teachers[0], largest):
            churn, diffs = [], []
            for s in p["seeds"]:
                a = _test_hits(R, JobId("kd", s, t), weights, data)
                b = _test_hits(R, JobId("kd-aa", s, t), weights, data)
                if a is not None and b is not None:
                    churn.append(float((a != b).double().mean()))
                    diffs.append(100.0 * float(b.double().mean() - a.double().mean()))
            if len(churn) >= 2:
                n, c = data.spec.num_test, statistics.mean(churn)
                out.append(f"| {t} | {label} | {len(churn)} | "
                           f"{100 * c:.2f}% | {100 * math.sqrt(c / n):.2f} | {statistics.stdev(diffs):.2f} |")
    if not out:
        return []
    return ["### Where the floor comes from: prediction churn", "",
            "The two runs of an A/A pair disagree (one right, the other wrong) on a share of the test images, the "
            "churn. If each image's outcome were an independent draw, the paired difference of accuracy would have "
            "a std of 100 sqrt(churn / N) points (N test images) from the churn alone; the measured std beside it. "
            "Where the two agree, the floor is set by how many images a student gets right by chance, and only a "
            "student whose predictions are more stable lowers it.", "",
            "| A/A from | weights | seeds | churn | std implied by the churn | measured std |",
            "|---|---|---|---|---|---|"] + out + [""]


def _split(t_logits, s_logits, labels, tau: float = 4.0):
    from aidkd.aid.split import split_decomposition_from_logits

    return split_decomposition_from_logits(teacher_logits=t_logits, student_logits=s_logits, labels=labels,
                                           temperature=tau, num_classes=t_logits.shape[1])


def _decompose(t_logits, s_logits, labels, tau: float = 4.0) -> tuple[float, float]:
    d = _split(t_logits, s_logits, labels, tau)
    return d.cs, d.ic


def _summary(res) -> dict:
    """A train stage's recorded summary, with the precision read from the run's own summary where the stage's
    record does not hold it (stages recorded before it did)."""
    summary = dict(res.result["summary"])
    if summary.get("precision") is None and res.dir is not None:
        summary["precision"] = (read_summary(res.dir) or {}).get("precision")
    return summary


def records(profile: str, R: dict) -> tuple[dict, dict]:
    """(job id -> record, decomposition per teacher) from the finished stages ``R``.

    A training record: ``{"kind": teacher | student, "summary", "params", "job_wall_s"}``. An adaptation record:
    the teacher's validation accuracy before/after, L_CS / L_IC against the reference on the training split
    before/after, beta, the AID parameters and the adapt stage's report."""
    from aidkd.teachers import TargetTeacher

    labels = None
    teachers = ladder(profile)
    out: dict[str, dict] = {}
    for job, res in R.items():
        if job.logits:
            continue
        if res.kind in ("train", "given"):  # a shipped teacher is given, not trained here
            lg = R.get(job.outputs)
            out[str(job)] = {"kind": "teacher" if job.what == "teacher" else "student",
                             "summary": _summary(res), "params": lg.result["num_params"] if lg else None,
                             "job_wall_s": res.wall_time_s, "source": "shipped" if res.kind == "given" else "trained"}
            continue
        rep = res.result["report"]
        var = job.what[len("adapt-"):]
        ref = job.of("kd") if VARIANTS[var].reference == "distilled" else JobId("vanilla", job.seed)
        rec = {"kind": "adapt", "variant": var, "params": rep["params"], "beta": rep.get("beta"), "report": rep,
               "job_wall_s": res.wall_time_s, "adapt_wall_s": rep.get("wall_time_s")}
        if res.result["teacher_kind"] == "targets":
            rec["teacher_val_acc_before"] = rec["teacher_val_acc_after"] = rep["teacher_val_acc"]
            # the projection serves the training split: how often its targets' top class is still the label
            rec["targets_train_acc_before"], rec["targets_train_acc_after"] = (rep["teacher_acc_before"],
                                                                               rep["teacher_acc_after"])
            target = TargetTeacher.load(res.checkpoint)
            after = target.temperature * target.log_targets
        else:
            rec["teacher_val_acc_before"], rec["teacher_val_acc_after"] = rep["teacher_acc_before"], rep["teacher_acc_after"]
            rec["val_cs_before"], rec["val_ic_before"] = rep["cs_before"], rep["ic_before"]
            rec["val_cs_after"], rec["val_ic_after"] = rep["cs_after"], rep["ic_after"]
            after = _logits(R[job.outputs]) if job.outputs in R else None
        t_lg = R.get(JobId("teacher", teacher=job.teacher, ckpt=job.ckpt, logits=True))
        r_lg = R.get(ref.outputs)
        if t_lg and r_lg and after is not None:
            labels = _train_labels(profile) if labels is None else labels
            r_logits = _logits(r_lg)
            d0, d1 = _split(_logits(t_lg), r_logits, labels), _split(after, r_logits, labels)
            rec["train_cs_before"], rec["train_ic_before"] = d0.cs, d0.ic
            rec["train_cs_after"], rec["train_ic_after"] = d1.cs, d1.ic
            # the inner-class information of the teacher before / after and of the reference (tau 4, training)
            rec["info_before"], rec["info_after"], rec["reference_info"] = (d0.teacher_info, d1.teacher_info,
                                                                            d0.student_info)
        out[str(job)] = rec
    decomp = {}
    for t in teachers:
        t_lg = R.get(JobId("teacher", teacher=t, logits=True))
        if not t_lg:
            continue
        d = {"van_cs": [], "van_ic": [], "kd_cs": [], "kd_ic": []}
        for s in PROFILES[profile]["seeds"]:
            for key, job in (("van", JobId("vanilla", s)), ("kd", JobId("kd", s, t))):
                cs = ic = None
                if job.outputs in R:
                    labels = _train_labels(profile) if labels is None else labels
                    cs, ic = _decompose(_logits(t_lg), _logits(R[job.outputs]), labels)
                d[f"{key}_cs"].append(cs)
                d[f"{key}_ic"].append(ic)
        decomp[t] = d
    return out, decomp


# ----------------------------------------------------------------------------------------------------- wording
def _ms(xs: list) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} +- {statistics.stdev(xs):.2f}"


def _wall(r: dict) -> float:
    """A job's wall time; a training run interrupted and resumed counts the time of all its sessions."""
    return max(r["job_wall_s"] or 0.0, (r.get("summary") or {}).get("wall_time_s") or 0.0)


def verdict_lines(recs: list[dict], teachers: list[str]) -> list[str]:
    """The verdict records of a study of the teacher ladder ``teachers`` in words (one numbered line each)."""
    largest = teachers[-1]
    out = []
    for r in recs:
        c, v, k = r["comparison"], r["verdict"], r["claim"]
        if k == "0":
            parts = [f"from {t} {fmt_cmp(x)}: **{r['answers'][t]}**" for t, x in c["kd_minus_vanilla"].items()]
            out.append(f"0. **{r['title']}** (KD vs the vanilla student, by teacher): " + "; ".join(parts)
                       + ". Where KD does not help, the claims are tested outside the regime they are about; the AID "
                       f"variants are all measured on {largest}.")
        elif k == "1":
            out.append(f"1. **{r['title']}** (KD from {largest} vs the best smaller teacher, {c['best_smaller']}): "
                       f"{fmt_cmp(c['largest_minus_best_smaller'])}; KD means by teacher: "
                       + ", ".join(f"{t} {m:.2f}" for t, m in c["kd_means"].items())
                       + f". Verdict: **{v}** (the claim predicts that the largest teacher gives no better student).")
        elif k == "2":
            out.append(f"2. **{r['title']}** (residual vs the KD student, {teachers[0]} -> {largest}): growth of L_IC "
                       f"{c['growth_ic']:+.3f}, of L_CS {c['growth_cs']:+.3f}; difference {fmt_cmp(c['ic_minus_cs'])}. "
                       f"Verdict: **{v}**.")
        elif k == "3":
            shape = {"no gain": "no teacher shows a gain (every mean difference is negative)",
                     "largest for the largest gap": "the gain is largest for the largest gap",
                     "not largest for the largest gap": "the gain is not largest for the largest gap"}[r["shape"]]
            txt = ", ".join(f"{t} {fmt_cmp(g)}" for t, g in c["gain_by_teacher"].items())
            out.append(f"3. **{r['title']}** (default fine-tuning; gain by teacher: {txt}). Verdict for the largest "
                       f"teacher: **{v}**; {shape}.")
        elif k == "4" and v == "not measured":
            out.append(f"4. **{r['title']}**: not measured (the lambda_ic sweep needs at least 3 values; this profile "
                       f"ran {c['lambda_values']}).")
        elif k == "4":
            words = {"refuted": "refuted (the strongest adaptation is the best)",
                     "partly": "partly: too much adaptation hurts, but no degree tried beats no adaptation (plain KD)"}
            bs = c["best_minus_strongest"]
            out.append(f"4. **{r['title']}** (lambda_ic sweep, AID+KD from {largest}: "
                       + ", ".join(f"{lam}: {m:.2f}" for lam, m in sorted(c["means"].items()))
                       + f"; best {c['best']} vs strongest {c['strongest']}: {fmt_cmp(bs) if bs else 'same'}; best vs "
                       f"plain KD: {fmt_cmp(c['best_minus_kd'])}). Verdict: **{words.get(v, v)}**.")
        elif k == "5":
            out.append(f"5. **{r['title']}** ({largest}): {fmt_cmp(c['aid_minus_method'])}. Verdict: **{v}**.")
        elif k == "6":
            if "accuracy" in r:
                v = f"{v} (accuracy: {r['accuracy']}; cost: AID {r['cost']})"
            out.append(f"6. **{r['title']}** ({largest}): {fmt_cmp(c['aid_minus_other'])}. Verdict: **{v}**.")
            if c.get("cost_s"):
                out.append(f"   Cost beyond the KD student it reuses: AID adaptation {c['cost_s']['aid']:.0f} s + "
                           f"distillation; TAKD assistant {c['cost_s']['takd']:.0f} s + distillation (mean wall s per "
                           "seed, on a shared machine).")
        elif k == "7":
            v = v if v != "borderline" else (f"borderline: {c['seeds_over']} of {len(c['val_drops'])} seeds past the "
                                             f"tolerance, mean drop {c['mean_drop']:.2f}")
            out.append(f"7. **{r['title']}** (default fine-tuning, {largest}, val drop per seed: "
                       + ", ".join(f"{d:+.2f}" for d in c["val_drops"]) + f"; tolerance {c['tolerance']}). "
                       f"Verdict: **{v}**.")
        elif k == "C":
            want = "match or beat" if r["part"] == "cs" else "fall behind"
            txt = ", ".join(f"{t} {fmt_cmp(x)}" for t, x in c[f"kd_{r['part']}_minus_kd"].items())
            out.append(f"C. **{r['title']}** (the decomposition's causal test: from {largest} it should {want} KD; "
                       f"by teacher: {txt}). Verdict for {largest}: **{v}**.")
        elif k == "A/A" and "teacher" in r:
            out.append(f"A/A. **{r['title']}** (KD computed as L_CS + (1 + 1e-6) L_IC, the same objective up to float "
                       f"rounding, minus KD, same seeds): {fmt_cmp(c['kd_aa_minus_kd'])}.")
        elif k == "A/A":
            out += ["", f"**{r['title']}.** The entropy bisection gave beta = 1 on every seed: the teacher is already as "
                    "smooth as the reference, the tempered target is the teacher's own distribution, and AID+KD "
                    f"(proj_tempered) is plain KD from {largest} up to float rounding. Its paired difference from KD, "
                    f"{fmt_cmp(c['same_targets_minus_kd'])}, is how far two runs with the same targets drift apart. "
                    "Differences of that size are noise whatever their p-value, and with some twenty comparisons a "
                    "few p < 0.05 are expected by chance alone."]
    return out


def noise_floor_lines(recs: list[dict], teachers: list[str]) -> list[str]:
    """The report's first section: the A/A controls' std, what it lets the instrument detect, and the goal."""
    goal = noise_goal(recs, teachers)
    aa = [r for r in recs if r["claim"] == "A/A"]
    if not aa:
        return ["## Noise floor", "", "No A/A control finished: the report cannot say how large a difference is "
                "noise.", ""]
    out = ["## Noise floor", "", "Two runs with the same targets and the same seeds differ by float rounding only; "
           "the std of their paired difference is the instrument's noise floor. MDE: the smallest true difference "
           f"a paired t-test at {SIG} detects with 80% power at that std and number of seeds.", ""]
    out += ["| control | n | std of the paired difference | mean | 95% CI | MDE |", "|---|---|---|---|---|---|"]
    for r in aa:
        c = next(iter(r["comparison"].values()))
        out.append(f"| {r['title']} | {c['n']} | **{c['std']:.2f}** | {c['mean']:+.2f} | [{c['ci'][0]:+.2f}, "
                   f"{c['ci'][1]:+.2f}] | {c['mde']:.2f} |")
    out.append("")
    if goal:
        largest = {None: "not measured", True: "yes (not the capacity-gap regime)", False: "no"}[goal["largest_best"]]
        out.append(f"Goal: A/A std at most {goal['goal']} (here {goal['floor']:.2f}); KD at least 1 point above the "
                   f"vanilla student at p < 0.01 from two teachers (here: {', '.join(goal['kd_gain_teachers']) or 'none'});"
                   f" the largest teacher the best: {largest}. **{'Reached' if goal['reached'] else 'Not reached'}.**")
        out.append("")
    return out


def fmt_premise(recs: list[dict]) -> str:
    """The premise (KD against the vanilla student, by teacher) in one line."""
    premise = next((r["comparison"]["kd_minus_vanilla"] for r in recs if r["claim"] == "0"), {})
    return "KD minus vanilla: " + ("; ".join(f"from {t} {fmt_cmp(c)}" for t, c in premise.items()) or "not measured")


def comparison_table(recs: list[dict]) -> list[str]:
    """Every claim comparison with its CI, MDE, p and Holm-corrected p (the A/A controls are not in the family)."""
    rows = corrected(recs)
    if not rows:
        return []
    out = [f"### All comparisons, Holm-corrected ({len(rows)} in the family, level {SIG})", "",
           "Accuracy points, except claim 2 (loss units, x tau^2).", "",
           "| comparison | n | mean +- std | 95% CI | MDE | p | Holm p | survives |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['label']} | {r['n']} | {r['mean']:+.2f} +- {r['std']:.2f} | [{r['ci'][0]:+.2f}, "
                   f"{r['ci'][1]:+.2f}] | {r['mde']:.2f} | {r['p']:.3f} | {r['p_holm']:.3f} | "
                   f"{'yes' if r['survives'] else 'no'} |")
    out.append("")
    return out


# ------------------------------------------------------------------------------------------------------ report
def precision_clause(recs: dict) -> str:
    """Which precision trained the teachers and the students, from their summaries (``train.amp=auto`` is bf16
    where the hardware does bf16 natively: aidkd.engine.precision); "not recorded" where a run's summary has none."""
    def used(kind: str) -> str:
        names = sorted({r["summary"].get("precision") or "not recorded" for r in recs.values()
                        if r.get("kind") == kind and "summary" in r})
        return " and ".join(names) or "-"

    return f" (teachers trained in {used('teacher')}, students in {used('student')})"


def convergence_lines(recs: dict, p: dict) -> list[str]:
    """How many student runs selected their last evaluated epoch: a student still improving at the end of its
    schedule is read mid-curve."""
    runs = [r["summary"] for j, r in recs.items() if JobId.parse(j).what != "teacher" and "summary" in r
            and r["summary"].get("best_epoch") is not None]
    if not runs:
        return []
    last = sum(s["best_epoch"] == s["epochs"] for s in runs)
    every = p.get("eval_every", 1)
    return ["## Convergence", "",
            f"The epoch selected on the validation split is the last one in {last} of {len(runs)} student runs "
            f"(evaluated every {every} epoch{'s' if every > 1 else ''} of {p['student_epochs']}; the cosine schedule "
            "ends at learning rate 0, so a converged student plateaus and its selected epoch falls anywhere on the "
            "plateau).", ""]


def write_report(profile: str, root: Path, R: dict, report_path: Path) -> Path:
    from .plan import plan

    recs, decomp = records(profile, R)
    seeds, teachers = PROFILES[profile]["seeds"], ladder(profile)
    largest = teachers[-1]
    n_jobs = sum(len(w) for w in plan(profile))
    fig_dir = report_path.parent / report_path.stem
    for p in (report_path, report_path.with_suffix(".json")):
        check_report_file(p)
    own_folder(fig_dir, "--report", "report figures", suffixes=(".png",))

    def acc(job: str, key: str = "last_test_acc"):
        r = recs.get(job)
        return None if r is None or "summary" not in r else r["summary"].get(key)

    def accs(a: Arm, key: str = "last_test_acc") -> list:
        return [acc(str(a.job(s)), key) for s in seeds]

    p = PROFILES[profile]
    lines = [f"# Fashion-MNIST capacity-gap benchmark ({profile} profile)", "",
             f"Produced by `python -m studies.fmnist_gap --profile {profile} --report {report_path}` (stages under "
             f"`{root}`); {len(recs)} of {n_jobs} jobs finished.", "",
             f"Setting: {_DATASETS.get(p.get('dataset', 'fashion_mnist'))}, 10% of train held out for validation "
             "(fixed split), "
             + (f"a class-stratified training subset of {p['train_subset']:,} images" if p["train_subset"] else
                "the whole training split")
             + (" for the students (the teachers: the whole training split)"
                if "teacher_subset" in p and p["teacher_subset"] != p["train_subset"] and not p["teacher_subset"]
                else "") + ", "
             + ("students augmented with the dataset's crop + flip, each distilled from its teacher "
                + ("run on the view it sees" if live_teachers(profile) else "'s stored outputs on the view it sees")
                if p.get("augment") else "no augmentation (teacher outputs stored)")
             + (f"; the students' reported weights are an exponential moving average (decay {p['ema_decay']}) of "
                "their training weights, whose own accuracy is reported beside it" if p.get("ema_decay") else "")
             + f", SGD momentum 0.9, lr 0.05 cosine, batch {p.get('batch_size', 128)}, on "
             + ("the CPU" if device(profile) == "cpu" else "a GPU where there is one")
             + precision_clause(recs)
             + f"; teachers {p['teacher_epochs']} "
             f"epochs, students {p['student_epochs']} epochs; seeds {seeds}. Student `{p['student']}`; teachers "
             f"{', '.join('`' + t + '`' for t in teachers)}. Accuracies are test top-1 (%), mean +- std over seeds: "
             "**last** = last epoch, **sel** = the epoch chosen on the validation split.", ""]

    verdicts = judge(seeds, teachers, acc, lambda j: recs.get(j),
                     decomp, lambda j: _wall(recs[j]) if j in recs else None)
    lines += noise_floor_lines(verdicts, teachers)
    lines += churn_lines(profile, R)
    if p.get("ema_decay"):  # the same runs, their training weights instead of the average
        raw = judge(seeds, teachers, lambda j: acc(j, "last_test_raw_acc"), lambda j: recs.get(j), decomp,
                    lambda j: _wall(recs[j]) if j in recs else None)
        floor = noise_floor_lines(raw, teachers)
        floor[0] = "## Noise floor of the training weights (the same runs, without the average)"
        lines += floor + [fmt_premise(raw), ""]
    lines += ["## Teachers", "", "| teacher | params | val (sel) | test last | test sel | wall s |", "|---|---|---|---|---|---|"]
    tparams = {}
    for t in teachers:
        r = recs.get(str(JobId("teacher", teacher=t)))
        if r and r["params"] is not None:
            s = r["summary"]
            tparams[t] = r["params"]
            lines.append(f"| {t} | {r['params']:,} | {s['best_acc']:.2f} | {s['last_test_acc']:.2f} | "
                         f"{s['best_test_acc']:.2f} | {s['wall_time_s']:.0f} |")
    lines.append("")
    lines += convergence_lines(recs, p)

    rows = [("vanilla", "-", Arm("vanilla"))]
    rows += [("KD", t, Arm("kd", t)) for t in teachers]
    rows += [("AID+KD (ft, default)", t, Arm("aid-ft+kd", t)) for t in teachers]
    rows += [(m.upper(), largest, Arm(m, largest)) for m in ("dkd", "dist", "ctkd")]
    rows += [("AID+DKD (ft)", largest, Arm("aid-ft+dkd", largest)),
             ("AID+DIST (ft)", largest, Arm("aid-ft+dist", largest)),
             (f"TAKD (via {assistant(profile)})", largest, Arm("takd", largest)),
             ("born-again KD", largest, Arm("ban", largest))]
    rows += [(f"AID+KD ({v})", largest, Arm(f"aid-{v}+kd", largest)) for v in VARIANTS if v != "ft"]
    rows += [(name, t, Arm(what, t)) for what, name in (("kd-cs", "KD, L_CS only"), ("kd-ic", "KD, L_IC only"),
                                                                  ("kd-aa", "KD via L_CS + L_IC (A/A)"))
             for t in teachers]
    lines += ["## Students", "", "| method | teacher | test last | test sel | seeds | wall s (mean) |", "|---|---|---|---|---|---|"]
    for name, t, a in rows:
        last, sel = accs(a), accs(a, "best_test_acc")
        n = sum(x is not None for x in last)
        if n:
            walls = [_wall(recs[str(a.job(s))]) for s in seeds if str(a.job(s)) in recs]
            lines.append(f"| {name} | {t} | {_ms(last)} | {_ms(sel)} | {n} | {statistics.mean(walls):.0f} |")
    lines.append("")

    lines += ["## Adaptation (teacher side)", "",
              "L_CS / L_IC: the decomposition of KD(teacher || reference student) on the training split, before and "
              "after adaptation; I_T: the teacher's inner-class information, tau^2 mean KL(p_i || m_{y_i}) (tau 4, "
              "training split). Teacher accuracy on the validation split; a projection changes the teacher's outputs "
              "on the training split only, so its rows also give the top-1 of its targets there (the label still the "
              "targets' top class), before and after.", "",
              "| variant | teacher | teacher val before | after | projection train top-1 before | after | L_CS before | "
              "after | L_IC before | after | I_T before | after | adapt s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in teachers:
        for var in VARIANTS:
            js = [recs[str(JobId(f"adapt-{var}", s, t))] for s in seeds if str(JobId(f"adapt-{var}", s, t)) in recs]
            if js:
                cells = [_ms([j.get(k) for j in js]) for k in ("teacher_val_acc_before", "teacher_val_acc_after",
                                                               "targets_train_acc_before", "targets_train_acc_after",
                                                               "train_cs_before", "train_cs_after", "train_ic_before",
                                                               "train_ic_after", "info_before", "info_after",
                                                               "adapt_wall_s")]
                lines.append(f"| {var} | {t} | " + " | ".join(cells) + " |")
    lines.append("")

    lines += ["## The decomposition against teacher size", "",
              "KD(teacher || student) split into L_CS + L_IC on the training split (tau = 4, times tau^2), for the "
              "vanilla student and for the student distilled from that teacher (the residual).", "",
              "| teacher | params | vs vanilla: L_CS | L_IC | vs KD student: L_CS | L_IC |", "|---|---|---|---|---|---|"]
    for t in teachers:
        d = decomp.get(t)
        if d:
            lines.append(f"| {t} | {tparams.get(t, 0):,} | {_ms(d['van_cs'])} | {_ms(d['van_ic'])} | "
                         f"{_ms(d['kd_cs'])} | {_ms(d['kd_ic'])} |")
    lines.append("")

    lines += ["## Verdicts (the claims of docs/aid.md section 7)", "",
              f"Paired over seeds (same seed = same student initialisation and batch order); two-sided t-test, "
              f"level {SIG}. Differences in accuracy points of last-epoch test accuracy.", ""]
    lines += verdict_lines(verdicts, teachers)
    lines.append("")
    lines += comparison_table(verdicts)

    figs = _plots(fig_dir, seeds, accs, decomp, tparams, teachers)
    fig = _info_plot(fig_dir, seeds, accs, recs, largest)
    figs += [fig] if fig else []
    if figs:
        lines += ["## Plots", ""] + [f"![{f.stem}]({fig_dir.name}/{f.name})" for f in figs] + [""]

    kinds: dict[str, list[float]] = {}
    for r in recs.values():
        kinds.setdefault(r["kind"], []).append(_wall(r))
    lines += ["## Wall time per stage", "", "| stage | jobs | total min | mean s |", "|---|---|---|---|"]
    for k, v in sorted(kinds.items()):
        lines.append(f"| {k} | {len(v)} | {sum(v) / 60:.1f} | {statistics.mean(v):.0f} |")
    lines.append("")
    notes = report_path.with_suffix(".notes.md")
    if notes.exists():  # hand-written discussion kept beside the generated report
        lines.append(notes.read_text())
    write_report_text(report_path, "\n".join(lines))
    write_report_json(report_path.with_suffix(".json"), {
        "profile": profile, "results": recs, "decomposition": decomp, "verdicts": verdicts,
        "noise_goal": noise_goal(verdicts, teachers), "holm": corrected(verdicts)})
    return report_path


def _plots(fig_dir: Path, seeds, accs, decomp, tparams, teachers: list[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: list[Path] = []
    largest = teachers[-1]
    ts = [t for t in teachers if t in tparams]
    if not ts:
        return figs

    def mean_std(v):
        v = [x for x in v if x is not None]
        if not v:
            return float("nan"), 0.0
        return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)

    def save(fig, name: str) -> None:
        fig.tight_layout()
        figs.append(fig_dir / name)
        fig.savefig(figs[-1], dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, what in (("KD", "kd"), ("AID+KD", "aid-ft+kd")):
        ms = [mean_std(accs(Arm(what, t))) for t in ts]
        if all(math.isnan(m) for m, _ in ms):  # an arm the profile does not run has no line
            continue
        ax.errorbar([tparams[t] for t in ts], [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3,
                    label=label)
    ax.axhline(mean_std(accs(Arm("vanilla")))[0], color="gray", ls="--", label="vanilla student")
    ax.set_xscale("log")
    ax.set_xlabel("teacher parameters")
    ax.set_ylabel("student test acc (%, last epoch)")
    ax.legend()
    save(fig, "student_acc_vs_teacher.png")

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
        save(fig, "components_vs_teacher.png")

    pts = [(lam, mean_std(accs(Arm(f"aid-{v}+kd", largest)))) for lam, v in LAMBDA_SWEEP]
    pts = [(lam, m) for lam, m in pts if not math.isnan(m[0])]
    if len(pts) >= 2:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.errorbar([lam for lam, _ in pts], [m[0] for _, m in pts], yerr=[m[1] for _, m in pts], marker="o",
                    capsize=3, label="AID+KD")
        ax.axhline(mean_std(accs(Arm("kd", largest)))[0], color="C1", ls="--", label="KD")
        ax.set_xscale("log")
        ax.set_xlabel("lambda_ic")
        ax.set_ylabel("student test acc (%, last epoch)")
        ax.set_title(f"degree of adaptation ({largest})")
        ax.legend()
        save(fig, "lambda_sweep.png")

    # the tempered target's beta, both sides of 1 (beta 1 is the teacher itself: KD)
    kd = mean_std(accs(Arm("kd", largest)))
    pts = [(b, mean_std(accs(Arm(f"aid-{v}+kd", largest)))) for b, v in BETA_SWEEP]
    pts = sorted([(b, m) for b, m in pts if not math.isnan(m[0])] + ([(1.0, kd)] if not math.isnan(kd[0]) else []))
    if len(pts) >= 2:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.errorbar([b for b, _ in pts], [m[0] for _, m in pts], yerr=[m[1] for _, m in pts], marker="o", capsize=3,
                    label="AID+KD, projection to the tempered target (beta 1: KD)")
        ax.set_xscale("log")
        ax.set_xlabel("beta (< 1 smoother, > 1 sharper within-class structure)")
        ax.set_ylabel("student test acc (%, last epoch)")
        ax.set_title(f"tempered target ({largest})")
        ax.legend(fontsize=7)
        save(fig, "beta_sweep.png")
    return figs


def _info_plot(fig_dir: Path, seeds, accs, recs: dict, largest: str) -> Path | None:
    """Student accuracy (AID+KD, and KD from the original teacher) against the teacher's I_T, every variant of
    the largest teacher, the reference students' own I_S marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def mean(xs):
        xs = [x for x in xs if x is not None and not math.isnan(x)]
        return statistics.mean(xs) if xs else None

    pts = []
    for var in VARIANTS:
        ads = [recs.get(str(JobId(f"adapt-{var}", s, largest))) for s in seeds]
        info, acc = mean([a.get("info_after") for a in ads if a]), mean(accs(Arm(f"aid-{var}+kd", largest)))
        if info is not None and acc is not None:
            pts.append((var, info, acc))
    ads = [a for a in (recs.get(str(JobId("adapt-ft", s, largest))) for s in seeds) if a]
    t_info, s_info = mean([a.get("info_before") for a in ads]), mean([a.get("reference_info") for a in ads])
    kd = mean(accs(Arm("kd", largest)))
    if not pts or t_info is None or kd is None:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.scatter([x for _, x, _ in pts], [y for _, _, y in pts], label="AID+KD (variant)")
    for var, x, y in pts:
        ax.annotate(var, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.scatter([t_info], [kd], marker="*", s=120, color="C3", label=f"KD ({largest} as trained)")
    if s_info is not None:
        ax.axvline(s_info, color="gray", ls="--", label="I_S of the KD student (the reference)")
    ax.set_xlabel("teacher's inner-class information I_T (tau 4, x tau^2)")
    ax.set_ylabel("student test acc (%, last epoch)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = fig_dir / "acc_vs_inner_class_information.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
