"""The AID pipeline and its commands: end to end on digits, stage skipping, reruns of changed stages, resume,
adapt / analyze CLIs, config errors."""
import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from aidkd.aid.pipeline import load_pipeline_config, pipeline_config_from_dict, run_pipeline
from aidkd.cli import main
from aidkd.config import _deep_merge, load_config, resolve_config_path, shipped_configs
from aidkd.files.checkpoint import FORMAT, load_checkpoint
from aidkd.errors import UserError

BASE = {
    "base": {
        "data": {"name": "digits", "batch_size": 64, "val_split": 0.1, "augment": False},
        "optim": {"lr": 0.05},
        "sched": {"name": "cosine"},
        "train": {"epochs": 2, "device": "cpu", "progress": False, "tensorboard": False},
    },
    "teacher": {"name": "cnn_small", "epochs": 2},
    "student": {"name": "cnn_tiny"},
    "aid": {"reference": "distilled", "epochs": 1},
    "methods": [{"name": "kd"}],
    "seeds": [0],
}
TRAINED = {"ran", "resumed"}


def pipe(out: Path, **sections) -> dict:
    d = _deep_merge(copy.deepcopy(BASE), sections)
    d["output"] = {"dir": str(out)}
    return d


def run(d: dict, **kw):
    return run_pipeline(pipeline_config_from_dict(d), verbose=False, **kw)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One finished pipeline; tests copy its folder (stage folders are relocatable) before changing anything."""
    out = tmp_path_factory.mktemp("pipe") / "out"
    res = run(pipe(out))
    return out, res


@pytest.fixture
def copied(first, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(first[0], out)
    return out


def stage_dir(res: dict, name: str) -> Path:
    row = next(s for s in res["results"]["stages"] if s["stage"] == name)
    return Path(row["dir"])


def test_pipeline_end_to_end(first):
    out, res = first
    st = res["stages"]
    assert list(st) == ["teacher", "vanilla-s0", "reference", "adapt", "kd-s0", "aid-kd-s0"]
    assert all(st[n] == "ran" for n in ("teacher", "vanilla-s0", "reference", "adapt", "aid-kd-s0"))
    # the distilled reference and the KD baseline of seed 0 are the same run: trained once
    assert st["kd-s0"] == "reused" and stage_dir(res, "kd-s0") == stage_dir(res, "reference")
    for s in res["results"]["stages"]:
        folder = Path(s["dir"])
        assert (folder / "stage.json").is_file() and Path(s["checkpoint"]).is_file(), s
        assert folder.name.startswith(s["stage"] if s["stage"] != "kd-s0" else "reference")
    r = json.loads((out / "results.json").read_text())
    assert 80 < r["teacher"]["acc_before"] <= 100 and r["teacher"]["acc_after"] is not None
    for k in ("cs_before", "ic_before", "cs_after", "ic_after"):
        assert r["decomposition"][k] >= 0
    m = r["methods"][0]
    assert m["method"] == "kd" and len(m["baseline"]["last"]) == 1 and 0 < m["aid"]["best"][0] <= 100
    table = (out / "results.md").read_text()
    assert "| kd |" in table and "| vanilla (CE only) |" in table and "L_IC (inner-class distribution)" in table
    report = json.loads((stage_dir(res, "adapt") / "report.json").read_text())
    assert {"teacher_acc_before", "teacher_acc_after", "acc_warning", "ic_before", "ic_after", "wall_time_s"} <= set(report)
    ck = load_checkpoint(stage_dir(res, "adapt") / "teacher.pt")
    assert ck["format"] == FORMAT and ck["arch"] == "cnn_small" and ck["num_classes"] == 10 and ck["epoch"] == 1
    assert {"in_chans", "input_hw", "model_kwargs", "model", "config"} <= set(ck)
    assert json.loads(ck["config"])["data"]["name"] == "digits"


def test_rerun_skips_every_stage(copied):
    files = sorted(p for p in copied.rglob("*") if p.is_file() and p.suffix in (".json", ".pt") and p.parent != copied)
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    epochs = []
    res = run(pipe(copied), on_epoch_end=lambda stage, e, r: epochs.append((stage, e)))
    assert epochs == []  # nothing trained
    assert set(res["stages"].values()) <= {"skipped", "reused"}
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert (copied / "results.md").is_file()


def test_changed_param_reruns_only_affected_stages(copied):
    before = {p.name for p in copied.iterdir() if p.is_dir()}
    res = run(pipe(copied, methods=[{"name": "kd", "params": {"temperature": 2.0}}]))
    trained = {n for n, s in res["stages"].items() if s in TRAINED}
    assert trained == {"kd-s0", "aid-kd-s0"}
    after = {p.name for p in copied.iterdir() if p.is_dir()}
    assert before < after and len(after - before) == 2  # old outputs kept, new folders for the new config
    # a changed AID parameter: the adapt stage and the students of the adapted teacher only
    res = run(pipe(copied, aid={"epochs": 1, "lambda_kd": 0.5}))
    assert {n for n, s in res["stages"].items() if s in TRAINED} == {"adapt", "aid-kd-s0"}


class _Stop(Exception):
    pass


def test_interrupted_stage_resumes(copied):
    d = pipe(copied, methods=[{"name": "kd", "params": {"temperature": 3.0}}])

    def stop(stage, epoch, record):
        if stage == "aid-kd-s0" and epoch == 0:
            raise _Stop

    with pytest.raises(_Stop):
        run(d, on_epoch_end=stop)
    seen = []
    res = run(d, on_epoch_end=lambda stage, e, r: seen.append((stage, e)))
    assert res["stages"]["aid-kd-s0"] == "resumed" and res["stages"]["kd-s0"] == "skipped"
    assert seen == [("aid-kd-s0", 1)]  # only the second epoch ran again
    folder = stage_dir(res, "aid-kd-s0")
    assert load_checkpoint(folder / "checkpoints/last.pt")["epoch"] == 2
    assert [json.loads(x)["epoch"] for x in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_adapt_cli_checkpoint_distils(copied, tmp_path, capsys):
    cfg_file = tmp_path / "p.yaml"
    cfg_file.write_text(yaml.safe_dump(pipe(copied)))
    assert main(["adapt", "--config", str(cfg_file), "aid.lambda_kd=0.5"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("adapted teacher:"))
    teacher_pt = line.split()[2]
    assert Path(teacher_pt).is_file() and Path(teacher_pt).parent.name.startswith("adapt-")
    kd = {"data": {"name": "digits", "augment": False}, "model": {"name": "cnn_tiny"},
          "teacher": {"name": "cnn_small"}, "method": {"name": "kd"}, "sched": {"name": "cosine"},
          "train": {"epochs": 1, "device": "cpu", "progress": False, "tensorboard": False},
          "output": {"dir": str(tmp_path / "runs"), "name": "kd"}}
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(kd))
    assert main(["distill", "--config", str(tmp_path / "kd.yaml"), f"teacher.checkpoint={teacher_pt}"]) == 0
    assert (tmp_path / "runs/kd/summary.json").is_file()
    assert main(["eval", teacher_pt, "--json"]) == 0


def test_projection_mode_composes_with_logit_methods(copied):
    res = run(pipe(copied, aid={"objective": "projection", "alpha": 0.5}))
    assert {n for n, s in res["stages"].items() if s in TRAINED} == {"adapt", "aid-kd-s0"}
    from aidkd.aid import TargetTeacher

    t = TargetTeacher.load(stage_dir(res, "adapt") / "teacher.pt")
    assert t.log_targets.shape[1] == 10 and torch.isfinite(t.log_targets).all()
    assert res["results"]["methods"][0]["aid"]["last"][0] > 10
    with pytest.raises(UserError, match="fitnet.*features"):
        pipeline_config_from_dict(pipe(copied, aid={"objective": "projection"}, methods=["fitnet"]))
    with pytest.raises(UserError, match="augment"):
        pipeline_config_from_dict(pipe(copied, aid={"objective": "projection"}, base={"data": {"augment": True}}))


def test_mcmi_mode_composes_with_logit_methods(copied):
    """aid.objective mcmi: only the adapt stage and the distillation from it rerun; the adapted teacher is an engine
    checkpoint; the report and the table give the teacher's I_T before and after."""
    res = run(pipe(copied, aid={"objective": "mcmi", "epochs": 1}))
    assert {n for n, s in res["stages"].items() if s in TRAINED} == {"adapt", "aid-kd-s0"}
    ck = load_checkpoint(stage_dir(res, "adapt") / "teacher.pt")
    assert ck["format"] == FORMAT and ck["arch"] == "cnn_small"
    rep = json.loads((stage_dir(res, "adapt") / "report.json").read_text())
    assert rep["objective"] == "mcmi" and rep["params"]["mcmi_weight"] == 0.25 and rep["params"]["tau"] == 1.0
    assert rep["teacher_info_before"] > 0 and rep["teacher_info_after"] > 0 and "balanced" not in rep
    assert "I_T" in Path(res["table"]).read_text()
    assert res["results"]["methods"][0]["aid"]["last"][0] > 10


