"""The Fashion-MNIST capacity-gap study (studies/fmnist_gap): its plan, its statistics, its verdict records,
and the whole flow on digits (the `test` profile) through a process pool, rerun without running anything."""
import json
import math
import statistics
from pathlib import Path

import pytest

from aidkd.errors import UserError
from aidkd.stages import StageResult
from studies.fmnist_gap.__main__ import main, run
from studies.fmnist_gap.plan import (
    PROFILES,
    TEACHERS,
    VARIANTS,
    JobId,
    ladder,
    make_job,
    plan,
    teaching,
    variants,
)
from studies.fmnist_gap.verdicts import (
    confidence_interval,
    corrected,
    holm,
    judge,
    min_detectable_effect,
    noise_goal,
    paired,
    significance,
)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_stage_reads_only_earlier_waves(profile):
    """Building a stage's job needs only the stages of earlier waves (and the logits of those that teach)."""
    R = {}
    ids = []
    for wave in plan(profile):
        for group in (wave, [j.outputs for j in teaching(wave)]):
            for job_id in group:
                job = make_job(profile, job_id, R)  # KeyError: an input that is not finished yet
                assert job.id == str(job_id) and JobId.parse(job.id) == job_id
                ids.append(job.id)
            for job_id in group:  # what a finished stage of each kind holds
                kind = "adapt" if job_id.what.startswith("adapt-") and not job_id.logits else "train"
                result = {"checkpoint": "x.pt", "teacher_kind": "targets" if "adapt-proj" in job_id.what else "model"}
                R[job_id] = StageResult(str(job_id), kind, Path("/nonexistent"), "ran", "0", result)
    assert len(ids) == len(set(ids))
    if PROFILES[profile].get("plan") == "v4":
        return _check_v4(profile, ids, R)
    if PROFILES[profile].get("plan") == "v4-arms":
        return _check_v4_arms(profile, ids, R)
    small, medium, large = ladder(profile)
    for s in PROFILES[profile]["seeds"]:  # every claim's comparison is planned for every seed
        wanted = [f"s{s}_vanilla", f"s{s}_kd-aa_{small}", f"s{s}_kd-aa_{large}"]
        wanted += [f"s{s}_kd_{t}" for t in (small, medium, large)]
        if PROFILES[profile].get("plan") == "probe":  # the noise floor only
            assert len([j for j in ids if j.startswith(f"s{s}_")]) == len(wanted) and set(wanted) <= set(ids)
            continue
        wanted += [f"s{s}_kd-{k}_{t}" for k in ("cs", "ic") for t in (small, medium, large)]
        wanted += [f"s{s}_aid-ft+kd_{t}" for t in (small, medium, large)]
        wanted += [f"s{s}_adapt-mcmi_{large}", f"s{s}_aid-mcmi+kd_{large}"]
        baselines = [f"s{s}_takd_{large}", f"s{s}_ban_{large}", f"s{s}_aid-ft+dkd_{large}", f"s{s}_dkd_{large}"]
        if PROFILES[profile].get("baselines", True):
            wanted += baselines
        else:
            assert not set(baselines) & set(ids)
        for j in wanted:
            assert j in ids, j
    live = PROFILES[profile].get("teacher_outputs") == "live"
    # the component students are KD with one weight changed, from the teacher's logits stage (or, in a live
    # profile, from the teacher itself)
    for what, params in (("kd-cs", {"ic_weight": 0.0}), ("kd-ic", {"cs_weight": 0.0}),
                         ("kd-aa", {"ic_weight": 1.0 + 1e-6})):
        cfg = make_job(profile, JobId.parse(f"s0_{what}_{large}"), R).args["config"]
        assert cfg["method"] == {"name": "kd", "params": params}
        want = {"kind": "model", "name": large, "checkpoint": str(R[JobId.parse(f"teacher_{large}")].checkpoint)} if live else \
            {"kind": "logits", "checkpoint": str(R[JobId.parse(f"logits_teacher_{large}")].checkpoint)}
        assert cfg["teacher"] == want
    # the probes' teachers train on the 20k subset whatever the students' split: one teacher stage for them all
    teacher = make_job(profile, JobId.parse(f"teacher_{large}"), R)
    if profile == "axis" or profile.startswith("probe-") and profile != "probe-test":
        assert teacher.args["config"] == make_job("full", JobId.parse("teacher_cnn_large"), R).args["config"]
    if PROFILES[profile].get("plan") == "probe":
        return
    aid_ft = make_job(profile, JobId.parse(f"s0_aid-ft+kd_{large}"), R).args["config"]["teacher"]
    if live:  # the adapted teacher runs as a model of its architecture; the logits stages hold one view per image
        assert aid_ft == {"kind": "model", "name": large, "checkpoint": str(R[JobId.parse(f"s0_adapt-ft_{large}")].checkpoint)}
        assert make_job(profile, JobId.parse(f"logits_teacher_{large}"), R).args["data"]["augment"] is False
        assert make_job(profile, JobId.parse("s0_vanilla"), R).args["config"]["data"]["augment"] is True
        return
    # the projection teacher is served as targets, the fine-tuned one through its logits stage
    proj = next(v for v in variants(profile) if VARIANTS[v].objective == "projection")
    aid_proj = make_job(profile, JobId.parse(f"s0_aid-{proj}+kd_{large}"), R).args["config"]["teacher"]
    assert aid_proj["kind"] == "targets" and aid_ft["kind"] == "logits"


