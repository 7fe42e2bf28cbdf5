"""The capacity-gap benchmark: its plan, its statistics, and the whole flow on digits (the `test` profile)."""
import json
import math
import statistics

import pytest

from aidkd.bench.fmnist_gap import PROFILES, plan, run_benchmark
from aidkd.bench.fmnist_report import _fmt_cmp, _verdict, _verdicts, paired
from aidkd.errors import UserError


@pytest.mark.parametrize("profile", list(PROFILES))
def test_plan_is_a_valid_dag(profile):
    jobs = {j.id: j for j in plan(profile)}
    assert len(jobs) == len(plan(profile))  # ids are unique
    done: set[str] = set()
    while len(done) < len(jobs):  # every job becomes runnable once its dependencies are done
        ready = [j for j in jobs if j not in done and all(d in done for d in jobs[j].deps)]
        assert ready, "a dependency cycle or an unknown dependency"
        done.update(ready)
    seeds = PROFILES[profile]["seeds"]
    for s in seeds:  # every claim's comparison is planned for every seed
        for j in (f"s{s}_vanilla", f"s{s}_kd_cnn_large", f"s{s}_aid-ft+kd_cnn_large", f"s{s}_takd_cnn_large",
                  f"s{s}_ban_cnn_large", f"s{s}_aid-ft+dkd_cnn_large", f"s{s}_dkd_cnn_large"):
            assert j in jobs, j


def test_paired_statistics():
    a, b = [80.0, 81.0, 79.5], [79.0, 80.5, 79.0]
    d = [x - y for x, y in zip(a, b)]
    c = paired(a, b)
    assert c["n"] == 3 and math.isclose(c["mean"], statistics.mean(d)) and math.isclose(c["std"], statistics.stdev(d))
    t = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(3))
    from scipy import stats

    assert math.isclose(c["p"], 2 * stats.t.sf(abs(t), df=2), rel_tol=1e-9)
    assert _verdict({"n": 3, "mean": 1.0, "std": 0.1, "p": 0.01}) == "confirmed"
    assert _verdict({"n": 3, "mean": -1.0, "std": 0.1, "p": 0.01}) == "refuted"
    assert _verdict({"n": 3, "mean": 1.0, "std": 2.0, "p": 0.5}) == "not significant"
    assert _verdict(paired([1.0], [0.0])).startswith("not significant")


def test_unknown_profile():
    with pytest.raises(UserError, match="unknown profile"):
        run_benchmark("huge")


def test_whole_benchmark_on_digits_and_rerun_skips(tmp_path):
    report = tmp_path / "docs" / "gap.md"
    out = run_benchmark("test", out=str(tmp_path / "runs"), workers=2, report=str(report))
    text = out.read_text()
    n_jobs = len(plan("test"))
    assert f"{n_jobs} of {n_jobs} jobs finished" in text
    for section in ("## Teachers", "## Students", "## Adaptation", "## The decomposition", "## Verdicts", "## Plots"):
        assert section in text, section
    for claim in range(1, 8):
        assert f"\n{claim}. **" in text, f"no verdict for claim {claim}"
    for png in ("student_acc_vs_teacher.png", "components_vs_teacher.png", "lambda_sweep.png"):
        assert (tmp_path / "docs" / "gap" / png).stat().st_size > 1000
    results = sorted((tmp_path / "runs" / "results").iterdir())
    mtimes = [f.stat().st_mtime for f in results]
    run_benchmark("test", out=str(tmp_path / "runs"), workers=2, report=str(report))  # everything is reused
    assert [f.stat().st_mtime for f in sorted((tmp_path / "runs" / "results").iterdir())] == mtimes
    # a folder holding another profile's results is refused, not reused under the wrong settings
    with pytest.raises(UserError, match="holds results of profile 'test'.*--out"):
        run_benchmark("quick", out=str(tmp_path / "runs"), workers=2, report=str(tmp_path / "q.md"), only_report=True)
    assert [f.stat().st_mtime for f in sorted((tmp_path / "runs" / "results").iterdir())] == mtimes


