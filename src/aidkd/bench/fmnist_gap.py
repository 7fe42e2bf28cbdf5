"""The capacity-gap benchmark on Fashion-MNIST (``aidkd bench fmnist-gap``): runs on 2 CPU cores.

Design (docs/results/fmnist_gap.md explains the choices):

* data: Fashion-MNIST 28x28, 10% of train held out as a validation split (the same for every run), a
  class-stratified 20,000-image training subset (the CPU budget), no
  augmentation, so every teacher's outputs on the training views are fixed and are computed once (a
  teacher-output cache): a student run then costs only the student's own steps;
* a ladder of three plain CNNs from the zoo as teachers (cnn_small 6.9k, cnn_medium 26k, cnn_large 103k
  parameters: 15x) and one student, cnn_tiny (1.9k);
* every student method with 3 seeds; the seed fixes the student's initialisation and batch order, so methods
  are compared pairwise on the same seeds.

Each job writes its result to ``ROOT/results/JOB.json``; engine runs live under ``ROOT/runs`` and resume when
interrupted; rerunning the command skips what is finished. Jobs run in parallel worker processes (one thread
each).
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

PROFILES = {
    "full": dict(seeds=[0, 1, 2, 3, 4], teacher_epochs=20, student_epochs=5, train_subset=20000, variants="all",
                 student="cnn_mini"),
    # the first full run: teachers too short to beat the student by much, and KD below vanilla (kept as a record)
    "short": dict(seeds=[0, 1, 2], teacher_epochs=6, student_epochs=5, train_subset=20000, variants="all",
                  student="cnn_tiny"),
    "quick": dict(seeds=[0], teacher_epochs=2, student_epochs=2, train_subset=12000, variants="quick",
                  student="cnn_tiny"),
    # the whole flow on scikit-learn's digits in about a minute: for the tests, not for conclusions
    "test": dict(seeds=[0, 1], teacher_epochs=1, student_epochs=1, train_subset=None, variants="quick",
                 dataset="digits", student="cnn_tiny"),
}
TEACHERS = ["cnn_small", "cnn_medium", "cnn_large"]
LARGEST = TEACHERS[-1]
ASSISTANT = "cnn_small"  # TAKD's assistant, from the ladder

# AID variants: id -> AIDParams fields. "ft" is the default setting (AIDParams defaults, distilled reference).
VARIANTS = {
    "ft": dict(mode="finetune", reference="distilled", ic_target="reference", lambda_ic=1.0, epochs=1),
    "ft_vanref": dict(mode="finetune", reference="vanilla", ic_target="reference", lambda_ic=1.0, epochs=1),
    "ft_tempered": dict(mode="finetune", reference="distilled", ic_target="tempered", lambda_ic=1.0, epochs=1),
    "ft_lam0.25": dict(mode="finetune", reference="distilled", ic_target="reference", lambda_ic=0.25, epochs=1),
    "ft_lam4": dict(mode="finetune", reference="distilled", ic_target="reference", lambda_ic=4.0, epochs=1),
    "ft_lam16": dict(mode="finetune", reference="distilled", ic_target="reference", lambda_ic=16.0, epochs=1),
    "ft_ep2": dict(mode="finetune", reference="distilled", ic_target="reference", lambda_ic=1.0, epochs=2),
    "proj": dict(mode="projection", reference="distilled", ic_target="reference", alpha=1.0),
    "proj_a0.5": dict(mode="projection", reference="distilled", ic_target="reference", alpha=0.5),
    "proj_vanref": dict(mode="projection", reference="vanilla", ic_target="reference", alpha=1.0),
    "proj_tempered": dict(mode="projection", reference="distilled", ic_target="tempered", alpha=1.0),
    "proj_b0.5": dict(mode="projection", reference="distilled", ic_target="tempered", beta=0.5, alpha=1.0),
    "proj_b0.8": dict(mode="projection", reference="distilled", ic_target="tempered", beta=0.8, alpha=1.0),
}
QUICK_VARIANTS = ["ft", "ft_lam4", "proj", "proj_tempered"]
LAMBDA_SWEEP = [(0.25, "ft_lam0.25"), (1.0, "ft"), (4.0, "ft_lam4"), (16.0, "ft_lam16")]  # lambda_ic -> variant

METHOD_PARAMS = {  # published settings, with warm-ups/curricula scaled to the short schedule (see the report)
    "kd": {},
    "dkd": {"beta": 8.0, "warmup_epochs": 1},
    "dist": {},
    "ctkd": {"curriculum_epochs": 2},
}


@dataclass
class Job:
    id: str
    kind: str
    deps: list[str] = field(default_factory=list)
    args: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------------ plan
def plan(profile: str) -> list[Job]:
    p = PROFILES[profile]
    variants = list(VARIANTS) if p["variants"] == "all" else QUICK_VARIANTS
    jobs = [Job(f"teacher_{t}", "teacher", [], {"model": t}) for t in TEACHERS]
    for s in p["seeds"]:
        v = f"s{s}_vanilla"
        jobs.append(Job(v, "student", [], {"seed": s, "method": "vanilla", "teacher": None}))
        for t in TEACHERS:
            jobs.append(Job(f"s{s}_kd_{t}", "student", [f"teacher_{t}"], {"seed": s, "method": "kd", "teacher": f"teacher_{t}"}))
        for m in ("dkd", "dist", "ctkd"):
            jobs.append(Job(f"s{s}_{m}_{LARGEST}", "student", [f"teacher_{LARGEST}"],
                            {"seed": s, "method": m, "teacher": f"teacher_{LARGEST}"}))
        # TAKD: largest -> assistant -> student
        a = f"s{s}_takd-assistant_{LARGEST}"
        jobs.append(Job(a, "student", [f"teacher_{LARGEST}"],
                        {"seed": s, "method": "kd", "teacher": f"teacher_{LARGEST}", "model": ASSISTANT}))
        jobs.append(Job(f"s{s}_takd_{LARGEST}", "student", [a], {"seed": s, "method": "kd", "teacher": a}))
        # born-again: distil a fresh student from the KD student
        kd_l = f"s{s}_kd_{LARGEST}"
        jobs.append(Job(f"s{s}_ban_{LARGEST}", "student", [kd_l], {"seed": s, "method": "kd", "teacher": kd_l}))
        # AID
        for t in TEACHERS:
            for var in (variants if t == LARGEST else ["ft"]):
                ref = f"s{s}_kd_{t}" if VARIANTS[var]["reference"] == "distilled" else v
                ad = f"s{s}_adapt-{var}_{t}"
                jobs.append(Job(ad, "adapt", [f"teacher_{t}", ref], {"seed": s, "teacher": f"teacher_{t}",
                                                                       "reference": ref, "variant": var}))
                methods = ["kd"]
                if t == LARGEST and var == "ft":
                    methods += ["dkd", "dist"]
                for m in methods:
                    jobs.append(Job(f"s{s}_aid-{var}+{m}_{t}", "student", [ad],
                                    {"seed": s, "method": m, "teacher": ad}))
    return jobs


# ------------------------------------------------------------------------------------------------------ job bodies
def _data_cfg(profile: str, **kw) -> dict:
    p = PROFILES[profile]
    d = {"name": p.get("dataset", "fashion_mnist"), "batch_size": 128, "eval_batch_size": 1000, "val_split": 0.1, "augment": False,
         "train_subset": p["train_subset"], "workers": 0}
    d.update(kw)
    return d


def _run_cfg(root: Path, profile: str, name: str, model: str, method: str, params: dict, seed: int, epochs: int,
             teacher_name: str | None, teacher_src: str | None):
    from ..config import config_from_dict

    return config_from_dict({
        "data": _data_cfg(profile),
        "model": {"name": model},
        "teacher": {"name": teacher_name},
        "method": {"name": method, "params": params},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "sched": {"name": "cosine", "warmup_epochs": 0.3},
        "train": {"epochs": epochs, "seed": seed, "device": "cpu", "progress": False, "tensorboard": False},
        "output": {"dir": str(root / "runs"), "name": name},
        "meta": {"teacher_source": teacher_src, "bench": "fmnist-gap", "profile": profile},
    }, f"fmnist-gap:{name}")


def _load_model(run_dir: Path, spec):
    from ..aid.stages import load_model

    return load_model(run_dir / "checkpoints" / "best.pt", spec).eval()


def _train_logits(model, data):
    from ..engine.teacher_cache import teacher_logits_on_train

    return teacher_logits_on_train(model, data.train, data.spec.num_train, __import__("torch").device("cpu"))


def _eval_logits(model, loader):
    import torch

    out, labels = [], []
    with torch.no_grad():
        for b in loader:
            out.append(model(b.images).float())
            labels.append(b.labels)
    return torch.cat(out), torch.cat(labels)


def _teacher_object(root: Path, src: str):
    """The (possibly adapted) teacher of a student job, as an indexed cache of its training logits."""
    import torch

    from ..engine.teacher_cache import CachedTeacher

    logits = torch.load(root / "logits" / f"{src}.pt", weights_only=True)
    return CachedTeacher(logits, source=src)


def run_job(root: str, profile: str, job: Job) -> dict:
    import torch

    torch.set_num_threads(1)
    root = Path(root)
    out = root / "results" / f"{job.id}.json"
    if out.exists():
        return json.loads(out.read_text())
    t0 = time.time()
    if job.kind in ("teacher", "student"):
        res = _run_training(root, profile, job)
    else:
        res = _run_adapt(root, profile, job)
    res["job"] = job.id
    res["job_wall_s"] = time.time() - t0
    from ..engine.checkpoint import atomic_write_json

    atomic_write_json(out, res)
    return res


def _run_training(root: Path, profile: str, job: Job) -> dict:
    from ..config import DataConfig
    from ..data import build_data
    from ..engine import read_summary, train

    p = PROFILES[profile]
    a = job.args
    if job.kind == "teacher":
        cfg = _run_cfg(root, profile, job.id, a["model"], "vanilla", {}, 0, p["teacher_epochs"], None, None)
        teacher = None
    else:
        model = a.get("model", p["student"])
        tname = None
        teacher = None
        if a["teacher"]:
            teacher = _teacher_object(root, a["teacher"])
            tname = "cached"
        cfg = _run_cfg(root, profile, job.id, model, a["method"], METHOD_PARAMS.get(a["method"], {}), a["seed"],
                       p["student_epochs"], tname, a["teacher"])
    run_dir = root / "runs" / job.id
    s = read_summary(run_dir)
    if s is None or s.get("fingerprint") != cfg.fingerprint():
        s = train(cfg, overwrite=s is not None, teacher=teacher)
    # this model's own training logits: the teacher cache of any job that distils from it
    from ..engine.checkpoint import save_checkpoint
    from ..models import num_params

    data = build_data(DataConfig(**_data_cfg(profile)), device="cpu")
    model = _load_model(run_dir, data.spec)
    logits_file = root / "logits" / f"{job.id}.pt"
    if not logits_file.exists():
        save_checkpoint(_train_logits(model, data), logits_file)  # type: ignore[arg-type]
    return {"kind": job.kind, "summary": s, "params": num_params(model)}


def _run_adapt(root: Path, profile: str, job: Job) -> dict:
    import torch

    from ..aid.adapt import AIDParams, adapt_teacher
    from ..aid.project import PROJECTION_OPTIONS, projection_targets
    from ..aid.split import split_decomposition_from_logits
    from ..config import DataConfig
    from ..data import build_data
    from ..engine.checkpoint import save_checkpoint

    a = job.args
    var = dict(VARIANTS[a["variant"]])
    var.pop("reference")  # which student the job adapts towards (its dependency), not an AID option
    params = AIDParams(**var)
    torch.manual_seed(a["seed"])
    data = build_data(DataConfig(**_data_cfg(profile)), device="cpu", seed=a["seed"])
    labels = data.train.labels
    t0 = time.time()
    teacher = _load_model(root / "runs" / a["teacher"], data.spec)
    reference = _load_model(root / "runs" / a["reference"], data.spec)
    t_logits = torch.load(root / "logits" / f"{a['teacher']}.pt", weights_only=True)
    r_logits = torch.load(root / "logits" / f"{a['reference']}.pt", weights_only=True)
    val_t, val_y = _eval_logits(teacher, data.val)
    val_r, _ = _eval_logits(reference, data.val)
    before_val = split_decomposition_from_logits(val_t, val_r, val_y, params.tau, 10)
    before_train = split_decomposition_from_logits(t_logits, r_logits, labels, params.tau, 10)
    res: dict = {"kind": "adapt", "variant": a["variant"], "params": params.model_dump(),
                 "teacher_val_acc_before": float((val_t.argmax(1) == val_y).float().mean() * 100),
                 "train_cs_before": before_train.cs, "train_ic_before": before_train.ic,
                 "val_cs_before": before_val.cs, "val_ic_before": before_val.ic}
    if params.mode == "projection":
        pr = projection_targets(t_logits, r_logits, labels, 10, **params.model_dump(include=PROJECTION_OPTIONS))
        new_logits = (params.tau * pr.log_targets).float()
        res["beta"] = pr.beta
        res["teacher_val_acc_after"] = res["teacher_val_acc_before"]  # the network itself is unchanged
        res["teacher_train_acc_after"] = float((new_logits.argmax(1) == labels).float().mean() * 100)
        res["teacher_train_acc_before"] = float((t_logits.argmax(1) == labels).float().mean() * 100)
    else:
        bal = build_data(DataConfig(**_data_cfg(profile, balanced=[10, params.K])), device="cpu", seed=a["seed"])
        adapted, report = adapt_teacher(teacher, reference, bal.train, data.val, params, "cpu")
        res["report"] = report.to_dict()
        adapted.eval()
        new_logits = _train_logits(adapted, data)
        val_a, _ = _eval_logits(adapted, data.val)
        res["teacher_val_acc_after"] = float((val_a.argmax(1) == val_y).float().mean() * 100)
        after_val = split_decomposition_from_logits(val_a, val_r, val_y, params.tau, 10)
        res["val_cs_after"], res["val_ic_after"] = after_val.cs, after_val.ic
    after_train = split_decomposition_from_logits(new_logits, r_logits, labels, params.tau, 10)
    res["train_cs_after"], res["train_ic_after"] = after_train.cs, after_train.ic
    res["adapt_wall_s"] = time.time() - t0
    save_checkpoint(new_logits, root / "logits" / f"{job.id}.pt")  # type: ignore[arg-type]
    return res


# -------------------------------------------------------------------------------------------------------- scheduler
def run_benchmark(profile: str = "full", out: str | None = None, workers: int = 2, report: str | None = None,
                  only_report: bool = False) -> Path:
    if profile not in PROFILES:
        from ..errors import UserError

        raise UserError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    root = Path(out or os.path.expanduser(f"~/aidkd-runs/fmnist-gap-{profile}"))
    (root / "results").mkdir(parents=True, exist_ok=True)
    (root / "logits").mkdir(parents=True, exist_ok=True)
    jobs = {j.id: j for j in plan(profile)}
    _check_root(root, profile)
    if not only_report:
        _schedule(root, profile, jobs, workers)
    from .fmnist_report import write_report

    default_report = "docs/results/fmnist_gap.md" if profile == "full" else f"docs/results/fmnist_gap_{profile}.md"
    return write_report(root, profile, jobs, report or default_report)


def _check_root(root: Path, profile: str) -> None:
    """Finished jobs are reused by name: refuse a folder that holds the results of other settings (a different
    list of seeds only adds or leaves out jobs, so it is allowed)."""
    from ..engine.checkpoint import atomic_write_json
    from ..errors import UserError

    settings = {"profile": profile, "settings": PROFILES[profile]}
    f = root / "profile.json"
    if f.exists():
        have = json.loads(f.read_text())
        strip = lambda d: {**d, "settings": {k: v for k, v in d.get("settings", {}).items() if k != "seeds"}}  # noqa: E731
        if strip(have) != strip(settings):
            raise UserError(f"{root} holds results of profile {have.get('profile')!r} with settings "
                            f"{have.get('settings')}, not of {profile!r} {PROFILES[profile]}; pass --out NEW_DIR "
                            "(the finished jobs there are kept)")
    atomic_write_json(f, settings)


def _schedule(root: Path, profile: str, jobs: dict[str, Job], workers: int) -> None:
    import multiprocessing as mp

    from ..engine.logging import console

    done = {j for j in jobs if (root / "results" / f"{j}.json").exists()}
    pending = [j for j in jobs if j not in done]
    console.print(f"fmnist-gap ({profile}): {len(done)} of {len(jobs)} jobs done, {len(pending)} to run, root {root}")
    running = {}
    t_start = time.time()
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        while pending or running:
            ready = [j for j in pending if all(d in done for d in jobs[j].deps)]
            # the longest jobs first: teachers, then adaptations, then students
            ready.sort(key=lambda j: ({"teacher": 0, "adapt": 1, "student": 2}[jobs[j].kind],
                                      -TEACHERS.index(jobs[j].args["model"]) if jobs[j].kind == "teacher" else 0))
            while ready and len(running) < workers:
                j = ready.pop(0)
                pending.remove(j)
                running[ex.submit(run_job, str(root), profile, jobs[j])] = j
            if not running:
                raise RuntimeError(f"jobs with unmet dependencies: {pending}")
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                j = running.pop(fut)
                fut.result()  # re-raise a job's error
                done.add(j)
                el = time.time() - t_start
                console.print(f"[{len(done)}/{len(jobs)}] {j} done ({el / 60:.1f} min elapsed)")