def _check_v4(profile: str, ids: list[str], R: dict) -> None:
    """Evidence v4's plan: every seed has the vanilla student, KD from every teacher of the profile's checkpoint,
    the replicated KD control from the largest, and the published AID + KD at every degree from the largest (at
    the middle degree from the others), the adaptation towards the vanilla student of the same seed."""
    p = PROFILES[profile]
    teachers, c = ladder(profile), p["ckpt"]
    largest, default = teachers[-1], p["degrees"][len(p["degrees"]) // 2]
    for s in p["seeds"]:
        wanted = [JobId("vanilla", s), JobId("kd-aa", s, largest, c)] + [JobId("kd", s, t, c) for t in teachers]
        for t in teachers:
            for v in p["degrees"] if t == largest else [default]:
                wanted += [JobId(f"adapt-{v}", s, t, c), JobId(f"aid-{v}+kd", s, t, c)]
                adapt = make_job(profile, JobId(f"adapt-{v}", s, t, c), R)
                assert adapt.args["reference"] == str(R[JobId("vanilla", s)].checkpoint)
                assert adapt.args["params"]["objective"] == "kd" and VARIANTS[v].reference == "vanilla"
        assert {str(j) for j in wanted} <= set(ids)
    assert len([i for i in ids if JobId.parse(i).what not in ("teacher",) and not i.startswith("logits_")]) == \
        len(p["seeds"]) * (2 + len(teachers) + 2 * (len(teachers) - 1) + 2 * len(p["degrees"]))
    kd = make_job(profile, JobId("kd", 0, largest, c), R).args["config"]
    assert kd["teacher"] == {"kind": "logits",
                             "checkpoint": str(R[JobId("teacher", teacher=largest, ckpt=c, logits=True)].checkpoint)}


def _check_v4_arms(profile: str, ids: list[str], R: dict) -> None:
    """The other arms: each for every seed, with what it reads (the adaptation, a proxy student, TAKD's assistant, the
    KD student of born-again KD); a proxy's adaptation is towards the vanilla student of the proxy's architecture."""
    p = PROFILES[profile]
    t, c = ladder(profile)[-1], p["ckpt"]
    for s in p["seeds"]:
        for arm in p["arms"]:
            assert str(JobId(arm, s, t, c)) in ids, arm
        assert str(JobId("takd-assistant", s, t, c)) in ids and str(JobId("kd", s, t, c)) in ids
    proxy = make_job(profile, JobId("adapt-pub_proxy-cnn_tiny", 0, t, c), R)
    assert proxy.args["reference_arch"] == "cnn_tiny"
    assert proxy.args["reference"] == str(R[JobId("proxy-cnn_tiny", 0)].checkpoint)
    assert make_job(profile, JobId("proxy-cnn_tiny", 0), R).args["config"]["model"] == {"name": "cnn_tiny"}
    assert make_job(profile, JobId("takd-assistant", 0, t, c), R).args["config"]["model"] == {"name": p["assistant"]}
    assert make_job(profile, JobId("dkd", 0, t, c), R).args["config"]["method"]["params"]["warmup_epochs"] == 7


def test_v4_uses_the_shipped_teachers_verified_by_checksum(tmp_path, monkeypatch):
    """The v4 profile takes the study's shipped teachers when they were trained with its teacher config (the train
    stage's fingerprint in the manifest), checks their sha256 before any use, and trains what is not shipped."""
    import dataclasses
    import shutil

    from studies.fmnist_gap import plan as P

    manifest = json.loads((P.SHIPPED / "manifest.json").read_text())
    medium = P.make_job("v4", JobId("teacher", teacher="cnn_medium"), {})
    assert medium.kind == "shipped" and Path(medium.args["file"]) == P.SHIPPED / "cnn_medium.safetensors"
    assert P.make_job("v4-test", JobId("teacher", teacher="cnn_tiny"), {}).kind == "train"  # not shipped
    res = P.run_job(str(tmp_path / "stages"), medium)
    assert res.kind == "given" and res.checkpoint == P.SHIPPED / "cnn_medium.safetensors"
    assert res.result["summary"]["last_test_acc"] == manifest["cnn_medium"]["test_top1_last"]
    damaged = tmp_path / "cnn_medium.safetensors"
    shutil.copy(P.SHIPPED / "cnn_medium.safetensors", damaged)
    with open(damaged, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(UserError, match="does not match its sha256"):
        P.run_job(str(tmp_path / "stages"), dataclasses.replace(medium, args={**medium.args, "file": str(damaged)}))
    monkeypatch.setitem(P.PROFILES, "v4", {**P.PROFILES["v4"], "teacher_epochs": 16})  # another recipe: trained
    assert P.make_job("v4", JobId("teacher", teacher="cnn_medium"), {}).kind == "train"


def test_rank_statistics_and_trend_slopes():
    """Beside the t-test: the Wilcoxon signed-rank p (scipy's) and the Hodges-Lehmann estimate (the median of the
    Walsh averages, computed by hand here); a trend's per-seed slopes are least-squares slopes."""
    from scipy import stats

    from studies.fmnist_gap.v4 import _slopes, _trend
    from studies.fmnist_gap.verdicts import hodges_lehmann

    d = [0.5, -0.2, 1.1, 0.3, 0.9, -0.4, 0.7]
    walsh = sorted((d[i] + d[j]) / 2 for i in range(7) for j in range(i, 7))
    assert len(walsh) == 28 and hodges_lehmann(d) == (walsh[13] + walsh[14]) / 2
    c = paired([x + 1 for x in d], [1.0] * 7)
    assert math.isclose(c["hl"], hodges_lehmann(d)) and math.isclose(c["wilcoxon_p"], stats.wilcoxon(d).pvalue)
    assert paired([1.0, 2.0], [1.0, 2.0])["wilcoxon_p"] is None  # no non-zero difference
    xs = [1.0, 2.0, 4.0]
    assert _slopes(xs, [[1.0, 3.0, 7.0], [2.0, None, 2.0]]) == pytest.approx([2.0, 0.0])
    t = _trend(xs, [[1.0, 2.0], [3.0, None], [7.0, 2.0]])  # series per x, values per seed
    assert t["n"] == 2 and t["mean"] == pytest.approx(1.0)


def test_job_ids_are_named_once_and_read_back():
    """A stage's name is its JobId's ``str``, and :meth:`JobId.parse` gives the JobId back, for every kind of stage
    (teacher checkpoints, logits stages, students of a teacher name that ends another one)."""
    jobs = [JobId("teacher", teacher="cnn_xl"), JobId("teacher", teacher="cnn_xl", ckpt=1),
            JobId("vanilla", 3), JobId("kd", 7, "cnn_small"), JobId("kd-aa", 0, "cnn_xl", ckpt=1),
            JobId("aid-proj_b1.25+kd", 2, "cnn_large"), JobId("adapt-ft", 4, "cnn_medium", logits=True)]
    names = ["teacher_cnn_xl", "teacher_cnn_xl-c1", "s3_vanilla", "s7_kd_cnn_small", "s0_kd-aa_cnn_xl-c1",
             "s2_aid-proj_b1.25+kd_cnn_large", "logits_s4_adapt-ft_cnn_medium"]
    assert [str(j) for j in jobs] == names
    assert [JobId.parse(n) for n in names] == jobs
    assert JobId("kd", 5, "cnn_xl", 1).of("adapt-ft") == JobId("adapt-ft", 5, "cnn_xl", 1)


def test_paired_statistics():
    a, b = [80.0, 81.0, 79.5], [79.0, 80.5, 79.0]
    d = [x - y for x, y in zip(a, b)]
    c = paired(a, b)
    assert c["n"] == 3 and math.isclose(c["mean"], statistics.mean(d)) and math.isclose(c["std"], statistics.stdev(d))
    t = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(3))
    from scipy import stats

    assert math.isclose(c["p"], 2 * stats.t.sf(abs(t), df=2), rel_tol=1e-9)
    assert significance({"n": 3, "mean": 1.0, "std": 0.1, "p": 0.01}) == "confirmed"
    assert significance({"n": 3, "mean": -1.0, "std": 0.1, "p": 0.01}) == "refuted"
    assert significance({"n": 3, "mean": 1.0, "std": 2.0, "p": 0.5}) == "not significant"
    assert significance(paired([1.0], [0.0])).startswith("not significant")


def test_min_detectable_effect_has_80_percent_power():
    """At the MDE a simulated paired t-test rejects 80% of the time; at large n it is (z_0.975 + z_0.8) std/sqrt(n)."""
    import numpy as np
    from scipy import stats

    n, std = 10, 0.7
    mde = min_detectable_effect(std, n)
    rng = np.random.default_rng(0)
    d = rng.normal(mde, std, size=(40000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    assert abs(np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1)) - 0.8) < 0.01
    assert math.isclose(min_detectable_effect(1.0, 4000), (1.959964 + 0.841621) / math.sqrt(4000), rel_tol=2e-3)
    assert math.isclose(min_detectable_effect(2 * std, n), 2 * mde, rel_tol=1e-9)
    assert min_detectable_effect(std, 5) > mde > min_detectable_effect(std, 20)  # fewer seeds, larger MDE
    assert math.isnan(min_detectable_effect(std, 1)) and min_detectable_effect(0.0, 5) == 0.0


def test_confidence_interval_bounds_are_where_the_test_reaches_5_percent():
    from scipy import stats

    d = [0.4, 1.1, -0.2, 0.9, 0.6, 0.3]
    lo, hi = confidence_interval(statistics.mean(d), statistics.stdev(d), len(d))
    assert lo < statistics.mean(d) < hi
    for bound in (lo, hi):
        assert math.isclose(stats.ttest_1samp(d, popmean=bound).pvalue, 0.05, rel_tol=1e-9)
    c = paired([x + 80 for x in d], [80.0] * len(d))
    assert c["ci"] == pytest.approx([lo, hi]) and c["mde"] == pytest.approx(min_detectable_effect(c["std"], 6))


def test_holm_step_down():
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    # sorted d, a, c, b: 4 x 0.005, 3 x 0.01, 2 x 0.03, then 1 x 0.04 raised to the running maximum
    assert {k: v["p_holm"] for k, v in adj.items()} == pytest.approx({"d": 0.02, "a": 0.03, "c": 0.06, "b": 0.06})
    assert {k for k, v in adj.items() if v["survives"]} == {"d", "a"}  # c: 0.03 > 0.05 / 2, and the steps stop
    assert all(v["survives"] == (v["p_holm"] <= 0.05) for v in adj.values())
    assert holm({"x": 0.6})["x"] == {"p_holm": 0.6, "survives": False} and holm({}) == {}


def test_unknown_profile_and_missing_report(tmp_path, capsys):
    with pytest.raises(UserError, match="unknown profile"):
        run("huge", tmp_path / "r.md")
    assert main(["--profile", "huge", "--report", str(tmp_path / "r.md")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["--profile", "test"]) == 2  # the report path is needed, said in one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--report is needed" in err[0]


def _fake(kd_acc, aa_acc, drops, betas, parts=None):
    """acc() and adapt() of the jobs the premise, claim 7 and the A/A controls read, for 3 seeds (``parts``: the
    extra accuracies by job id, e.g. of the kd-cs / kd-ic / kd-aa students)."""
    from aidkd.aid.adapt import AIDParams

    accs, adapts = {}, {}
    for s in range(3):
        accs[f"s{s}_vanilla"] = 80.0
        for t in ("cnn_small", "cnn_medium", "cnn_large"):
            accs[f"s{s}_kd_{t}"] = kd_acc[s]
        accs[f"s{s}_aid-proj_tempered+kd_cnn_large"] = aa_acc[s]
        adapts[f"s{s}_adapt-proj_tempered_cnn_large"] = {"beta": betas[s]}
        adapts[f"s{s}_adapt-ft_cnn_large"] = {"teacher_val_acc_before": 90.0, "teacher_val_acc_after": 90.0 - drops[s],
                                              "params": AIDParams().model_dump()}
    accs |= parts or {}
    return judge([0, 1, 2], TEACHERS, accs.get, adapts.get, {}, lambda j: None)


def _claim(records, claim):
    return [r for r in records if r["claim"] == claim]


def test_verdicts_premise_teacher_accuracy_and_aa_control():
    kd, aa = [81.0, 82.0, 81.5], [81.4, 81.7, 82.3]
    recs = _fake(kd, aa, drops=[0.5, 1.5, 0.9], betas=[1.0, 1.0, 1.0])
    (premise,) = _claim(recs, "0")
    assert set(premise["answers"]) == {"cnn_small", "cnn_medium", "cnn_large"}
    assert set(premise["answers"].values()) == {"yes"}  # +1.50 +- 0.50 from every teacher, p < 0.05
    assert math.isclose(premise["comparison"]["kd_minus_vanilla"]["cnn_large"]["mean"], 1.5)
    (c7,) = _claim(recs, "7")
    assert c7["verdict"] == "borderline" and c7["comparison"]["seeds_over"] == 1
    assert math.isclose(c7["comparison"]["mean_drop"], statistics.mean([0.5, 1.5, 0.9]))
    (aa_rec,) = _claim(recs, "A/A")
    assert aa_rec["comparison"]["same_targets_minus_kd"] == paired(aa, kd)
    for drops, verdict in (([1.2, 1.5, 1.1], "refuted"), ([0.2, 0.5, 1.0], "confirmed")):
        assert _claim(_fake(kd, aa, drops, [1.0] * 3), "7")[0]["verdict"] == verdict
    # a real tempering on some seed: the projection is no longer KD, so no A/A control
    assert not _claim(_fake(kd, aa, [0.5] * 3, betas=[1.0, 0.7, 1.0]), "A/A")
    # claims without their jobs are left out, or reported as not measured
    assert _claim(recs, "4")[0]["verdict"] == "not measured" and not _claim(recs, "3")


def test_causal_test_kd_aa_controls_holm_family_and_the_noise_goal():
    kd, aa = [81.0, 82.0, 81.5], [81.4, 81.7, 82.3]
    parts = {}
    for s in range(3):
        parts[f"s{s}_kd-cs_cnn_large"] = kd[s] + [0.9, 1.1, 1.0][s]  # beats KD: confirmed
        parts[f"s{s}_kd-ic_cnn_large"] = kd[s] + [0.5, -0.3, 0.1][s]  # not significantly behind
        parts[f"s{s}_kd-cs_cnn_small"] = kd[s] - 2.0
        parts[f"s{s}_kd-aa_cnn_large"] = kd[s] + [0.1, -0.1, 0.0][s]
        parts[f"s{s}_kd-aa_cnn_small"] = kd[s] + [0.5, -0.6, 0.4][s]
    recs = _fake(kd, aa, [0.5] * 3, [0.9] * 3, parts)
    cs = next(r for r in recs if r["claim"] == "C" and r["part"] == "cs")
    ic = next(r for r in recs if r["claim"] == "C" and r["part"] == "ic")
    assert cs["verdict"] == "confirmed" and set(cs["comparison"]["kd_cs_minus_kd"]) == {"cnn_small", "cnn_large"}
    assert ic["verdict"] == "not significant" and set(ic["comparison"]["kd_ic_minus_kd"]) == {"cnn_large"}
    floors = {r["teacher"]: r["comparison"]["kd_aa_minus_kd"] for r in _claim(recs, "A/A")}
    assert set(floors) == {"cnn_small", "cnn_large"} and math.isclose(floors["cnn_large"]["std"], 0.1)
    rows = corrected(recs)  # the claims' comparisons, not the controls
    assert rows and not any(r["label"].startswith("A/A") for r in rows)
    assert len(rows) == len({r["label"] for r in rows})
    assert any(r["label"] == "C/KD from L_CS only vs KD/kd_cs_minus_kd/cnn_large" for r in rows)
    goal = noise_goal(recs, TEACHERS)
    # the floor (the largest teacher's control) is 0.1 <= 0.35, but KD - vanilla, +1.50 +- 0.50 from every
    # teacher, has p = 0.035 on 3 seeds: no teacher clears p < 0.01, and the goal is not reached
    assert goal["floor"] == floors["cnn_large"]["std"] and goal["aa_std"]["cnn_small"] > 0.35
    assert goal["kd_gain_teachers"] == [] and goal["reached"] is False
    assert noise_goal([r for r in recs if r["claim"] != "A/A"], TEACHERS) is None
    # KD +2 from cnn_small, +2.5 from cnn_medium and +1 from cnn_large, each at p < 0.01: reached
    gains = {"cnn_small": 2.0, "cnn_medium": 2.5, "cnn_large": 1.0}
    parts |= {f"s{s}_kd_{t}": 80.0 + g + [0.0, 0.1, -0.1][s] for s in range(3) for t, g in gains.items()}
    parts |= {f"s{s}_kd-aa_cnn_large": parts[f"s{s}_kd_cnn_large"] + [0.1, -0.1, 0.0][s] for s in range(3)}
    goal = noise_goal(_fake(kd, aa, [0.5] * 3, [0.9] * 3, parts), TEACHERS)
    assert goal["kd_gain_teachers"] == ["cnn_small", "cnn_medium", "cnn_large"] and goal["largest_best"] is False
    assert goal["reached"] is True
    parts |= {f"s{s}_kd_cnn_large": 83.0 + [0.0, 0.1, -0.1][s] for s in range(3)}  # the largest is the best
    assert noise_goal(_fake(kd, aa, [0.5] * 3, [0.9] * 3, parts), TEACHERS)["reached"] is False


VERDICTS = {"confirmed", "refuted", "not significant", "not significant (fewer than 2 seeds)", "borderline",
            "partly", "not measured", "per teacher", "noise floor", "refuted on cost", "refuted on accuracy"}


def test_whole_study_on_digits_and_rerun_runs_nothing(tmp_path):
    report = tmp_path / "docs" / "gap.md"
    run("test", report, out=tmp_path / "runs", executor="pool", workers=2)
    data = json.loads(report.with_suffix(".json").read_text())
    n_jobs = sum(len(w) for w in plan("test"))
    assert len(data["results"]) == n_jobs
    claims = {r["claim"] for r in data["verdicts"]}
    assert {"0", "1", "2", "3", "4", "5", "6", "7", "C", "A/A"} <= claims
    assert {r["teacher"] for r in data["verdicts"] if r["claim"] == "A/A" and "teacher" in r} == {"cnn_small",
                                                                                                  "cnn_large"}
    assert data["holm"] and all(r["p_holm"] >= r["p"] for r in data["holm"])
    assert set(data["noise_goal"]) >= {"floor", "aa_std", "kd_gain_teachers", "largest_best", "reached"}
    assert all(r["verdict"] in VERDICTS for r in data["verdicts"])
    for r in data["results"].values():  # every training record has its accuracy, every adaptation its numbers
        if r["kind"] == "adapt":
            assert r["train_ic_after"] is not None and r["teacher_val_acc_after"] is not None
        else:
            assert 0 <= r["summary"]["last_test_acc"] <= 100
    # the inner-class information I_T of every adapted teacher: a sharper tempered target (beta 1.6) raises it
    for s in (0, 1):
        sharp = data["results"][f"s{s}_adapt-proj_b1.6_cnn_large"]
        assert sharp["info_after"] > sharp["info_before"] > 0 and sharp["beta"] == 1.6
        mcmi = data["results"][f"s{s}_adapt-mcmi_cnn_large"]
        assert mcmi["params"]["objective"] == "mcmi" and mcmi["info_after"] > 0
        assert data["results"][f"s{s}_aid-mcmi+kd_cnn_large"]["summary"]["last_test_acc"] >= 0
    # the A/A control is a real perturbation: its student's weights differ from KD's, by float rounding only
    import torch

    def weights(job: str) -> dict:
        (ck,) = (tmp_path / "runs" / "stages").glob(f"{job}-*/checkpoints/last.pt")
        return torch.load(ck, map_location="cpu", weights_only=False)["model"]

    kd, aa = weights("s0_kd_cnn_large"), weights("s0_kd-aa_cnn_large")
    gaps = [(kd[k] - aa[k]).abs().max().item() for k in kd if kd[k].is_floating_point()]
    assert 0 < max(gaps) < 1e-3
    for png in ("student_acc_vs_teacher.png", "components_vs_teacher.png", "lambda_sweep.png",
                "acc_vs_inner_class_information.png", "beta_sweep.png"):
        assert (tmp_path / "docs" / "gap" / png).stat().st_size > 1000
    records = sorted((tmp_path / "runs" / "stages").glob("*/stage.json"))
    mtimes = [f.stat().st_mtime_ns for f in records]
    run("test", report, out=tmp_path / "runs", executor="inprocess")  # every stage is found finished
    assert [f.stat().st_mtime_ns for f in records] == mtimes
    assert sorted((tmp_path / "runs" / "stages").glob("*/stage.json")) == records
    assert json.loads(report.with_suffix(".json").read_text())["verdicts"] == data["verdicts"]


def test_probe_with_augmented_students_and_ema_on_digits(tmp_path):
    """The probe plan with the students augmented (they distil from the teachers' outputs on every view) and an
    average of their weights: both noise floors are reported, and the augmented KD student reads the view it sees."""
    report = tmp_path / "probe.md"
    run("probe-test", report, out=tmp_path / "runs", executor="inprocess")
    data = json.loads(report.with_suffix(".json").read_text())
    students = [r for r in data["results"].values() if r["kind"] == "student"]
    assert students and all(0 <= r["summary"]["last_test_raw_acc"] <= 100 for r in students)
    text = report.read_text()
    assert "Noise floor of the training weights" in text and "moving average" in text
    assert "{" not in text.split("## Noise floor")[0]  # the setting line is filled in
    section = text.split("### Where the floor comes from")[1].split("\n#")[0]
    churn = [ln for ln in section.splitlines() if ln.startswith("| cnn_")]  # the A/A pairs' churn, both weights
    assert {ln.split(" | ")[1] for ln in churn} == {"average", "training weights"}
    # the teachers' tables hold every view of digits' augmentation (crop padding 1, no flip: 9 views)
    (rec,) = (tmp_path / "runs" / "stages").glob("logits_teacher_cnn_large-*/stage.json")
    assert json.loads(rec.read_text())["result"]["shape"][1] == 9


def test_gpu_plan_with_its_own_ladder_and_live_teachers_on_digits(tmp_path):
    """The GPU profile's plan (here on digits and the CPU): a ResNet ladder of its own, students augmented and
    distilled from the teacher they run, the logits stages kept for the analysis with one view per image."""
    import yaml

    report = tmp_path / "gpu.md"
    run("gpu-test", report, out=tmp_path / "runs", executor="inprocess")
    data = json.loads(report.with_suffix(".json").read_text())
    assert len(data["results"]) == sum(len(w) for w in plan("gpu-test"))
    assert {r["teacher"] for r in data["verdicts"] if r["claim"] == "A/A" and "teacher" in r} == {"resnet8",
                                                                                                  "resnet20"}
    assert set(data["decomposition"]) == {"resnet8", "resnet14", "resnet20"}
    stages = tmp_path / "runs" / "stages"
    for job, arch, source in (("s0_kd-cs_resnet20", "resnet20", "teacher_resnet20"),
                              ("s1_aid-mcmi+kd_resnet20", "resnet20", "s1_adapt-mcmi_resnet20")):
        (cfg,) = stages.glob(f"{job}-*/config.yaml")
        cfg = yaml.safe_load(cfg.read_text())
        assert cfg["data"]["augment"] is True
        assert cfg["teacher"]["kind"] == "model" and cfg["teacher"]["name"] == arch
        assert any(part.startswith(source + "-") for part in Path(cfg["teacher"]["checkpoint"]).parts)
    (rec,) = stages.glob("logits_teacher_resnet20-*/stage.json")
    assert json.loads(rec.read_text())["result"]["shape"][1] == 1  # one view per image: the analysis only
    assert data["results"]["s0_adapt-ft_tempered_resnet20"]["info_after"] > 0
    text = report.read_text()
    assert "`resnet8`, `resnet14`, `resnet20`" in text and "run on the view it sees" in text


def test_v4_runs_on_digits_and_a_rerun_finds_every_stage(tmp_path, monkeypatch):
    """Evidence v4's plan (the ``v4-test`` profile on digits) runs: every student and adaptation finishes, the
    published AID adapts each teacher towards the vanilla student of the same seed, the AID + KD students distil
    from the adapted teacher's stored outputs, and collecting the finished profile runs nothing."""
    from aidkd.stages import InProcessExecutor
    from studies.fmnist_gap.plan import collect, run_study

    R = run_study("v4-test", tmp_path, InProcessExecutor(), log=lambda *a: None)
    planned = [j for wave in plan("v4-test") for j in wave]
    assert all(R[j].status == "ran" for j in planned)
    for j in planned:
        if j.what.startswith("adapt-"):
            rep = R[j].result["report"]
            assert rep["objective"] == "kd" and rep["reference_checkpoint"] == str(R[JobId("vanilla", j.seed)].checkpoint)
        if j.what.startswith("aid-"):
            cfg = json.loads((R[j].dir / "stage.json").read_text())["config"]
            assert cfg["teacher"]["kind"] == "logits" and cfg["method"]["name"] == "kd"
            assert R[j].result["summary"]["last_test_acc"] > 20  # chance is 10%
    again = collect("v4-test", tmp_path)
    assert set(again) == set(R) and all(r.status == "skipped" for r in again.values())
    # the report: every claim judged, one Holm family, the teacher side before and after, the size plot
    from studies.fmnist_gap.v4 import write_v4_report

    report = write_v4_report("v4-test", tmp_path, again, tmp_path / "v4.md")
    data = json.loads(report.with_suffix(".json").read_text())
    claims = {r["claim"] for r in data["verdicts"]}
    assert {"0", "A/A", "1", "H", "G", "T", "K"} <= claims  # two degrees: no degree trend
    head = next(r for r in data["verdicts"] if r["claim"] == "H")["comparison"]["aid_minus_kd_control"]
    assert head["n"] == 2 and "wilcoxon_p" in head and "hl" in head
    assert all(r["label"][0] != "A" for r in data["holm"])  # the A/A control is no claim
    text = report.read_text()
    assert "| cnn_small | pub |" in text and (tmp_path / "v4" / "student_acc_vs_teacher_size.png").is_file()
    # the teachers shipped once (safetensors + manifest) are what a later run of the profile takes, verified
    from studies.fmnist_gap import plan as P
    from studies.fmnist_gap.ship import ship_teachers

    shipped = tmp_path / "teachers"
    shipped.mkdir()
    assert ship_teachers("v4-test", tmp_path, folder=shipped, log=lambda *a: None) == ["cnn_tiny", "cnn_small"]
    assert ship_teachers("v4-test", tmp_path, folder=shipped, log=lambda *a: None) == []  # kept as they are
    monkeypatch.setattr(P, "SHIPPED", shipped)
    job = P.make_job("v4-test", JobId("teacher", teacher="cnn_small"), {})
    assert job.kind == "shipped"
    res = P.run_job(str(tmp_path / "stages"), job)
    assert res.kind == "given" and res.result["summary"]["last_test_acc"] == R[JobId("teacher", teacher="cnn_small")].result["summary"]["last_test_acc"]