def test_changed_profile_settings_are_refused(tmp_path):
    (tmp_path / "profile.json").write_text(json.dumps({"profile": "test", "settings": {**PROFILES["test"],
                                                                                       "student_epochs": 99}}))
    with pytest.raises(UserError, match="student_epochs': 99"):
        run_benchmark("test", out=str(tmp_path), report=str(tmp_path / "r.md"), only_report=True)
    # more (or fewer) seeds only add (or leave out) jobs: allowed
    (tmp_path / "profile.json").write_text(json.dumps({"profile": "test", "settings": {**PROFILES["test"],
                                                                                       "seeds": [0, 1, 2, 3]}}))
    run_benchmark("test", out=str(tmp_path), report=str(tmp_path / "r.md"), only_report=True)
    assert json.loads((tmp_path / "profile.json").read_text())["settings"] == PROFILES["test"]


def test_cli_profile_flags(capsys):
    from aidkd.cli import main

    assert main(["bench", "fmnist-gap", "--quick", "--profile", "short", "--report-only"]) == 2
    assert "contradict" in capsys.readouterr().err


def _fake_results(kd_acc, aa_acc, drops, betas):
    """Results of the jobs the premise, claim 7 and the A/A control read, for 3 seeds on cnn_large."""
    from aidkd.aid.adapt import AIDParams

    R = {}
    for s in range(3):
        R[f"s{s}_vanilla"] = {"summary": {"last_test_acc": 80.0}, "job_wall_s": 1.0}
        for t in ("cnn_small", "cnn_medium", "cnn_large"):
            R[f"s{s}_kd_{t}"] = {"summary": {"last_test_acc": kd_acc[s]}, "job_wall_s": 1.0}
        R[f"s{s}_aid-proj_tempered+kd_cnn_large"] = {"summary": {"last_test_acc": aa_acc[s]}, "job_wall_s": 1.0}
        R[f"s{s}_adapt-proj_tempered_cnn_large"] = {"beta": betas[s], "job_wall_s": 1.0}
        R[f"s{s}_adapt-ft_cnn_large"] = {"teacher_val_acc_before": 90.0, "teacher_val_acc_after": 90.0 - drops[s],
                                         "params": AIDParams().model_dump(), "job_wall_s": 1.0}
    accs = lambda fmt, key="last_test_acc": [  # noqa: E731
        R[fmt.format(s=s)]["summary"][key] if fmt.format(s=s) in R else None for s in range(3)]
    return R, accs


def test_verdicts_premise_teacher_accuracy_and_aa_control():
    kd, aa = [81.0, 82.0, 81.5], [81.4, 81.7, 82.3]
    R, accs = _fake_results(kd, aa, drops=[0.5, 1.5, 0.9], betas=[1.0, 1.0, 1.0])
    lines = _verdicts(R, [0, 1, 2], accs, {})
    text = "\n".join(lines)
    premise = next(x for x in lines if x.startswith("0. "))
    assert premise.count("from cnn_") == 3 and premise.count("**yes**") == 3  # +1.50 +- 0.50 from every teacher
    assert "borderline: 1 of 3 seeds past the tolerance, mean drop 0.97" in text
    assert "Noise floor (an A/A control)" in text and _fmt_cmp(paired(aa, kd)) in text
    # every seed past the tolerance: refuted; none: confirmed
    for drops, verdict in (([1.2, 1.5, 1.1], "**refuted**"), ([0.2, 0.5, 1.0], "**confirmed**")):
        R, accs = _fake_results(kd, aa, drops, betas=[1.0, 1.0, 1.0])
        assert f"tolerance 1.0). Verdict: {verdict}" in "\n".join(_verdicts(R, [0, 1, 2], accs, {}))
    # a real tempering on some seed: the projection is no longer KD, so no A/A line
    R, accs = _fake_results(kd, aa, drops=[0.5, 0.5, 0.5], betas=[1.0, 0.7, 1.0])
    assert "Noise floor" not in "\n".join(_verdicts(R, [0, 1, 2], accs, {}))
