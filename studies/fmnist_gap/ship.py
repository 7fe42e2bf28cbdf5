"""Teachers trained once, kept in the repository: :func:`ship_teachers` exports a profile's finished teacher stages
as safetensors into ``teachers/`` and records each in ``teachers/manifest.json`` (the file, its sha256, the
fingerprint of the train stage that made it, the recipe, its accuracy, wall time and precision). A later run of a
profile with the same teacher config verifies the file and uses it instead of training (:func:`.plan.shipped_teacher`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from aidkd.engine import read_summary
from aidkd.export import export_safetensors
from aidkd.files.checkpoint import atomic_write_text, read_json_object

from .plan import PROFILES, SHIPPED, JobId, check_profile, collect, ladder


def _recipe(profile: str, ckpt: int) -> str:
    p = PROFILES[profile]
    return (f"python -m studies.fmnist_gap --profile {profile} (teacher stage): the whole training split less the "
            f"fixed 10% validation, no augmentation, batch {p.get('teacher_batch_size', 128)}, SGD lr 0.05 momentum "
            f"0.9 wd 5e-4, cosine with 0.3 warm-up epochs, seed {ckpt}, {p['teacher_epochs']} epochs, CPU one thread")


def ship_teachers(profile: str, out: str | Path, folder: Path = SHIPPED, log=print) -> list[str]:
    """Export the finished, not yet shipped teachers of ``profile`` (stages under ``out``) into ``folder``; returns
    the names written. A teacher already in the manifest is left as it is."""
    p = check_profile(profile)
    R = collect(profile, out)
    manifest_path = folder / "manifest.json"
    manifest = read_json_object(manifest_path) or {}
    written = []
    for t in ladder(profile):
        job = JobId("teacher", teacher=t, ckpt=p.get("ckpt", 0))
        name = str(job)[len("teacher_"):]
        res = R.get(job)
        if name in manifest or res is None or res.kind != "train":
            continue
        weights, _ = export_safetensors(res.dir, out=folder / f"{name}.safetensors")
        s = read_summary(res.dir)
        manifest[name] = {
            "file": weights.name, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "stage_fingerprint": res.fingerprint, "val_top1_selected": s["best_acc"],
            "test_top1_last": s["last_test_acc"], "test_top1_selected": s["best_test_acc"], "epochs": s["epochs"],
            "wall_time_s": round(s["wall_time_s"], 1), "precision": s["precision"],
            "recipe": _recipe(profile, job.ckpt)}
        written.append(name)
        log(f"shipped {name}: {weights} ({manifest[name]['test_top1_last']:.2f}% test)")
    if written:
        atomic_write_text(manifest_path, json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    return written


__all__ = ["ship_teachers"]
