"""The stage layer: the reuse contract (fingerprint over config and file contents, folders, records), the
training case, the logits stage and the teacher kinds it feeds, and the executors (pool, submitit's local one)."""
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from aidkd.config import config_from_dict
from aidkd.errors import UserError
from aidkd.stages import (
    RECORD,
    InProcessExecutor,
    PoolExecutor,
    StageStore,
    SubmititExecutor,
    dict_hash,
    logits_stage,
    make_executor,
    train_stage,
)


def copy_stage(store: StageStore, name: str, src: Path, calls: list):
    """A toy stage kind: copies the bytes of ``src`` (doubled) into its folder; counts its runs in ``calls``."""
    def run(folder: Path, overwrite: bool):
        calls.append(name)
        (folder / "out.bin").write_bytes(src.read_bytes() * 2)
        return {"checkpoint": "out.bin", "size": src.stat().st_size}, "ran"

    return store.run(name, "copy", {"times": 2}, {"src": src}, run)


def test_reuse_contract(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"abc")
    calls = []
    store = StageStore(tmp_path / "root", verbose=False)
    a = copy_stage(store, "a", src, calls)
    assert a.status == "ran" and a.checkpoint.read_bytes() == b"abcabc" and a.result["size"] == 3
    assert a.dir.name == f"a-{a.fingerprint[:10]}" and json.loads((a.dir / RECORD).read_text())["fingerprint"] == a.fingerprint
    assert copy_stage(store, "a", src, calls).status == "skipped"
    b = copy_stage(store, "b", src, calls)  # the same computation under another name: found, not run again
    assert b.status == "reused" and b.dir == a.dir and calls == ["a"]
    # the folder can move: paths are not in the fingerprint
    shutil.move(str(tmp_path / "root"), str(tmp_path / "moved"))
    moved = StageStore(tmp_path / "moved", verbose=False)
    assert copy_stage(moved, "a", src, calls).status == "skipped" and calls == ["a"]
    # the same path with new contents is another input: a new folder, the old output kept
    src.write_bytes(b"xyz!")
    c = copy_stage(moved, "a", src, calls)
    assert c.status == "ran" and c.dir != a.dir and c.checkpoint.read_bytes() == b"xyz!xyz!"
    assert (tmp_path / "moved" / a.dir.name / "out.bin").read_bytes() == b"abcabc"
    # a folder without its record is unfinished: run again
    (c.dir / RECORD).unlink()
    assert copy_stage(moved, "a", src, calls).status == "ran" and calls == ["a", "a", "a"]
    # reuse_only finds finished stages and runs nothing
    ro = StageStore(tmp_path / "moved", verbose=False, reuse_only=True)
    assert copy_stage(ro, "a", src, calls).status == "skipped"
    src.write_bytes(b"new")
    assert copy_stage(ro, "a", src, calls) is None and len(calls) == 3
    with pytest.raises(UserError, match="not found"):
        copy_stage(store, "a", tmp_path / "missing.bin", calls)


def test_train_stage_follows_the_teacher_file_and_logits_teacher(run_cfg, tmp_path):
    store = StageStore(tmp_path / "st", verbose=False)
    teacher = train_stage(store, "teacher", config_from_dict(run_cfg(model={"name": "cnn_small"})))
    assert teacher.status == "ran" and teacher.checkpoint.is_file()
    data = run_cfg()["data"]
    lg = logits_stage(store, "logits", teacher.checkpoint, data)
    assert lg.result["shape"][2] == 10 and lg.result["num_params"] > 0 and lg.kind == "teacher-views"
    # the table is the teacher's own outputs on the training views, in float32
    from aidkd.config import DataConfig
    from aidkd.data import build_data
    from aidkd.teachers import identity_logits, serve_views
    from aidkd.stages.artifacts import load_model

    d = build_data(DataConfig(**data), device="cpu")
    model = load_model(teacher.checkpoint, d.spec).eval()
    table = serve_views(lg.checkpoint, d.train)
    stored = identity_logits(lg.checkpoint)
    with torch.no_grad():
        for batch in d.train.as_eval():
            want = model(batch.images)
            torch.testing.assert_close(table.logits(dataclasses.replace(batch, view=torch.zeros_like(batch.index))), want)
            torch.testing.assert_close(stored[batch.index], want)
    # a student distilled from the table (teacher.kind: logits) learns
    kd = run_cfg(method={"name": "kd"}, teacher={"kind": "logits", "checkpoint": str(lg.checkpoint)},
                 train={"epochs": 3})
    s = train_stage(store, "kd", config_from_dict(kd))
    assert s.status == "ran" and s.result["summary"]["last_test_acc"] > 50
    assert train_stage(store, "kd", config_from_dict(kd)).status == "skipped"
    # the table is keyed by the weights' content: a rewritten file with the same weights finds it, other weights
    # at the same path invalidate it
    ck = torch.load(teacher.checkpoint, weights_only=True)
    ck["epoch"] += 1
    torch.save(ck, teacher.checkpoint)
    assert logits_stage(store, "logits", teacher.checkpoint, data).status == "skipped"
    first = next(iter(ck["model"]))
    ck["model"][first] = ck["model"][first] + 0.01
    torch.save(ck, teacher.checkpoint)
    assert logits_stage(store, "logits", teacher.checkpoint, data).status == "ran"
    # a table of another training split is refused in one line
    other = dict(data, val_split=0.5)
    lg_other = logits_stage(store, "logits-other", teacher.checkpoint, other)
    bad = run_cfg(method={"name": "kd"}, teacher={"kind": "logits", "checkpoint": str(lg_other.checkpoint)})
    with pytest.raises(UserError, match="samples"):
        train_stage(store, "bad", config_from_dict(bad))
    with pytest.raises(UserError, match="teacher.checkpoint"):
        config_from_dict(run_cfg(teacher={"kind": "logits"}))


