"""``aidkd demo``: the whole KD story on scikit-learn's digits (ships with scikit-learn, no network).

Trains a teacher, a vanilla student and a KD student (3 short runs, about a minute on 2 CPU cores) and prints a
results table. Finished runs are reused when the demo is run again.
"""
from __future__ import annotations

from pathlib import Path

from .config import config_from_dict
from .stages import StageStore, train_stage
from .stages.train import summary_of

TEACHER, STUDENT = "cnn_large", "cnn_tiny"


def _cfg(out: str, name: str, model: str, method: dict, epochs: int, seed: int, teacher_ckpt: str | None = None):
    d = {
        "data": {"name": "digits", "batch_size": 64, "val_split": 0.0},
        "model": {"name": model},
        "method": method,
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "sched": {"name": "cosine", "warmup_epochs": 1},
        "train": {"epochs": epochs, "seed": seed, "device": "cpu", "progress": False, "tensorboard": False},
        "output": {"dir": out, "name": name},
    }
    if teacher_ckpt:
        d["teacher"] = {"name": TEACHER, "checkpoint": teacher_ckpt}
    return config_from_dict(d, "demo")


def _run(cfg) -> dict:
    res = train_stage(StageStore(cfg.output.dir, verbose=False), cfg.output.name, cfg,
                      folder=Path(cfg.output.dir) / cfg.run_name())
    return summary_of(res)


def run_demo(out: str = "runs/demo", epochs: int = 30, seed: int = 0) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]aidkd demo[/]: digits (8x8, 10 classes), teacher {TEACHER}, student {STUDENT}, {epochs} epochs")
    t = _run(_cfg(out, "teacher", TEACHER, {"name": "vanilla"}, epochs, seed))
    console.print(f"teacher done: {t['last_test_acc']:.2f}%")
    teacher_ckpt = str(Path(t["run_dir"]) / "checkpoints" / "last.pt")
    v = _run(_cfg(out, "student_vanilla", STUDENT, {"name": "vanilla"}, epochs, seed))
    console.print(f"vanilla student done: {v['last_test_acc']:.2f}%")
    k = _run(_cfg(out, "student_kd", STUDENT, {"name": "kd"}, epochs, seed, teacher_ckpt))
    rows = [("teacher", TEACHER, "vanilla", t), ("student", STUDENT, "vanilla", v), ("student", STUDENT, "kd", k)]
    table = Table(title="aidkd demo: test accuracy (%) on digits, last epoch")
    for col in ("role", "model", "method", "test top-1", "wall s"):
        table.add_column(col)
    for role, model, method, s in rows:
        table.add_row(role, model, method, f"{s['last_test_acc']:.2f}", f"{s['wall_time_s']:.1f}")
    console.print(table)
    console.print(f"runs written under {out}/")
    return [s for *_, s in rows]
