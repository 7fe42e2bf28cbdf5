"""``aidkd demo --quick``: the AID flow end to end through the pipeline, its tables, plot and closing lines."""
import json

import pytest

from aidkd.cli import main
from aidkd.demo import _resolved, closing_lines, demo_config


def test_demo_quick_runs_the_aid_flow_and_reuses_it(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    r = json.loads((out / "results.json").read_text())
    # every stage of the AID flow ran: teacher, vanilla, reference, adapt, KD / DKD from T0 and from T
    stages = {s["stage"]: s for s in r["stages"]}
    assert {"teacher", "vanilla-s0", "reference", "adapt", "kd-s0", "aid-kd-s0", "dkd-s0", "aid-dkd-s0"} <= set(stages)
    assert all(s["status"] in ("ran", "reused") for s in stages.values())
    # (a) the student table, (b) the decomposition, (c) the teacher's accuracy, then the two closing lines
    for part in ("(a) students", "AID + KD", "AID + DKD", "(b) teacher vs S_p", "L_IC inner-class",
                 "inner-class agreement rho", "I_T teacher's", "(c) teacher", "AID (objective kd)"):
        assert part in text, part
    # the published AID by default, towards the vanilla student, within its own accuracy tolerance
    assert r["aid"]["objective"] == "kd" and r["reference"]["kind"] == "vanilla"
    assert not r["teacher"]["acc_warning"] and "LOST" not in captured.err and "WARNING" not in text
    d = r["decomposition"]
    assert d["kd_before"] == pytest.approx(d["cs_before"] + d["ic_before"], rel=1e-6)
    assert d["kd_after"] == pytest.approx(d["cs_after"] + d["ic_after"], rel=1e-6)
    assert f"{d['ic_before']:.3f}" in text and f"{d['ic_after']:.3f}" in text
    assert f"{r['teacher']['acc_before']:.2f}%" in text and f"{r['teacher']['acc_after']:.2f}%" in text
    kd = next(m for m in r["methods"] if m["method"] == "kd")
    assert f"{kd['aid']['last_stats']['mean']:.2f}" in text
    lines = [ln for ln in text.splitlines() if ln.startswith(("Shown:", "Files:"))]
    assert len(lines) == 2 and "one seed: untested" in lines[0] and str(out) in lines[1]
    png = out / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every run of the flow has its training curves beside its metrics
    assert (out / stages["aid-kd-s0"]["dir"].split("/")[-1] / "curves.png").is_file()

    # a rerun reuses every stage (the pipeline's job) and prints the same numbers
    mtime = png.stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    r2 = json.loads((out / "results.json").read_text())
    assert {s["status"] for s in r2["stages"]} <= {"skipped", "reused"}
    assert r2["decomposition"] == r["decomposition"]
    assert png.stat().st_mtime_ns >= mtime


def test_demo_config_is_the_shipped_pipeline_with_seeds_and_folder(tmp_path):
    full = demo_config(False, str(tmp_path), None)
    assert full.seeds == [0, 1, 2] and [m.name for m in full.methods] == ["kd", "dkd"]
    assert full.base.data.name == "digits" and full.output.dir == str(tmp_path)
    quick = demo_config(True, None, [3, 4])
    assert quick.seeds == [3, 4] and quick.base.train.epochs < full.base.train.epochs


def test_demo_bad_seeds_is_a_user_error(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--seeds", "1,1"]) == 2
    assert "seeds must be distinct" in capsys.readouterr().err


def test_closing_line_verdicts_follow_the_seed_noise(tmp_path):
    assert _resolved({"mean": 2.0, "std": 0.5, "n": 3})
    assert not _resolved({"mean": 0.5, "std": 1.5, "n": 3})  # under two standard errors
    assert not _resolved({"mean": 0.2, "std": 0.0, "n": 3})  # under one test image (0.28 points)
    assert not _resolved({"mean": 5.0, "std": 0.0, "n": 1})
    def st(m, s, n):
        return {"mean": m, "std": s, "n": n}

    r = {"seeds": [0, 1, 2], "aid": {"objective": "kd"}, "teacher": {"acc_before": 99.0, "acc_after": 98.5},
         "decomposition": {"cs_before": 0.1, "cs_after": 0.2, "ic_before": 0.6, "ic_after": 0.4},
         "methods": [{"method": "kd", "gain_last": st(2.0, 0.5, 3)}, {"method": "dkd", "gain_last": st(0.3, 2.0, 3)}]}
    line1, line2 = closing_lines(r, tmp_path, tmp_path / "demo.png")
    assert "AID+KD +2.00 ± 0.50 (resolved)" in line1 and "AID+DKD +0.30 ± 2.00 (within noise)" in line1
    assert "0.600 to 0.400" in line1 and "-0.50 points" in line1 and "not whether AID beats KD" in line1
    assert line2.startswith(f"Files: {tmp_path}/")
