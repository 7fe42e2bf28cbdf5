"""``aidkd bench throughput``: images per second of one distillation step, side by side.

For each teacher -> student pair (batch 64, 32x32 inputs, 100 classes) it measures, in interleaved rounds
(a, b, c, d, a, b, c, d, ...), the median and range over rounds of:

* (a) aidkd's engine path in fp32: the in-memory loader with device-side crop + flip, the lean
  (batch-norm-folded) frozen teacher, KD, one SGD step, as the engine's training loop runs it (channels_last,
  ``train.amp=off``);
* (b) the same with the view-exact teacher cache (``teacher.cache=views``): the teacher's logits gathered
  for the sampled view. The cache is built for a small subset (``--cache-images``) because replay speed does
  not depend on how many views are stored; its build rate (teacher images per second) is reported
  separately, with what a whole CIFAR-100 build would take at that rate;
* (c) the loop of the common KD codebases: torchvision's ``CIFAR100`` dataset on files in the real format
  (written by the benchmark into a temporary folder), PIL transforms (RandomCrop(32, 4), RandomHorizontalFlip,
  ToTensor, Normalize), a ``DataLoader`` with 2 workers, the teacher under ``no_grad`` in fp32;
* (d) the student-only step (CE, no teacher, channels_last, fp32): the limit a perfect cache approaches;
* (a16), (b16), (d16): (a), (b) and (d) at the default precision, ``train.amp=auto``, where it is bf16 (CUDA, or
  a CPU with native bf16: :mod:`aidkd.engine.precision`); elsewhere they are left out and the report says why.

It prints a/c, b/c and b/d (and a16/c, b16/c, a16/a, b16/b, b16/d16), the CPU's capability and the peak memory, and writes a Markdown report with the command. The data
are random images (speed does not depend on their content); the models are randomly initialised.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import pickle
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms as T

from ..config import config_from_dict
from ..data.cifar import CIFAR100_MEAN, CIFAR100_STD
from ..engine import recipe
from ..engine.distributed import DistInfo
from ..engine.precision import cpu_capability, resolve_precision
from ..engine.trainer import train
from ..errors import UserError
from ..files.checkpoint import save_checkpoint
from ..files.rundir import check_report_file, write_report_text
from ..losses.kd import kd_loss
from ..models import create_model
from ..teachers import ModelTeacher
from ..teachers.cache import cache_root

PAIRS = (("resnet32x4", "resnet8x4"), ("resnet56", "resnet20"))
BATCH = 64
NUM_CLASSES = 100


# ------------------------------------------------------------------------------------------------------ data
def write_cifar100(root: Path, num_train: int, num_test: int = 64, seed: int = 0) -> Path:
    """Random images in CIFAR-100's on-disk format (``cifar-100-python/{train,test,meta}`` pickles of
    ``data`` N x 3072 uint8 and ``fine_labels``), readable by torchvision and by aidkd."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", num_train), ("test", num_test)):
        blob = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "fine_labels": (np.arange(n) % NUM_CLASSES).tolist(), "coarse_labels": [0] * n}
        with open(d / name, "wb") as f:
            pickle.dump(blob, f)
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(NUM_CLASSES)]}, f)
    return root


# ------------------------------------------------------------------------------------------------ the steps
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Variant:
    """One way of running a distillation step: ``next_step()`` runs one step; ``steps`` per round are timed."""

    def __init__(self, name: str, step: Callable[[], None]):
        self.name, self.step = name, step
        self.rates: list[float] = []
        self.peak_mb: float | None = None


def _engine_run(root: Path, teacher_ckpt: Path | None, teacher_name: str, student_name: str, method: str,
                device: torch.device, cache: str, train_subset: int | None, amp: str) -> recipe.TrainingRun:
    """A run of the engine's recipe (:func:`aidkd.engine.recipe.setup`) on the benchmark's CIFAR-100 files, one
    process, ``train.amp`` ``amp``; a teacher when ``teacher_ckpt`` is given."""
    teacher = {} if teacher_ckpt is None else {"name": teacher_name, "checkpoint": str(teacher_ckpt), "cache": cache}
    cfg = config_from_dict({
        "data": {"name": "cifar100", "root": str(root), "batch_size": BATCH, "download": False,
                 "train_subset": train_subset},
        "model": {"name": student_name}, "teacher": teacher, "method": {"name": method},
        "optim": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}, "sched": {"name": "constant"},
        "train": {"device": device.type, "amp": amp, "seed": 0, "progress": False, "tensorboard": False},
    })
    return recipe.setup(cfg, device, DistInfo(), log=lambda *a: None)


