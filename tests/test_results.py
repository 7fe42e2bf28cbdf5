"""Results to look at: every run's training curves (curves.png) and ``aidkd report`` over runs and seeds."""
import shutil
import statistics

import pytest

from aidkd.cli import main
from aidkd.config import config_from_dict
from aidkd.engine import train
from aidkd.plots import plot_training_curves, read_metrics
from aidkd.runs_report import write_report


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of a vanilla student and one KD run from a 2-epoch teacher, on digits."""
    out = tmp_path_factory.mktemp("runs")
    base = {"data": {"name": "digits", "batch_size": 64, "augment": False, "val_split": 0.1},
            "optim": {"lr": 0.05}, "sched": {"name": "cosine"},
            "train": {"epochs": 2, "device": "cpu", "progress": False, "tensorboard": False}}

    def run(name, seed, **extra):
        d = {**base, "train": {**base["train"], "seed": seed}, "output": {"dir": str(out), "name": name}, **extra}
        return train(config_from_dict(d))

    t = run("teacher", 0, model={"name": "cnn_small"})
    v = [run(f"vanilla-s{s}", s, model={"name": "cnn_tiny"}) for s in (0, 1)]
    k = run("kd-s0", 0, model={"name": "cnn_tiny"}, method={"name": "kd"},
            teacher={"name": "cnn_small", "checkpoint": f"{t['run_dir']}/checkpoints/last.pt"})
    return out, t, v, k


def test_every_run_writes_its_training_curves(runs, tmp_path):
    out, t, v, k = runs
    for s in (t, *v, k):
        png = out / s["run_dir"].split("/")[-1] / "curves.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
    records = read_metrics(out / "kd-s0" / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2] and {"train.ce", "train.kd", "val.top1", "test.top1"} <= set(records[0])
    # the plot draws every series the metrics have: a component dropped from the figure would change the legend
    import matplotlib.pyplot as plt

    calls = []
    orig = plt.Axes.plot

    def spy(self, *a, **kw):
        calls.append(kw.get("label"))
        return orig(self, *a, **kw)

    plt.Axes.plot = spy
    try:
        assert plot_training_curves(out / "kd-s0", tmp_path / "c.png") == tmp_path / "c.png"
    finally:
        plt.Axes.plot = orig
    assert {"train", "val", "test", "train.ce", "train.kd", "train.loss", "test.loss (CE)"} <= set(calls)
    assert plot_training_curves(tmp_path) is None  # no metrics, no figure


def test_report_groups_seeds_and_writes_markdown(runs, tmp_path, capsys):
    out, _, v, k = runs
    md = tmp_path / "report.md"
    assert main(["report", str(out), "--out", str(md)]) == 0
    text = md.read_text()
    printed = capsys.readouterr().out
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln}
    vanilla = rows["cnn_tiny vanilla"]
    last = [s["last_test_acc"] for s in v]
    best = [s["best_test_acc"] for s in v]
    assert f"{statistics.fmean(last):.2f} ± {statistics.stdev(last):.2f}" in vanilla
    assert f"{statistics.fmean(best):.2f} ± {statistics.stdev(best):.2f} (val)" in vanilla
    assert " 0,1 " in vanilla
    assert f"{k['last_test_acc']:.2f}" in rows["cnn_tiny kd <- cnn_small"]
    assert "teacher (cnn_small vanilla)" in rows
    assert "cnn_tiny vanilla" in printed and "4 runs" in text.splitlines()[0]
    # never overwritten silently; --overwrite replaces; one run directory alone is a report too
    assert main(["report", str(out), "--out", str(md)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["report", k["run_dir"], "--out", str(md), "--overwrite"]) == 0
    assert "1 run)" in md.read_text()


def test_report_bad_input_is_a_user_error(runs, tmp_path, capsys):
    out, *_ = runs
    assert main(["report", str(tmp_path / "nope"), "--out", "-"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", "-"]) == 2
    assert "no finished run" in capsys.readouterr().err
    # the same run given twice through two paths counts once
    groups, written = write_report([out / "kd-s0", out], None)
    assert written is None and sum(len(g.runs) for g in groups) == 4
    # a copied run (same config and seed twice) is refused rather than counted twice
    shutil.copytree(out / "kd-s0", tmp_path / "copy" / "kd-s0")
    assert main(["report", str(out), str(tmp_path / "copy"), "--out", "-"]) == 2
    assert "same seed and config" in capsys.readouterr().err


def test_report_reads_only_regular_files(runs, tmp_path, capsys):
    """A FIFO (or a folder) named summary.json is not a run: it is skipped, never opened (a FIFO would block:
    the command runs in a process with a deadline)."""
    import os
    import subprocess
    import sys

    out, *_ = runs
    mixed = tmp_path / "mixed"  # the runs, with a FIFO and a folder of that name among them
    shutil.copytree(out, mixed)
    (mixed / "fifo_run").mkdir()
    os.mkfifo(mixed / "fifo_run" / "summary.json")
    (mixed / "dir_run" / "summary.json").mkdir(parents=True)
    r = subprocess.run([sys.executable, "-m", "aidkd.cli", "report", str(mixed / "fifo_run"), "--out", "-"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no finished run" in r.stderr
    r = subprocess.run([sys.executable, "-m", "aidkd.cli", "report", str(mixed), "--out", "-"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    groups, _ = write_report([mixed], None)
    assert sum(len(g.runs) for g in groups) == 4


@pytest.mark.parametrize("name,content", [
    ("summary.json", b"\x89PNG\r\n\x1a\n\x00\x00binary"),
    ("summary.json", b"[1, 2, 3]"),
    ("summary.json", b'{"seed": "zero", "arch": "cnn_tiny", "method": "kd"}'),
    ("summary.json", b'{"seed": 0, "last_test_acc": [90.0]}'),
    ("config.yaml", b"model: [unclosed\n"),
    ("config.yaml", b"- a list\n- not a config\n"),
])
def test_report_refuses_a_malformed_run_in_one_line(runs, tmp_path, capsys, name, content):
    """A run whose summary or config is malformed is named in one line (exit 2), whatever else the folder holds."""
    out, *_ = runs
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed)
    (mixed / "kd-s0" / name).write_bytes(content)
    assert main(["report", str(mixed), "--out", "-"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(mixed / "kd-s0" / name) in err and "Traceback" not in err
