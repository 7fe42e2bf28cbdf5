"""Figures of a run: ``curves.png``, the training curves read from a run's ``metrics.jsonl``.

Top: train / val / test top-1 accuracy per epoch. Bottom: the training loss components (``train.<name>``, the
weighted terms of the method, e.g. ``train.ce``, ``train.kd``), their sum ``train.loss``, and the val / test loss
where they were measured. Matplotlib runs on the Agg backend: no display is needed.
"""
from __future__ import annotations

import json
from pathlib import Path

#: record keys that are not loss components
_NOT_LOSSES = {"train.top1", "train.img_per_s", "train.loss"}


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (one JSON object per epoch), in order."""
    p = Path(path)
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.is_file() else []


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["epoch"], float(r[key])) for r in records if isinstance(r.get(key), (int, float))]
    return [e for e, _ in pts], [v for _, v in pts]


def plot_training_curves(run_dir: str | Path, path: str | Path | None = None) -> Path | None:
    """Write the training curves of the run in ``run_dir`` to ``path`` (default ``run_dir/curves.png``) and
    return it; None when the run has no metrics."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    if not records:
        return None
    plt = pyplot()
    fig, (acc, loss) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    for split, style in (("train", "-"), ("val", "--"), ("test", "-")):
        x, y = _series(records, f"{split}.top1")
        if x:
            acc.plot(x, y, style, marker="o" if split == "test" else None, ms=3, label=split)
    acc.set_ylabel("top-1 (%)")
    acc.set_title(f"{run_dir.name}: accuracy")
    acc.legend(fontsize=8)
    acc.grid(alpha=0.3)
    components = sorted({k for r in records for k in r if k.startswith("train.") and k not in _NOT_LOSSES})
    for key in components + ["train.loss"]:
        x, y = _series(records, key)
        if x:
            loss.plot(x, y, lw=2 if key == "train.loss" else 1, label=key)
    for key in ("val.loss", "test.loss"):
        x, y = _series(records, key)
        if x:
            loss.plot(x, y, "--", label=f"{key} (CE)")
    loss.set_xlabel("epoch")
    loss.set_ylabel("loss")
    loss.set_title("training loss components (weighted) and eval loss")
    loss.legend(fontsize=7, ncol=2)
    loss.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path) if path is not None else run_dir / "curves.png"
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out


__all__ = ["plot_training_curves", "pyplot", "read_metrics"]