def _stepping(name: str, run: recipe.TrainingRun) -> Variant:
    """The variant that takes :func:`aidkd.engine.recipe.train_step` on the run's training batches."""
    it = _forever(run.data.train)
    run.method.train()
    return Variant(name, lambda: recipe.train_step(run, next(it), 0))


def _engine_variant(name: str, root: Path, teacher_ckpt: Path, teacher_name: str, student_name: str,
                    device: torch.device, cache: str, train_subset: int | None, report: dict, amp: str = "off"
                    ) -> Variant:
    """(a) / (b): the engine's recipe with KD (data path, lean teacher or view cache, one training step), at
    ``train.amp`` ``amp`` (``off``: fp32; ``auto``: the engine's default precision on ``device``); a cache's build
    is read from its record."""
    run = _engine_run(root, teacher_ckpt, teacher_name, student_name, "kd", device, cache, train_subset, amp)
    if cache != "off":
        info = json.loads(next(cache_root().glob("*/info.json")).read_text())
        key = "build" if run.dtype is None else "build_bf16"
        report[f"{key}_img_per_s"] = info["build_img_per_s"]
        report[f"{key}_s"] = info["build_s"]
        report[f"{key}_images"] = info["shape"][0] * info["shape"][1]
        for f in cache_root().glob("*"):  # the next cache variant builds its own, and is measured
            if f.is_dir():
                shutil.rmtree(f)
    return _stepping(name, run)


def _forever(loader):
    """Batches of ``loader``, epoch after epoch (an aidkd loader is told each epoch; a DataLoader reshuffles)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _baseline_variant(root: Path, teacher_name: str, student_name: str, device: torch.device) -> Variant:
    """(c): torchvision dataset + PIL transforms + DataLoader(2 workers), teacher under no_grad, fp32."""
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])
    class OwnFilesCIFAR100(torchvision.datasets.CIFAR100):
        """torchvision's CIFAR100 without the checksums of the published archive (the files are the benchmark's)."""

        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            with open(Path(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                self.classes = pickle.load(f)[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    ds = OwnFilesCIFAR100(str(root), train=True, transform=tf, download=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=2, drop_last=True,
                                         pin_memory=device.type == "cuda", persistent_workers=True)
    torch.manual_seed(0)
    teacher = create_model(teacher_name, num_classes=NUM_CLASSES, in_chans=3, input_hw=32).to(device).eval()
    student = create_model(student_name, num_classes=NUM_CLASSES, in_chans=3, input_hw=32).to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    it = _forever(loader)

    def step():
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.no_grad():
            zt = teacher(x)
        zs = student(x)
        loss = 0.1 * F.cross_entropy(zs, y) + 0.9 * kd_loss(zs, zt, 4.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return Variant("c", step)


def _student_variant(root: Path, student_name: str, device: torch.device, amp: str = "off", name: str = "d"
                     ) -> Variant:
    """(d): the engine's recipe with the student alone (``method: vanilla``, CE), at ``train.amp`` ``amp``."""
    return _stepping(name, _engine_run(root, None, "", student_name, "vanilla", device, "off", None, amp))


