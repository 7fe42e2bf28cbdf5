"""The Fashion-MNIST capacity-gap study (benchmarks/fmnist_gap): its plan, its statistics, its verdict records,
and the whole flow on digits (the `test` profile) through a process pool, rerun without running anything."""
import json
import math
import statistics
from pathlib import Path

import pytest

from aidkd.errors import UserError
from aidkd.stages import StageResult
from benchmarks.fmnist_gap.__main__ import main, run
from benchmarks.fmnist_gap.plan import PROFILES, logits_id, make_job, plan, teaching
from benchmarks.fmnist_gap.verdicts import judge, paired, significance


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_stage_reads_only_earlier_waves(profile):
    """Building a stage's job needs only the stages of earlier waves (and the logits of those that teach)."""
    R = {}
    ids = []
    for wave in plan(profile):
        for group in (wave, [logits_id(j) for j in teaching(wave)]):
            for job_id in group:
                job = make_job(profile, job_id, R)  # KeyError: an input that is not finished yet
                assert job.id == job_id
                ids.append(job_id)
            for job_id in group:  # what a finished stage of each kind holds
                kind = "adapt" if "_adapt-" in job_id else "train"
                result = {"checkpoint": "x.pt", "teacher_kind": "targets" if "adapt-proj" in job_id else "model"}
                R[job_id] = StageResult(job_id, kind, Path("/nonexistent"), "ran", "0", result)
    assert len(ids) == len(set(ids))
    for s in PROFILES[profile]["seeds"]:  # every claim's comparison is planned for every seed
        for j in (f"s{s}_vanilla", f"s{s}_kd_cnn_large", f"s{s}_aid-ft+kd_cnn_large", f"s{s}_takd_cnn_large",
                  f"s{s}_ban_cnn_large", f"s{s}_aid-ft+dkd_cnn_large", f"s{s}_dkd_cnn_large"):
            assert j in ids, j
    # the projection teacher is served as targets, the fine-tuned one through its logits stage
    aid_proj = make_job(profile, "s0_aid-proj+kd_cnn_large", R).args["config"]["teacher"]
    aid_ft = make_job(profile, "s0_aid-ft+kd_cnn_large", R).args["config"]["teacher"]
    assert aid_proj["kind"] == "targets" and aid_ft["kind"] == "logits"


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


def test_unknown_profile_and_missing_report(tmp_path, capsys):
    with pytest.raises(UserError, match="unknown profile"):
        run("huge", tmp_path / "r.md")
    assert main(["--profile", "huge", "--report", str(tmp_path / "r.md")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):  # the report path is required
        main(["--profile", "test"])


def _fake(kd_acc, aa_acc, drops, betas):
    """acc() and adapt() of the jobs the premise, claim 7 and the A/A control read, for 3 seeds."""
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
    return judge([0, 1, 2], accs.get, adapts.get, {}, lambda j: None)


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


VERDICTS = {"confirmed", "refuted", "not significant", "not significant (fewer than 2 seeds)", "borderline",
            "partly", "not measured", "per teacher", "noise floor", "refuted on cost", "refuted on accuracy"}


def test_whole_study_on_digits_and_rerun_runs_nothing(tmp_path):
    report = tmp_path / "docs" / "gap.md"
    run("test", report, out=tmp_path / "runs", executor="pool", workers=2)
    data = json.loads(report.with_suffix(".json").read_text())
    n_jobs = sum(len(w) for w in plan("test"))
    assert len(data["results"]) == n_jobs
    claims = {r["claim"] for r in data["verdicts"]}
    assert {"0", "1", "2", "3", "4", "5", "6", "7"} <= claims
    assert all(r["verdict"] in VERDICTS for r in data["verdicts"])
    for r in data["results"].values():  # every training record has its accuracy, every adaptation its numbers
        if r["kind"] == "adapt":
            assert r["train_ic_after"] is not None and r["teacher_val_acc_after"] is not None
        else:
            assert 0 <= r["summary"]["last_test_acc"] <= 100
    for png in ("student_acc_vs_teacher.png", "components_vs_teacher.png", "lambda_sweep.png"):
        assert (tmp_path / "docs" / "gap" / png).stat().st_size > 1000
    records = sorted((tmp_path / "runs" / "stages").glob("*/stage.json"))
    mtimes = [f.stat().st_mtime_ns for f in records]
    run("test", report, out=tmp_path / "runs", executor="inprocess")  # every stage is found finished
    assert [f.stat().st_mtime_ns for f in records] == mtimes
    assert sorted((tmp_path / "runs" / "stages").glob("*/stage.json")) == records
    assert json.loads(report.with_suffix(".json").read_text())["verdicts"] == data["verdicts"]
