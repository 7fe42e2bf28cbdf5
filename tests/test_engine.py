"""The engine: training really learns, resume is exact, DDP matches one process, user errors are one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aidkd.cli import main
from aidkd.config import config_from_dict, load_config
from aidkd.engine import train
from aidkd.files.checkpoint import load_checkpoint, save_checkpoint
from aidkd.errors import UserError


def test_training_learns_digits(run_cfg):
    cfg = config_from_dict(run_cfg(train={"epochs": 4}, model={"name": "cnn_small"}))
    s = train(cfg)
    assert s["last_test_acc"] > 80.0  # chance is 10%
    recs = [json.loads(line) for line in Path(s["run_dir"], "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2, 3, 4]
    assert recs[-1]["train.loss"] < recs[0]["train.loss"]
    for f in ("config.yaml", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert Path(s["run_dir"], f).exists(), f
    summary = json.loads(Path(s["run_dir"], "summary.json").read_text())
    assert summary["selection"] == "last" and summary["world_size"] == 1 and "torch" in summary["versions"]


def test_validation_split_selects_best(run_cfg):
    cfg = config_from_dict(run_cfg(data={"val_split": 0.2}, train={"epochs": 2}))
    s = train(cfg)
    assert s["selection"] == "val" and s["last_val_acc"] is not None
    best = load_checkpoint(Path(s["run_dir"], "checkpoints/best.pt"))
    assert best["epoch"] == s["best_epoch"]


class _Stop(Exception):
    pass


def test_resume_is_exact(run_cfg, tmp_path):
    d = run_cfg(train={"epochs": 4}, data={"augment": True}, model={"name": "cnn_small"})
    full = train(config_from_dict({**d, "output": {"dir": str(tmp_path / "a"), "name": "r"}}))

    interrupted = config_from_dict({**d, "output": {"dir": str(tmp_path / "b"), "name": "r"}})

    def stop_after_two(epoch, record):
        if epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train(interrupted, on_epoch_end=stop_after_two)
    assert load_checkpoint(tmp_path / "b/r/checkpoints/last.pt")["epoch"] == 2
    assert not (tmp_path / "b/r/summary.json").exists()
    last = load_checkpoint(tmp_path / "b/r/checkpoints/last.pt")
    assert "scaler" not in last
    save_checkpoint({**last, "scaler": {}}, tmp_path / "b/r/checkpoints/last.pt")  # as older versions wrote it
    resumed = train(interrupted)
    a = load_checkpoint(Path(full["run_dir"], "checkpoints/last.pt"))["model"]
    b = load_checkpoint(Path(resumed["run_dir"], "checkpoints/last.pt"))["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    recs = [json.loads(line) for line in (tmp_path / "b/r/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2, 3, 4]


def test_finished_run_is_not_overwritten(run_cfg):
    cfg = config_from_dict(run_cfg(train={"epochs": 1}))
    s = train(cfg)
    before = Path(s["run_dir"], "checkpoints/last.pt").read_bytes()
    with pytest.raises(UserError, match="--overwrite"):
        train(cfg)
    assert Path(s["run_dir"], "checkpoints/last.pt").read_bytes() == before
    train(cfg, overwrite=True)


def test_distill_kd_runs_from_teacher_checkpoint(run_cfg, tmp_path):
    t = train(config_from_dict(run_cfg(model={"name": "cnn_small"}, output={"dir": str(tmp_path), "name": "t"})))
    ck = str(Path(t["run_dir"], "checkpoints/last.pt"))
    s = train(config_from_dict(run_cfg(method={"name": "kd"}, teacher={"name": "cnn_small", "checkpoint": ck})))
    assert s["last_test_acc"] > 30.0
    last = load_checkpoint(Path(s["run_dir"], "checkpoints/last.pt"))
    assert not any(k.startswith("teacher") for k in last["method_state"])  # the teacher is never checkpointed


def test_atomic_checkpoint_leaves_no_partial_file(tmp_path):
    p = tmp_path / "x.pt"
    save_checkpoint({"a": torch.ones(3)}, p)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint({"a": Boom()}, p)
    assert torch.equal(load_checkpoint(p)["a"], torch.ones(3))
    assert [f.name for f in tmp_path.iterdir()] == ["x.pt"]


# ----------------------------------------------------------------------------------------------- config and CLI
def test_config_overrides_and_errors(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  name: resnet8\noptim:\n  lr: 0.05\n")
    cfg = load_config(f, ["optim.lr=0.1", "sched.milestones=[5, 8]", "train.amp=off"])
    assert cfg.optim.lr == 0.1 and cfg.sched.milestones == [5, 8] and cfg.model.name == "resnet8"
    with pytest.raises(UserError, match=r"unknown key 'optim.lrr'.*allowed: .*lr"):
        load_config(f, ["optim.lrr=0.1"])
    with pytest.raises(UserError, match=r"optim.lr: .*greater than 0"):
        load_config(f, ["optim.lr=-1"])
    with pytest.raises(UserError, match=r"optim.name: .*'sgd' or 'adamw'"):
        load_config(f, ["optim.name=lion"])
    with pytest.raises(UserError, match="key.path=value"):
        load_config(f, ["optim.lr"])


def _cli_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("aidkd: error: "), err
    return err


def test_cli_user_errors(capsys, tmp_path, run_cfg):
    import yaml

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(run_cfg()))
    assert "not found" in _cli_error(capsys, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert "unknown key" in _cli_error(capsys, ["train", "--config", str(base), "optim.lrr=1"])
    assert "unknown model 'resnet9'" in _cli_error(capsys, ["train", "--config", str(base), "model.name=resnet9"])
    assert "unknown dataset" in _cli_error(capsys, ["train", "--config", str(base), "data.name=mnist9"])
    err = _cli_error(capsys, ["train", "--config", str(base), "data.name=cifar100", f"data.root={tmp_path}/c",
                              "data.download=false"])
    assert "cifar-100-python" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert "cannot be read" in _cli_error(capsys, ["eval", str(bad), "--model", "cnn_tiny", "--data", "digits"])
    assert "not found" in _cli_error(capsys, ["eval", str(tmp_path / "missing.pt")])
    assert "needs a teacher" in _cli_error(capsys, ["distill", "--config", str(base), "method.name=kd"])
    assert "unknown suite 'nosuch'" in _cli_error(capsys, ["bench", "nosuch"])
    # a teacher checkpoint of another architecture: a mismatch naming a key
    assert main(["train", "--config", str(base), "output.name=t", "train.epochs=1"]) == 0
    ck = tmp_path / "runs/t/checkpoints/last.pt"
    err = _cli_error(capsys, ["distill", "--config", str(base), "method.name=kd", "teacher.name=cnn_large",
                              f"teacher.checkpoint={ck}", "output.name=s"])
    assert "cnn_large" in err or "shape" in err or "key" in err
    # a finished run directory is not overwritten
    assert "--overwrite" in _cli_error(capsys, ["train", "--config", str(base), "output.name=t", "train.epochs=1"])
    capsys.readouterr()
    assert main(["eval", str(ck), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["split"] == "test" and 0 <= res["top1"] <= 100


def test_console_script_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "aidkd.cli", "train", "--config", str(tmp_path / "x.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0


# ----------------------------------------------------------------------------------------------------- DDP (gloo)
def test_ddp_two_processes_match_one(run_cfg, tmp_path):
    """torchrun with 2 CPU processes (gloo) gives the same weights as 1 process with the same global batch (in fp32:
    under bf16 autocast the two reduction orders round differently)."""
    import yaml

    d = run_cfg(model={"name": "mlp"}, data={"train_subset": 1024, "batch_size": 64},
                train={"epochs": 2, "amp": "off"}, optim={"lr": 0.1})
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(yaml.safe_dump(d))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "aidkd.cli", "train", "--config", str(cfg_file), "output.name=one"],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "aidkd.cli", "train", "--config", str(cfg_file), "output.name=two"],
                         capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_checkpoint(tmp_path / "runs/one/checkpoints/last.pt")["model"]
    b = load_checkpoint(tmp_path / "runs/two/checkpoints/last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    s2 = json.loads((tmp_path / "runs/two/summary.json").read_text())
    s1 = json.loads((tmp_path / "runs/one/summary.json").read_text())
    assert s2["world_size"] == 2 and abs(s1["last_test_acc"] - s2["last_test_acc"]) < 0.5


def test_takd_chain_links_and_skips(run_cfg, tmp_path):
    from aidkd.takd import run_takd

    t = train(config_from_dict(run_cfg(model={"name": "cnn_small"}, output={"dir": str(tmp_path), "name": "t"},
                                       train={"epochs": 1})))
    ck = str(Path(t["run_dir"], "checkpoints/best.pt"))
    cfg = config_from_dict(run_cfg(method={"name": "kd"}, teacher={"name": "cnn_small", "checkpoint": ck},
                                   train={"epochs": 1}, output={"name": "chain"}))
    links = run_takd(cfg, ["cnn_tiny"])
    assert [Path(s["run_dir"]).name for s in links] == ["chain-link1-cnn_tiny", "chain-link2-cnn_tiny"]
    import yaml

    second = yaml.safe_load(Path(links[1]["run_dir"], "config.yaml").read_text())
    assert second["teacher"]["checkpoint"] == str(Path(links[0]["run_dir"], "checkpoints/best.pt"))
    mtime = Path(links[0]["run_dir"], "summary.json").stat().st_mtime
    assert run_takd(cfg, ["cnn_tiny"])[0]["run_dir"] == links[0]["run_dir"]  # finished links are skipped
    assert Path(links[0]["run_dir"], "summary.json").stat().st_mtime == mtime
    with pytest.raises(UserError, match="assistant"):
        run_takd(cfg, [])


def test_eval_data_config_follows_the_checkpoint(tmp_path):
    """The split of a checkpoint's own data config: its held-out and training-subset options stay for its own
    dataset, are dropped for another one (only root, batch sizes and workers carry over); overrides apply last;
    evaluation never augments or balances. `aidkd eval` and `aidkd analyze` both build their split this way."""
    from aidkd.files.checkpoint import FORMAT
    from aidkd.checkpoint_eval import eval_data_config

    data = {"name": "digits", "root": str(tmp_path), "batch_size": 32, "val_split": 0.2, "train_subset": 500,
            "augment": True, "balanced": [10, 4]}
    ck = {"format": FORMAT, "config": json.dumps({"data": data})}
    same = eval_data_config(None, [None, ck])
    assert (same.name, same.val_split, same.train_subset, same.batch_size) == ("digits", 0.2, 500, 32)
    assert not same.augment and same.balanced is None
    assert eval_data_config("digits", [ck]).train_subset == 500
    other = eval_data_config("fashion_mnist", [ck], ["data.eval_batch_size=7"])
    assert (other.name, other.val_split, other.train_subset) == ("fashion_mnist", 0.0, None)
    assert (other.root, other.batch_size, other.eval_batch_size) == (str(tmp_path), 32, 7)
    with pytest.raises(UserError, match="no dataset"):
        eval_data_config(None, [{"model": {}}])
    with pytest.raises(UserError, match=r"bad data option: unknown key 'bogus' \(allowed: .*batch_size"):
        eval_data_config("digits", [], ["data.bogus=1"])


def test_parameter_errors_name_the_key_and_the_allowed_ones():
    """Method parameters are reported by the same formatter as configs."""
    from aidkd.methods import MethodContext, build_method
    from aidkd.models import create_model

    ctx = MethodContext(num_classes=10, input_size=(1, 8, 8))
    m = create_model("cnn_tiny", num_classes=10, in_chans=1, input_hw=8)
    with pytest.raises(UserError, match=r"method 'kd': unknown key 'temprature'; did you mean 'temperature'\? \(allowed: .*temperature"):
        build_method("kd", m, m, {"temprature": 4}, ctx)
    with pytest.raises(UserError, match=r"aid\.lambda_ic: .*greater than or equal to 0 \(got -1\)"):
        build_method("aid_online", m, m, {"aid": {"lambda_ic": -1}}, ctx)


def test_engine_gives_crd_the_training_labels(run_cfg):
    """The engine passes every training label through the MethodContext: CRD's label bank is full from the first
    step (two steps of one epoch fill only two batches' slots by themselves)."""
    t = train(config_from_dict(run_cfg(output={"name": "t"}, train={"epochs": 1})))
    s = train(config_from_dict(run_cfg(
        output={"name": "crd"}, method={"name": "crd", "params": {"nce_k": 16, "feat_dim": 8}},
        teacher={"name": "cnn_tiny", "checkpoint": str(Path(t["run_dir"], "checkpoints/best.pt"))},
        train={"epochs": 1, "max_steps_per_epoch": 2})))
    bank = load_checkpoint(Path(s["run_dir"], "checkpoints/last.pt"))["method_state"]["memory.labels"]
    assert (bank >= 0).all() and len(torch.unique(bank)) == 10


class _Pickled:  # any object: unpickling it could run code
    pass


def test_a_checkpoint_with_pickled_objects_is_refused_as_unsafe(tmp_path):
    from aidkd.files.checkpoint import read_checkpoint

    p = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": _Pickled()}, p)
    with pytest.raises(UserError, match=r"is unsafe: .*_Pickled.*refused"):
        read_checkpoint(p)
    ok = tmp_path / "numpy.pt"
    import numpy as np

    torch.save({"model": {"w": torch.ones(2)}, "best_acc": np.float64(70.5)}, ok)  # numpy scalars are allowed
    assert float(read_checkpoint(ok)["best_acc"]) == 70.5


def test_ema_is_the_average_of_the_trajectory_and_leaves_training_unchanged(run_cfg, tmp_path):
    """``train.ema_decay``: the run evaluates and saves d * ema + (1 - d) * w after every step (parameters and
    batch-norm statistics, the first step copied), the training weights are those of the same run without it,
    and an interrupted run resumes to the same average."""
    d = 0.7
    base = run_cfg(model={"name": "cnn_small"}, sched={"name": "constant"},
                   train={"epochs": 1, "max_steps_per_epoch": 3})

    def run(name: str, steps: int, ema: float | None = None, **train_kw) -> dict:
        cfg = {**base, "train": {**base["train"], "max_steps_per_epoch": steps, "ema_decay": ema, **train_kw},
               "output": {"dir": str(tmp_path), "name": name}}
        train(config_from_dict(cfg))
        return load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")

    ws = [run(f"w{n}", n)["method_state"] for n in (1, 2, 3)]  # the training weights after 1, 2, 3 steps
    ema = run("ema", 3, d)
    raw = {k.removeprefix("student."): v for k, v in ema["method_state"].items() if k.startswith("student.")}
    for k, v in raw.items():  # the same training
        assert torch.equal(v, ws[2][f"student.{k}"]), k
    for k, v in ema["model"].items():
        if not v.is_floating_point():
            continue
        w1, w2, w3 = (w[f"student.{k}"] for w in ws)
        want = d * (d * w1 + (1 - d) * w2) + (1 - d) * w3
        torch.testing.assert_close(v, want, rtol=1e-5, atol=1e-6, msg=k)
    assert not all(torch.equal(v, raw[k]) for k, v in ema["model"].items())
    s = json.loads((tmp_path / "ema" / "summary.json").read_text())
    plain = json.loads((tmp_path / "w3" / "summary.json").read_text())
    assert s["last_test_raw_acc"] == plain["last_test_acc"] and "last_test_raw_acc" not in plain

    # an interrupted run resumes to the same average (the average is in last.pt)
    long = {**base, "train": {**base["train"], "epochs": 3, "ema_decay": d}}
    full = train(config_from_dict({**long, "output": {"dir": str(tmp_path / "a"), "name": "r"}}))
    cut = config_from_dict({**long, "output": {"dir": str(tmp_path / "b"), "name": "r"}})

    def stop_after_one(epoch, record):
        raise _Stop

    with pytest.raises(_Stop):
        train(cut, on_epoch_end=stop_after_one)
    resumed = train(cut)
    a = load_checkpoint(Path(full["run_dir"], "checkpoints/last.pt"))
    b = load_checkpoint(Path(resumed["run_dir"], "checkpoints/last.pt"))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["ema_state"]["steps"] == b["ema_state"]["steps"] == 9