def test_analyze_cli_writes_json_and_pngs(first, tmp_path, capsys):
    _, res = first
    t0 = stage_dir(res, "teacher") / "checkpoints/best.pt"
    ref = stage_dir(res, "reference") / "checkpoints/best.pt"
    adapted = stage_dir(res, "adapt") / "teacher.pt"
    out = tmp_path / "an"
    assert main(["analyze", "--teacher", str(t0), "--student", str(ref), "--out", str(out), "--split", "test"]) == 0
    a = json.loads((out / "analysis.json").read_text())
    assert abs(a["kd"] - a["cs"] - a["ic"]) < 1e-6 and a["dataset"] == "digits" and len(a["per_class"]["ic"]) == 10
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "components.png" in pngs and sum(p.startswith("inner_class_") for p in pngs) == 2
    assert a["teacher_info"] > 0 and a["student_info"] > 0
    assert 0 < a["agreement"] <= 1 and len(a["per_class"]["agreement"]) == 10  # teacher and its KD student agree
    assert "inner-class agreement rho" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["analyze", "--teacher", str(t0), "--json", "--out", str(tmp_path / "t0"), "--split", "test"]) == 0
    alone = json.loads(capsys.readouterr().out)  # I_T of any checkpoint, without a student
    assert alone["teacher_info"] == pytest.approx(a["teacher_info"], rel=1e-9)
    lad = tmp_path / "ladder"
    assert main(["analyze", "--ladder", "--teacher", f"t0={t0}", "--teacher", f"adapted={adapted}", "--student",
                 str(ref), "--distilled", f"t0={ref}", "--out", str(lad)]) == 0
    j = json.loads((lad / "ladder.json").read_text())
    assert len(j["rows"]) == 2 and len(j["rows_distilled"]) == 1
    assert (lad / "ladder.png").stat().st_size > 0 and (lad / "ladder_distilled.png").is_file()