def test_executors_map_in_order(tmp_path):
    items = [{"a": i} for i in range(4)]
    want = [dict_hash(x) for x in items]
    assert InProcessExecutor().map(dict_hash, items) == want
    assert PoolExecutor(2).map(dict_hash, items) == want
    assert make_executor("pool", 1).map(dict_hash, []) == []
    sub = SubmititExecutor(tmp_path / "jobs", cluster="local", timeout_min=5)
    assert sub.map(dict_hash, items) == want
    with pytest.raises(UserError, match="unknown executor"):
        make_executor("threads")
    with pytest.raises(UserError, match="folder"):
        make_executor("slurm")


def test_named_folder_of_another_config_is_refused_and_kept(run_cfg, tmp_path):
    store = StageStore(tmp_path / "runs", verbose=False)
    folder = tmp_path / "runs" / "mine"
    first = train_stage(store, "mine", config_from_dict(run_cfg(train={"epochs": 1})), folder=folder)
    record = (folder / RECORD).read_bytes()
    with pytest.raises(UserError, match="--overwrite"):
        train_stage(store, "mine", config_from_dict(run_cfg(train={"epochs": 1}, optim={"lr": 0.1})), folder=folder)
    assert (folder / RECORD).read_bytes() == record and first.checkpoint.is_file()
    again = train_stage(store, "mine", config_from_dict(run_cfg(train={"epochs": 1})), folder=folder)
    assert again.status == "skipped"
    redone = train_stage(StageStore(tmp_path / "runs", overwrite=True, verbose=False), "mine",
                         config_from_dict(run_cfg(train={"epochs": 1}, optim={"lr": 0.1})), folder=folder)
    assert redone.status == "ran" and json.loads((folder / RECORD).read_text())["fingerprint"] == redone.fingerprint


def test_a_damaged_finished_stage_is_rebuilt_not_reused(run_cfg, tmp_path):
    """A stage whose checkpoint is gone is trained again (not reported finished); one whose summary.json is
    damaged and whose record is lost resumes from its last checkpoint, which rewrites the summary."""
    store = StageStore(tmp_path / "st", verbose=False)
    cfg = config_from_dict(run_cfg())
    first = train_stage(store, "a", cfg)
    (first.dir / "checkpoints" / "best.pt").unlink()
    again = train_stage(StageStore(tmp_path / "st", verbose=False), "a", cfg)
    assert again.status == "ran" and (again.dir / "checkpoints" / "best.pt").is_file()
    (again.dir / RECORD).unlink()
    (again.dir / "summary.json").write_bytes(b"\x00\xff{")
    third = train_stage(StageStore(tmp_path / "st", verbose=False), "a", cfg)
    assert third.status == "resumed" and json.loads((third.dir / "summary.json").read_text())["epochs"] == 2


def test_a_stage_record_that_is_not_an_object_is_no_record(tmp_path):
    calls: list = []
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    store = StageStore(tmp_path / "st", verbose=False)
    res = copy_stage(store, "c", src, calls)
    (res.dir / RECORD).write_text("[1, 2, 3]")
    again = copy_stage(StageStore(tmp_path / "st", verbose=False), "c", src, calls)
    assert again.status == "ran" and calls == ["c", "c"]


def test_the_same_run_in_two_folders_writes_the_same_checkpoint(run_cfg, tmp_path):
    import hashlib

    from aidkd.engine import train

    digests = []
    for where in ("one", "two"):
        s = train(config_from_dict(run_cfg(output={"dir": str(tmp_path / where), "name": "r"},
                                           train={"progress": where == "one"})))
        digests.append(hashlib.sha256(Path(s["run_dir"], "checkpoints", "best.pt").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_a_run_killed_between_its_last_checkpoint_and_its_summary_resumes_to_the_same_summary(run_cfg):
    """No epoch is left to run: the resumed run still reports its last evaluation, and writes its plot."""
    from aidkd.engine import train

    cfg = config_from_dict(run_cfg())
    first = train(cfg)
    run_dir = Path(first["run_dir"])
    (run_dir / "summary.json").unlink()
    (run_dir / "curves.png").unlink()
    again = train(cfg)
    keys = ("best_acc", "best_epoch", "best_test_acc", "last_test_acc", "last_test_top5", "best_test_epoch_acc")
    assert {k: again[k] for k in keys} == {k: first[k] for k in keys} and again["last_test_acc"] is not None
    assert (run_dir / "curves.png").is_file()