def teacher_option_variants(teacher_name: str, student_name: str, device: torch.device) -> list[Variant]:
    """The lean teacher's choices, each on its own: the teacher's forward under no_grad (as the common loop
    runs it), under inference mode, with folded batch norms, folded + channels_last; and the student's step in
    NCHW and in channels_last. Batches are in memory, so only the arithmetic differs."""
    torch.manual_seed(0)
    teacher = create_model(teacher_name, num_classes=NUM_CLASSES, in_chans=3, input_hw=32).to(device).eval()
    x = torch.randn(BATCH, 3, 32, 32, device=device)
    y = torch.randint(0, NUM_CLASSES, (BATCH,), device=device)
    folded, folded_cl = ModelTeacher(teacher, lean=True), ModelTeacher(teacher, lean=True, channels_last=True)

    def no_grad():
        with torch.no_grad():
            teacher(x)

    def inference():
        with torch.inference_mode():
            teacher(x)

    def student_step(channels_last: bool):
        student = create_model(student_name, num_classes=NUM_CLASSES, in_chans=3, input_hw=32).to(device).train()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        student.to(memory_format=fmt)
        opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
        xs = x.contiguous(memory_format=fmt)

        def step():
            loss = F.cross_entropy(student(xs), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    return [Variant("teacher no_grad", no_grad), Variant("teacher inference_mode", inference),
            Variant("teacher folded", lambda: folded(x)), Variant("teacher folded + channels_last", lambda: folded_cl(x)),
            Variant("student NCHW", student_step(False)), Variant("student channels_last", student_step(True))]


# ----------------------------------------------------------------------------------------------- measuring
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def time_round(v: Variant, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    v.step()  # one untimed step: the loader iterator and caches are warm
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        v.step()
    _sync(device)
    rate = steps * BATCH / (time.perf_counter() - t0)
    if device.type == "cuda":
        v.peak_mb = max(v.peak_mb or 0.0, torch.cuda.max_memory_allocated(device) / 2**20)
    return rate


def interleave(variants: list[Variant], rounds: int, steps: int, device: torch.device, log=print) -> None:
    for r in range(rounds):
        for v in variants:
            v.rates.append(time_round(v, steps, device))
        log(f"  round {r + 1}/{rounds}: " + "  ".join(f"{v.name} {v.rates[-1]:.1f}" for v in variants))


def summary(rates: list[float]) -> tuple[float, float, float]:
    return statistics.median(rates), min(rates), max(rates)


def ratio(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """The ratio of medians, and the range of the per-round ratios (rounds are interleaved)."""
    per_round = [x / y for x, y in zip(a, b, strict=True)]
    return statistics.median(a) / statistics.median(b), min(per_round), max(per_round)


@contextlib.contextmanager
def _private_cache(folder: Path):
    """Build the benchmark's view cache in a temporary folder, so that its build is measured every time."""
    old = os.environ.get("AIDKD_CACHE")
    os.environ["AIDKD_CACHE"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("AIDKD_CACHE", None)
        else:
            os.environ["AIDKD_CACHE"] = old


def run_pair(teacher: str, student: str, device: torch.device, rounds: int, steps: int, num_train: int,
             cache_images: int, tmp: Path, log=print) -> dict:
    root = write_cifar100(tmp / "data", num_train)
    torch.manual_seed(0)  # the teacher's random weights, as a checkpoint for the engine's runs
    ckpt = tmp / "teacher.pt"
    save_checkpoint({"model": create_model(teacher, num_classes=NUM_CLASSES, in_chans=3, input_hw=32).state_dict()},
                    ckpt)
    auto = resolve_precision("auto", device)
    rep: dict = {"pair": f"{teacher} -> {student}", "device": str(device), "auto": auto.name,
                 "auto_reason": auto.reason, "cpu": cpu_capability()}
    with _private_cache(tmp / "cache"):
        log(f"{rep['pair']} on {device}: building the variants (the view cache for {cache_images} images); "
            f"{auto.reason}: {auto.name}")
        variants = [
            _engine_variant("a", root, ckpt, teacher, student, device, "off", None, rep),
            _engine_variant("b", root, ckpt, teacher, student, device, "views", cache_images, rep),
            _baseline_variant(root, teacher, student, device),
            _student_variant(root, student, device),
        ]
        if auto.dtype is not None:  # the default precision where it is bf16: the same two paths at train.amp=auto
            variants += [_engine_variant("a16", root, ckpt, teacher, student, device, "off", None, rep, amp="auto"),
                         _engine_variant("b16", root, ckpt, teacher, student, device, "views", cache_images, rep,
                                         amp="auto"),
                         _student_variant(root, student, device, "auto", "d16")]
        interleave(variants, rounds, steps, device, log)
        options = teacher_option_variants(teacher, student, device)
        interleave(options, rounds, max(steps // 2, 1), device, log)
    rep["options"] = {v.name: summary(v.rates) for v in options}
    r = {v.name: v.rates for v in variants}
    rep["img_per_s"] = {k: summary(v) for k, v in r.items()}
    rep["a/c"], rep["b/c"], rep["b/d"] = ratio(r["a"], r["c"]), ratio(r["b"], r["c"]), ratio(r["b"], r["d"])
    if "a16" in r:
        rep["a16/c"], rep["b16/c"] = ratio(r["a16"], r["c"]), ratio(r["b16"], r["c"])
        rep["a16/a"], rep["b16/b"] = ratio(r["a16"], r["a"]), ratio(r["b16"], r["b"])
        rep["b16/d16"] = ratio(r["b16"], r["d16"])
    rep["peak_mb"] = {v.name: v.peak_mb for v in variants} if device.type == "cuda" else None
    rep["cpu_peak_rss_mb"] = _peak_rss_mb()
    return rep


# ------------------------------------------------------------------------------------------ a whole KD run
def full_run_estimate(teacher: str = "resnet32x4", student: str = "resnet8x4", device: str = "cuda",
                      measured_epochs: int = 2, total_epochs: int = 240, num_train: int = 50000, num_test: int = 10000,
                      caches: tuple[str, ...] = ("off", "views"), workdir: str | Path | None = None,
                      log=print) -> list[dict]:
    """The wall time of a ``total_epochs`` KD run of ``teacher -> student`` (the published CIFAR-100 recipe:
    batch 64, SGD 0.05, crop + flip), extrapolated from ``measured_epochs`` real epochs through ``aidkd.engine.train``
    on random images in CIFAR-100's file format, for each ``teacher.cache`` setting. The first epoch includes
    warm-up, so the rate is taken from the last measured epoch; a cache's build time is added once."""
    out = []
    with tempfile.TemporaryDirectory(prefix="aidkd-full-run-") as tmp:
        work = Path(workdir or tmp)
        root = write_cifar100(work / "data", num_train, num_test=num_test)
        torch.manual_seed(0)
        t = create_model(teacher, num_classes=NUM_CLASSES, in_chans=3, input_hw=32)
        ckpt = work / "teacher.pt"
        save_checkpoint({"model": t.state_dict()}, ckpt)
        for cache in caches:
            with _private_cache(work / f"cache-{cache}"):
                cfg = config_from_dict({
                    "data": {"name": "cifar100", "root": str(root), "batch_size": BATCH, "download": False},
                    "model": {"name": student}, "method": {"name": "kd"},
                    "teacher": {"name": teacher, "checkpoint": str(ckpt), "cache": cache},
                    "optim": {"lr": 0.05}, "sched": {"milestones": [150, 180, 210]},
                    "train": {"epochs": measured_epochs, "device": device, "progress": False, "tensorboard": False},
                    "output": {"dir": str(work / "runs"), "name": f"kd-{cache}"},
                })
                t0 = time.perf_counter()
                s = train(cfg, overwrite=True)
                wall = time.perf_counter() - t0
            recs = [json.loads(x) for x in Path(s["run_dir"], "metrics.jsonl").read_text().splitlines() if x]
            per_epoch = recs[-1]["time.epoch_s"]
            setup = wall - sum(r["time.epoch_s"] for r in recs)  # data, models, the cache build
            row = {"pair": f"{teacher} -> {student}", "device": device, "cache": cache,
                   "epoch_s": per_epoch, "img_per_s": recs[-1]["train.img_per_s"], "setup_s": setup,
                   "total_epochs": total_epochs, "estimate_s": setup + per_epoch * total_epochs}
            log(f"{row['pair']} teacher.cache={cache} on {device}: {per_epoch:.1f} s/epoch, setup {setup:.1f} s -> "
                f"{total_epochs} epochs in about {row['estimate_s'] / 60:.1f} min")
            out.append(row)
    return out


def render_full_run(rows: list[dict], command: str, note: str = "") -> str:
    lines = ["# A whole KD run, extrapolated", "", f"Command: `{command}`", "",
             f"{rows[0]['total_epochs']} epochs extrapolated from the last of the measured epochs of "
             "`aidkd.engine.train` on random images in CIFAR-100's file format (50000 training images, batch 64, "
             f"crop + flip); setup (data, models, any cache build) added once. {note}", "",
             "| pair | device | teacher.cache | s / epoch | img/s | setup s | estimated whole run |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['device']} | {r['cache']} | {r['epoch_s']:.1f} | {r['img_per_s']:.0f} | "
                     f"{r['setup_s']:.0f} | {r['estimate_s'] / 60:.1f} min |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- report
def _cell(s: tuple[float, float, float], digits: int = 1) -> str:
    return f"{s[0]:.{digits}f} ({s[1]:.{digits}f}-{s[2]:.{digits}f})"


def render(reports: list[dict], command: str, rounds: int, steps: int, note: str) -> str:
    lines = ["# Throughput of one distillation step, side by side", "",
             f"Command: `{command}`", "",
             f"Batch {BATCH}, 32x32 inputs, {NUM_CLASSES} classes, random images in CIFAR-100's file format, "
             f"randomly initialised models; {rounds} interleaved rounds (a, b, c, d, a, ...) of {steps} timed steps "
             f"each; median (range over rounds) in images per second; torch {torch.__version__}, "
             f"{torch.get_num_threads()} intra-op threads. {note}", "",
             "(a) aidkd's engine path in fp32 (`train.amp=off`: in-memory loader, device-side crop + flip, "
             "batch-norm-folded teacher, channels_last); (b) the same with the view-exact teacher cache "
             "(`teacher.cache=views`); (c) the common KD codebases' loop (torchvision dataset, PIL transforms, "
             "DataLoader with 2 workers, teacher under no_grad, fp32); (d) the student-only step, fp32. Where "
             "`train.amp=auto` is bf16 on the device (CUDA, or a CPU with native bf16), (a16), (b16) and (d16) are "
             "(a), (b) and (d) at that default.", "",
             *[f"- {r['pair']} on {r['device']}: CPU {r['cpu']}; {r['auto_reason']}: {r['auto']}" for r in reports],
             "",
             "| pair | device | (a) | (b) | (c) | (d) | a/c | b/c | b/d |", "|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        i = r["img_per_s"]
        lines.append(f"| {r['pair']} | {r['device']} | {_cell(i['a'])} | {_cell(i['b'])} | {_cell(i['c'])} | "
                     f"{_cell(i['d'])} | {_cell(r['a/c'], 2)} | {_cell(r['b/c'], 2)} | {_cell(r['b/d'], 2)} |")
    bf16 = [r for r in reports if "a16" in r["img_per_s"]]
    if bf16:
        lines += ["", "At the default precision, bf16 autocast (`train.amp=auto`):", "",
                  "| pair | device | (a16) | (b16) | (d16) | a16/c | b16/c | a16/a | b16/b | b16/d16 |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in bf16:
            i = r["img_per_s"]
            lines.append(f"| {r['pair']} | {r['device']} | {_cell(i['a16'])} | {_cell(i['b16'])} | {_cell(i['d16'])} | "
                         + " | ".join(_cell(r[k], 2) for k in ("a16/c", "b16/c", "a16/a", "b16/b", "b16/d16")) + " |")
    lines += ["", "Building the view cache (the teacher over every view; 162 views per image for CIFAR's padding 4 + flip):", "",
              "| pair | device | precision | teacher images/s while building | a whole CIFAR-100 build (50000 x 162 views) at that rate |",
              "|---|---|---|---|---|"]
    for r in reports:
        for key, prec in (("build", "fp32"), ("build_bf16", "bf16")):
            if f"{key}_img_per_s" in r:
                rate = r[f"{key}_img_per_s"]
                lines.append(f"| {r['pair']} | {r['device']} | {prec} | {rate:.0f} | {50000 * 162 / rate / 3600:.1f} h |")
    lines += ["", "The lean teacher's choices, each measured on its own (in-memory batch; teacher forward or "
              "student step only; images per second):", "",
              "| pair | device | " + " | ".join(reports[0]["options"]) + " |",
              "|---|---|" + "---|" * len(reports[0]["options"])]
    for r in reports:
        lines.append(f"| {r['pair']} | {r['device']} | " + " | ".join(_cell(v) for v in r["options"].values()) + " |")
    lines += ["", "Peak memory:", ""]
    for r in reports:
        if r["peak_mb"]:
            lines.append(f"- {r['pair']} on {r['device']}: peak allocated "
                         + ", ".join(f"({k}) {v:.0f} MiB" for k, v in r["peak_mb"].items()))
        else:
            lines.append(f"- {r['pair']} on {r['device']}: peak resident memory of the benchmark process after this "
                         f"pair {r['cpu_peak_rss_mb']:.0f} MiB (all variants together; per-variant peaks are "
                         "measured on CUDA only)")
    return "\n".join(lines) + "\n"


def run_throughput(rounds: int = 3, steps: int = 10, devices: tuple[str, ...] = ("cpu",), pairs=PAIRS,
                   num_train: int = 1024, cache_images: int = 128, report: str | Path | None = None,
                   note: str = "", log=print) -> list[dict]:
    """Measure every pair on every device; write the Markdown report to ``report`` when given."""
    if rounds < 3:
        raise UserError(f"--rounds {rounds}: at least 3 rounds are needed for a median and a spread")
    if report is not None:
        check_report_file(report)  # before minutes of measuring, not after them
    if "cuda" in devices and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu")
    if cache_images < max(BATCH, NUM_CLASSES):
        raise UserError(f"--cache-images {cache_images}: needs at least one batch ({BATCH}) of images and one image "
                        f"per class ({NUM_CLASSES})")
    out = []
    with tempfile.TemporaryDirectory(prefix="aidkd-throughput-") as tmp:
        for dev in devices:
            for t, s in pairs:
                out.append(run_pair(t, s, torch.device(dev), rounds, steps, num_train, cache_images,
                                    Path(tmp) / f"{dev}-{t}", log))
    for r in out:
        log(f"{r['pair']} on {r['device']}: a {r['img_per_s']['a'][0]:.1f}  b {r['img_per_s']['b'][0]:.1f}  "
            f"c {r['img_per_s']['c'][0]:.1f}  d {r['img_per_s']['d'][0]:.1f} img/s;  a/c {r['a/c'][0]:.2f}  "
            f"b/c {r['b/c'][0]:.2f}  b/d {r['b/d'][0]:.2f};  cache build {r['build_img_per_s']:.0f} img/s")
        if "a16/c" in r:
            log(f"  bf16 (train.amp=auto): a16/c {r['a16/c'][0]:.2f}  b16/c {r['b16/c'][0]:.2f}  a16/a "
                f"{r['a16/a'][0]:.2f}  b16/b {r['b16/b'][0]:.2f};  cache build {r['build_bf16_img_per_s']:.0f} img/s")
    if report is not None:

        write_report_text(report, render(out, _command(), rounds, steps, note))
        log(f"report written to {report}")
    return out


def run_full_run(device: str = "cuda", measured_epochs: int = 2, num_train: int = 50000,
                 report: str | Path | None = None, note: str = "", log=print) -> list[dict]:
    """:func:`full_run_estimate` of resnet32x4 -> resnet8x4, written to ``report`` when given."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu")
    if report is not None:
        check_report_file(report)
    rows = full_run_estimate(device=device, measured_epochs=measured_epochs, num_train=num_train, log=log)
    if report is not None:

        write_report_text(report, render_full_run(rows, _command(), note))
        log(f"report written to {report}")
    return rows


def run_lean_choices(rounds: int = 15, steps: int = 1, device: str = "cpu", pairs=PAIRS,
                     report: str | Path | None = None, note: str = "", log=print) -> dict:
    """The lean teacher's choices alone (:func:`teacher_option_variants`), in many short interleaved rounds, each
    as a ratio per round against the plain variant (``teacher no_grad``, ``student NCHW``): ratios of
    neighbouring timings are what a contended machine still measures well."""
    if rounds < 3:
        raise UserError(f"--rounds {rounds}: at least 3 rounds are needed for a median and a spread")
    if report is not None:
        check_report_file(report)
    dev = torch.device(device)
    out: dict = {}
    for t, s in pairs:
        vs = teacher_option_variants(t, s, dev)
        interleave(vs, rounds, steps, dev, log=lambda *a: None)
        r = {v.name: v.rates for v in vs}
        out[f"{t} -> {s}"] = {k: (summary(v), ratio(v, r["teacher no_grad" if k.startswith("teacher") else
                                                          "student NCHW"])) for k, v in r.items()}
        for k, (rate, rel) in out[f"{t} -> {s}"].items():
            log(f"{t} -> {s}  {k:32s} {rate[0]:7.1f} img/s  x{rel[0]:.2f} ({rel[1]:.2f}-{rel[2]:.2f})")
    if report is not None:

        names = list(next(iter(out.values())))
        lines = ["# The lean teacher's choices, one by one", "", f"Command: `{_command()}`", "",
                 f"{rounds} interleaved rounds of {steps} step(s) of batch {BATCH} (32x32, {NUM_CLASSES} classes) on "
                 f"{device}, in-memory batches; median images/s, and in brackets the median (range) over rounds of "
                 f"the ratio to the plain variant of the same round; torch {torch.__version__}, "
                 f"{torch.get_num_threads()} intra-op threads. {note}", "",
                 "| pair | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for pair, row in out.items():
            lines.append(f"| {pair} | " + " | ".join(f"{rate[0]:.1f} (x{rel[0]:.2f}, {rel[1]:.2f}-{rel[2]:.2f})"
                                                      for rate, rel in row.values()) + " |")
        write_report_text(report, "\n".join(lines) + "\n")
        log(f"report written to {report}")
    return out


def _command() -> str:
    """The command line that is running, as ``aidkd ...``."""
    if sys.argv[1:3] == ["bench", "throughput"]:
        return "aidkd bench throughput " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    return "aidkd bench throughput (from Python)"