def test_bad_pipeline_key_is_one_line(tmp_path, capsys):
    d = pipe(tmp_path / "o")
    d["teacher"]["epoch"] = 3
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d))
    assert main(["pipeline", "--config", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "teacher.epoch" in err and "epochs" in err
    assert not (tmp_path / "o").exists()
    assert main(["pipeline", "--config", str(f.with_name("missing.yaml"))]) == 2


def test_shipped_configs_resolve_and_validate():
    assert resolve_config_path("pipeline/digits_quick") == resolve_config_path("configs/pipeline/digits_quick.yaml")
    assert load_config("fmnist/teacher").model.name and load_config("fmnist/kd").method.name == "kd"
    names = [n for n in shipped_configs() if n.startswith("pipeline/")]
    assert {"pipeline/digits_quick", "pipeline/fmnist"} <= set(names)
    for n in names:
        cfg = load_pipeline_config(n)
        assert cfg.methods and cfg.seeds
    with pytest.raises(UserError, match="not found"):
        resolve_config_path("pipeline/no_such_config")


def test_distillations_run_in_a_process_pool(copied):
    """The last wave (the distillations) through a process pool: the same stages, the same folders."""
    from aidkd.stages import PoolExecutor

    d = pipe(copied, methods=[{"name": "kd", "params": {"temperature": 2.0}}])
    res = run(d, executor=PoolExecutor(2))
    assert {n for n, s in res["stages"].items() if s in TRAINED} == {"kd-s0", "aid-kd-s0"}
    again = run(d)  # found finished by the in-process plan
    assert set(again["stages"].values()) <= {"skipped", "reused"}
    assert [s["dir"] for s in again["results"]["stages"]] == [s["dir"] for s in res["results"]["stages"]]
    assert list(res["stages"]) == ["teacher", "vanilla-s0", "reference", "adapt", "kd-s0", "aid-kd-s0"]


def test_teacher_cache_with_augmentation_serves_t0_the_adapted_teacher_and_the_adaptation(tmp_path):
    """``teacher.cache: views`` with augmented data: the KD students read T0's view cache and the AID students the
    adapted teacher's own; the adaptation reads T0's logits from the same cache (one cache of T0 is built)."""
    import os

    d = pipe(tmp_path / "out", base={"data": {"augment": True}}, teacher={"cache": "views"},
             aid={"objective": "inner_class"})  # its L_CS term reads T0
    res = run(d)
    kd = res["results"]["methods"][0]
    assert kd["aid"]["last"][0] > 10 and kd["baseline"]["last"][0] > 10
    caches = sorted(Path(os.environ["AIDKD_CACHE"]).glob("*/info.json"))
    assert len(caches) == 2, caches  # T0's (built by the adapt stage or the first KD run, read by both) and T's
    rec = json.loads((stage_dir(res, "adapt") / "stage.json").read_text())
    assert rec["config"]["t0_cache"] == "views"
    views = [json.loads(c.read_text())["shape"][1] for c in caches]
    assert views == [9, 9]  # digits: crop padding 1, no flip


def test_published_aid_by_default_with_the_vanilla_student_and_the_cost_rows(tmp_path):
    """The default aid section is the published AID: the teacher fine-tuned with the KD loss towards the vanilla
    student of the first seed (its run reused as S_p, not trained twice); with takd_assistant, TAKD runs beside,
    and the cost table gives AID's total against TAKD's and AID's own time against KD's."""
    d = pipe(tmp_path / "out", takd_assistant="cnn_mini")
    d["aid"] = {"epochs": 1}
    res = run(d)
    st = res["stages"]
    assert list(st) == ["teacher", "vanilla-s0", "reference", "adapt", "takd-assistant", "kd-s0", "aid-kd-s0",
                        "takd-s0"]
    assert st["reference"] == "reused" and stage_dir(res, "reference") == stage_dir(res, "vanilla-s0")
    r = res["results"]
    assert r["aid"]["objective"] == "kd" and (r["aid"]["lambda_ce"], r["aid"]["lambda_kd"]) == (0.1, 0.9)
    assert r["reference"]["kind"] == "vanilla" and r["reference"]["model"] == "cnn_tiny" and not r["reference"]["proxy"]
    report = json.loads((stage_dir(res, "adapt") / "report.json").read_text())
    assert report["objective"] == "kd" and set(report["history"][0]) >= {"ce", "kd"}
    assert "ic" not in report["history"][0]
    assert report["train"]["split"] == "train" and report["eval_split"] == "test"
    from aidkd.engine.precision import resolve_precision

    assert report["precision"] == resolve_precision("auto", torch.device("cpu")).name  # the fine-tuning follows amp
    for key in ("teacher_acc", "kd", "cs", "ic", "teacher_info", "agreement"):
        assert math.isfinite(report[f"{key}_after"]) and math.isfinite(report["train"][f"{key}_after"])
    c = r["adaptation_cost"]
    wall = {s["stage"]: s["wall_time_s"] for s in r["stages"]}
    assert c["aid_own_s"] == pytest.approx(wall["adapt"] + wall["aid-kd-s0"])
    assert c["aid_total_s"] == pytest.approx(wall["vanilla-s0"] + wall["adapt"] + wall["aid-kd-s0"])
    assert c["takd_s"] == pytest.approx(wall["takd-assistant"] + wall["takd-s0"])
    assert c["aid_total_over_takd"] == pytest.approx(c["aid_total_s"] / c["takd_s"])
    assert c["aid_own_over_kd"] == pytest.approx(c["aid_own_s"] / wall["kd-s0"])
    assert 0 < c["fit_s"] < c["adapt_s"]  # the fine-tuning alone, inside the stage's time
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| test: before | test: after | train: before | train: after |" in table
    for part in ("inner-class agreement rho", "of TAKD; goal <= 0.35", "of which fine-tuning", "x KD; goal <= 1.3"):
        assert part in table, part
    assert "| TAKD (KD through cnn_mini) |" in table


def test_proxy_reference_of_another_architecture(tmp_path):
    """aid.reference_model trains S_p as a proxy of another architecture (the paper's Tables 8-9), named in the
    report; a moved top-level key is refused in one line naming its new place."""
    d = pipe(tmp_path / "out")
    d["aid"] = {"epochs": 1, "reference": "vanilla", "reference_model": "cnn_mini"}
    res = run(d)
    assert res["stages"]["reference"] == "ran" and stage_dir(res, "reference") != stage_dir(res, "vanilla-s0")
    ck = load_checkpoint(stage_dir(res, "reference") / "checkpoints/best.pt")
    assert ck["arch"] == "cnn_mini"
    r = res["results"]["reference"]
    assert r["model"] == "cnn_mini" and r["proxy"] and r["kind"] == "vanilla"
    assert "cnn_mini (a proxy)" in (tmp_path / "out" / "results.md").read_text()
    bad = pipe(tmp_path / "o2")
    bad["reference"] = "vanilla"
    with pytest.raises(UserError, match="aid.reference"):
        pipeline_config_from_dict(bad)
    with pytest.raises(UserError, match="unknown model"):
        pipeline_config_from_dict(pipe(tmp_path / "o3", aid={"reference_model": "no_such_net"}))
