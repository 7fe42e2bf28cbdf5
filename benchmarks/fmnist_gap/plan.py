"""The study's plan: its profiles and variants, and the stages it runs, wave by wave, through an executor.

* data: Fashion-MNIST 28x28, 10% of train held out as a validation split (the same for every run), a
  class-stratified training subset (the CPU budget), no augmentation, so every teacher's outputs on the
  training views are fixed: each model that teaches is turned once into a logits stage, and the students
  distil from that table (``teacher.kind: logits``) at the cost of their own steps only;
* a ladder of three plain CNNs from the zoo as teachers (cnn_small, cnn_medium, cnn_large) and one student;
* every student method per seed; the seed fixes the student's initialisation and batch order, so methods are
  compared pairwise on the same seeds; KD with the class-wise part only (``kd-cs``: ic_weight 0) and the
  inner-class part only (``kd-ic``: cs_weight 0) from every teacher, and an A/A control (``kd-aa``: KD computed
  as L_CS + (1 + 1e-6) L_IC, the same objective as KD up to float rounding) from the smallest and the largest;
* the adaptations run through the AID pipeline's adapt stage (:func:`aidkd.aid.pipeline.adapt`), measured on
  the validation split.

Every stage is a folder under ``OUT/stages`` keyed by its fingerprint: rerunning reuses what is finished, a
changed setting gets new folders and keeps the old ones. The ``probe-*`` profiles are cheap plans of the noise
floor only (vanilla, KD from every teacher, the A/A controls; :func:`plan` explains their waves): profiles run in
one ``OUT`` share every stage they have in common (the teachers, above all).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from aidkd.errors import UserError

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
    # the teacher-side axis within one session of 2 cores (about 80 min after the teachers): the full profile's
    # instrument on 10 seeds, the variants that place a teacher on the I_T axis (AID's fine-tuning at three
    # strengths, the projection, the tempered target on both sides of beta 1, MCMI), the causal rows and the A/A
    # controls; no baselines
    "axis": dict(seeds=list(range(10)), teacher_epochs=20, student_epochs=5, train_subset=20000,
                 variants=["ft_lam0.25", "ft", "ft_lam4", "proj", "proj_tempered", "proj_b0.5", "proj_b0.8",
                           "proj_b1.25", "proj_b1.6", "mcmi"], student="cnn_mini", baselines=False),
}
# The study at ResNet scale on one GPU (benchmarks/fmnist_gap_gpu.sh): the CIFAR zoo's ResNets, the whole split
# with crop + flip, bf16 (the engine's default on CUDA); the students run their teachers (a GPU does that faster
# than it reads 50 stored views per image), so the projection, which needs fixed views, is left out; the tempered
# target is reached by fine-tuning (ft_tempered). "gpu-test" is the same plan on digits, for the tests.
_GPU_VARIANTS = ["ft", "ft_lam4", "ft_tempered", "mcmi"]
_GPU = {"student": "resnet8", "teachers": ["resnet20", "resnet56", "resnet32x4"], "variants": _GPU_VARIANTS,
        "augment": True, "baselines": False, "teacher_outputs": "live", "device": "auto"}
PROFILES |= {
    "gpu": _GPU | {"seeds": [0, 1, 2], "teacher_epochs": 15, "student_epochs": 5, "train_subset": None,
                   "batch_size": 256},
    "gpu-test": _GPU | {"seeds": [0, 1], "teacher_epochs": 1, "student_epochs": 1, "train_subset": None,
                        "dataset": "digits", "student": "cnn_tiny", "teachers": ["resnet8", "resnet14", "resnet20"]},
}
# The noise-floor probes (docs/results/fmnist_gap_probes.notes.md): 10 seeds each, the full profile's teachers
# (20 epochs on the 20k subset: ``teacher_subset``), one lever changed at a time on the student side. Every probe's
# students also keep an exponential moving average of their weights (``ema_decay``): it does not change their
# training, so each run reports the raw weights and the average side by side.
_PROBE = {"seeds": list(range(10)), "teacher_epochs": 20, "teacher_subset": 20000, "student": "cnn_mini",
          "plan": "probe", "ema_decay": 0.99}
PROFILES |= {
    "probe-base": _PROBE | {"student_epochs": 5, "train_subset": 20000},  # the full profile's instrument
    "probe-54k": _PROBE | {"student_epochs": 5, "train_subset": None},  # the whole 54k training split
    "probe-long": _PROBE | {"student_epochs": 15, "train_subset": 20000},  # 3x the schedule, cosine to 0
    "probe-54k-long": _PROBE | {"student_epochs": 10, "train_subset": None},
    # the students augmented (crop with padding 2 + flip, 50 views), distilled from the teachers' outputs on
    # exactly the view they see (teacher-views stages)
    "probe-aug": _PROBE | {"student_epochs": 5, "train_subset": 20000, "augment": True},
    # the probe plan on digits, for the tests
    "probe-test": {"seeds": [0, 1], "teacher_epochs": 1, "student_epochs": 1, "train_subset": None,
                   "dataset": "digits", "student": "cnn_tiny", "plan": "probe", "ema_decay": 0.9, "augment": True},
}
# Evidence v4's pilot (docs/results/fmnist_v4_pilot.md): a data-limited student (2,000 labelled images, batch 32,
# 80 epochs, validated every 5) distilled from teachers trained on the whole split, up to cnn_xl (2.3M parameters on
# Fashion-MNIST, 586x cnn_mini); the question is whether KD still beats the vanilla student once both have converged
PROFILES |= {
    "pilot-v4": {"seeds": list(range(10)), "teachers": ["cnn_medium", "cnn_large", "cnn_xl"], "teacher_epochs": 15,
                 "teacher_subset": None, "teacher_batch_size": 128, "student": "cnn_mini", "train_subset": 2000,
                 "batch_size": 32, "student_epochs": 80, "eval_every": 5, "plan": "probe"},
}
TEACHERS = ["cnn_small", "cnn_medium", "cnn_large"]  # the teacher ladder of a profile that names none


def ladder(profile: str) -> list[str]:
    """The profile's teachers, smallest first (the last is "the largest teacher" of the claims)."""
    return list(PROFILES[profile].get("teachers", TEACHERS))


def assistant(profile: str) -> str:
    """TAKD's assistant: the profile's smallest teacher."""
    return ladder(profile)[0]


def _teacher_names() -> set[str]:
    return {t for p in PROFILES for t in ladder(p)}


@dataclass(frozen=True)
class Variant:
    """An AID setting: which student is the reference, and the AIDParams fields."""

    reference: str  # distilled (the KD student of that teacher) | vanilla
    params: dict = field(default_factory=dict)

    @property
    def objective(self) -> str:
        return self.params["objective"]  # inner_class | projection | mcmi


def _ft(**kw) -> dict:
    return dict(objective="inner_class", ic_target="reference", lambda_ic=1.0, epochs=1) | kw


def _proj(**kw) -> dict:
    return dict(objective="projection", ic_target="reference", alpha=1.0) | kw


# "ft" is this study's setting of the decomposition-targeted objective (aid.objective inner_class, distilled
# reference); the published objective (aid.objective kd) is not in this study's profiles
VARIANTS = {
    "ft": Variant("distilled", _ft()),
    "ft_vanref": Variant("vanilla", _ft()),
    "ft_tempered": Variant("distilled", _ft(ic_target="tempered")),
    "ft_lam0.25": Variant("distilled", _ft(lambda_ic=0.25)),
    "ft_lam4": Variant("distilled", _ft(lambda_ic=4.0)),
    "ft_lam16": Variant("distilled", _ft(lambda_ic=16.0)),
    "ft_ep2": Variant("distilled", _ft(epochs=2)),
    "proj": Variant("distilled", _proj()),
    "proj_a0.5": Variant("distilled", _proj(alpha=0.5)),
    "proj_vanref": Variant("vanilla", _proj()),
    "proj_tempered": Variant("distilled", _proj(ic_target="tempered")),
    "proj_b0.5": Variant("distilled", _proj(ic_target="tempered", beta=0.5)),
    "proj_b0.8": Variant("distilled", _proj(ic_target="tempered", beta=0.8)),
    # beta > 1: sharper within-class structure, the teacher's inner-class information I_T raised
    "proj_b1.25": Variant("distilled", _proj(ic_target="tempered", beta=1.25)),
    "proj_b1.6": Variant("distilled", _proj(ic_target="tempered", beta=1.6)),
    # MCMI (aid.objective mcmi, its published settings) with its 20 epochs scaled to 2, as the study scales the
    # methods' warm-ups to its short schedule; it needs no reference student
    "mcmi": Variant("distilled", {"objective": "mcmi", "epochs": 2}),
}
QUICK_VARIANTS = ["ft", "ft_lam4", "proj", "proj_tempered", "proj_b1.6", "mcmi"]
BETA_SWEEP = [(0.5, "proj_b0.5"), (0.8, "proj_b0.8"), (1.25, "proj_b1.25"), (1.6, "proj_b1.6")]  # beta 1: KD
LAMBDA_SWEEP = [(0.25, "ft_lam0.25"), (1.0, "ft"), (4.0, "ft_lam4"), (16.0, "ft_lam16")]  # lambda_ic -> variant

#: students distilled with KD's component weights changed (the decomposition's causal test, and the A/A control:
#: 1 + 1e-6 sends KD through the L_CS + L_IC path, exact in real arithmetic, different in float rounding)
KD_PARTS = {"kd-cs": {"ic_weight": 0.0}, "kd-ic": {"cs_weight": 0.0}, "kd-aa": {"ic_weight": 1.0 + 1e-6}}

METHOD_PARAMS = {  # published settings, with warm-ups/curricula scaled to the short schedule (see the report)
    "kd": {},
    "dkd": {"beta": 8.0, "warmup_epochs": 1},
    "dist": {},
    "ctkd": {"curriculum_epochs": 2},
}


def variants(profile: str) -> list[str]:
    """The AID variants a profile runs on the largest teacher: ``all``, ``quick`` or its own list."""
    v = PROFILES[profile]["variants"]
    return list(VARIANTS) if v == "all" else QUICK_VARIANTS if v == "quick" else list(v)


def check_profile(profile: str) -> dict:
    if profile not in PROFILES:
        raise UserError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    return PROFILES[profile]


# ------------------------------------------------------------------------------------------------------- configs
def data_config(profile: str, teacher: bool = False) -> dict:
    """The data section of the students (and of the logit tables they read), or of the teachers' training (never
    augmented)."""
    p = PROFILES[profile]
    subset = p.get("teacher_subset", p["train_subset"]) if teacher else p["train_subset"]
    batch = p.get("teacher_batch_size", p.get("batch_size", 128)) if teacher else p.get("batch_size", 128)
    return {"name": p.get("dataset", "fashion_mnist"), "batch_size": batch, "eval_batch_size": 1000,
            "val_split": 0.1, "augment": bool(p.get("augment")) and not teacher, "train_subset": subset, "workers": 0}


def device(profile: str) -> str:
    """Where the profile's stages run: ``cpu`` unless it names another (``auto``: CUDA where there is one)."""
    return PROFILES[profile].get("device", "cpu")


def live_teachers(profile: str) -> bool:
    """Whether the profile's students run their teacher (``teacher.kind: model``, the GPU profiles) instead of
    reading its stored outputs; its logits stages then hold one view per image, for the analysis only."""
    return PROFILES[profile].get("teacher_outputs", "stored") == "live"


def run_config(profile: str, model: str, method: str, seed: int, epochs: int, teacher: dict | None,
               params: dict | None = None, data: dict | None = None) -> dict:
    """A RunConfig dict of one training stage (``teacher``: the teacher section, or None; ``params``: the
    method's, default its METHOD_PARAMS; ``data``: default the students' data section)."""
    train = {"epochs": epochs, "seed": seed, "device": device(profile), "progress": False, "tensorboard": False}
    if data is None:  # the students' runs
        train |= {k: PROFILES[profile][k] for k in ("ema_decay", "eval_every") if PROFILES[profile].get(k)}
    return {
        "data": data or data_config(profile),
        "model": {"name": model},
        "teacher": teacher or {},
        "method": {"name": method, "params": METHOD_PARAMS.get(method, {}) if params is None else params},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "sched": {"name": "cosine", "warmup_epochs": 0.3},
        "train": train,
    }


# ---------------------------------------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    """One stage of the study: ``kind`` train | logits | adapt, and what that stage needs (plain data, so that
    a job can run in another process or on a cluster)."""

    id: str
    kind: str
    args: dict


def run_job(root: str, job: Job, reuse_only: bool = False):
    """Run (or reuse) one stage in ``root``; returns its :class:`~aidkd.stages.StageResult` (None when
    ``reuse_only`` and the stage is not finished)."""
    import torch

    from aidkd.aid.adapt import AIDParams
    from aidkd.aid.pipeline import adapt
    from aidkd.config import DataConfig, config_from_dict
    from aidkd.stages import StageStore, logits_stage, train_stage

    torch.set_num_threads(1)
    store = StageStore(Path(root), verbose=False, reuse_only=reuse_only)
    a = job.args
    if job.kind == "train":
        cfg = config_from_dict({**a["config"], "output": {"dir": root, "name": job.id}}, f"fmnist-gap:{job.id}")
        return train_stage(store, job.id, cfg)
    if job.kind == "logits":
        return logits_stage(store, job.id, a["checkpoint"], a["data"], device=a["device"])
    if job.kind == "adapt":
        res = adapt(store, job.id, teacher=Path(a["teacher"]), reference=Path(a["reference"]),
                    teacher_arch=a["teacher_arch"], teacher_kwargs={}, reference_arch=a["reference_arch"],
                    reference_kwargs={}, data=DataConfig(**a["data"]), params=AIDParams(**a["params"]),
                    seed=a["seed"], distill_epochs=a["distill_epochs"], device=a["device"], eval_split="val")
        return None if res is None else res.stage
    raise ValueError(f"unknown job kind {job.kind!r}")


def logits_id(job_id: str) -> str:
    return f"logits_{job_id}"


def plan(profile: str) -> list[list[str]]:
    """The study's training and adaptation stages, wave by wave (every stage depends only on earlier waves);
    each model that teaches gets a logits stage in the wave after it."""
    p = check_profile(profile)
    seeds = p["seeds"]
    if p.get("plan") == "probe":
        return probe_plan(seeds, ladder(profile))
    baselines = p.get("baselines", True)  # DKD, DIST, CTKD, TAKD, born-again KD, AID+DKD, AID+DIST
    teachers = ladder(profile)
    largest, smaller = teachers[-1], teachers[:-1]

    def kd_students(t: str) -> list[str]:
        aa = ["kd-aa"] if t in (teachers[0], largest) else []  # the A/A from both ends of the ladder
        return [f"s{s}_{k}_{t}" for s in seeds for k in ["kd", "kd-cs", "kd-ic"] + aa]

    def adapts(t: str) -> list[str]:
        return [f"s{s}_adapt-{v}_{t}" for s in seeds for v in (variants(profile) if t == largest else ["ft"])]

    def aid_students(t: str) -> list[str]:
        out = []
        for s in seeds:
            for v in variants(profile) if t == largest else ["ft"]:
                methods = ["kd"] + (["dkd", "dist"] if baselines and t == largest and v == "ft" else [])
                out += [f"s{s}_aid-{v}+{m}_{t}" for m in methods]
        return out

    # the largest teacher trains beside the students of the smaller ones, so that neither waits on the other
    w1 = [f"teacher_{t}" for t in smaller] + [f"s{s}_vanilla" for s in seeds]
    w2 = [f"teacher_{largest}"] + [j for t in smaller for j in kd_students(t)]
    w3 = kd_students(largest) + [j for t in smaller for j in adapts(t)]
    if baselines:
        w3 += [f"s{s}_{m}_{largest}" for s in seeds for m in ("dkd", "dist", "ctkd", "takd-assistant")]
    w4 = adapts(largest) + [j for t in smaller for j in aid_students(t)]
    if baselines:
        w4 += [f"s{s}_{m}_{largest}" for s in seeds for m in ("takd", "ban")]
    return [w1, w2, w3, w4, aid_students(largest)]


def probe_plan(seeds: list[int], teachers: list[str]) -> list[list[str]]:
    """A probe's waves, so that results come early: the smaller teachers and the vanilla students first, then
    the largest teacher beside the students of the smaller ones, then the students of the largest."""
    largest, smaller = teachers[-1], teachers[:-1]

    def students(t: str) -> list[str]:
        kinds = ["kd", "kd-aa"] if t in (teachers[0], largest) else ["kd"]  # the A/A from both ends of the ladder
        return [f"s{s}_{k}_{t}" for s in seeds for k in kinds]

    return [[f"teacher_{t}" for t in smaller] + [f"s{s}_vanilla" for s in seeds],
            [f"teacher_{largest}"] + [j for t in smaller for j in students(t)], students(largest)]


def parse_id(job_id: str) -> dict:
    """The parts of a student or adapt id ``s<seed>_<what>[_<teacher>]``."""
    seed, rest = job_id.split("_", 1)
    for t in sorted(_teacher_names(), key=len, reverse=True):  # the longest first: a name ending another is not it
        if rest.endswith("_" + t):
            return {"seed": int(seed[1:]), "what": rest[: -len(t) - 1], "teacher": t}
    return {"seed": int(seed[1:]), "what": rest, "teacher": None}


def make_job(profile: str, job_id: str, R: dict) -> Job:
    """The job of ``job_id``, its inputs taken from the finished stages ``R`` (id -> StageResult)."""
    p = PROFILES[profile]
    data = data_config(profile)
    if job_id.startswith("logits_"):
        views = data | {"augment": False} if live_teachers(profile) else data
        return Job(job_id, "logits", {"checkpoint": str(R[job_id[len("logits_"):]].checkpoint), "data": views,
                                      "device": device(profile)})
    if job_id.startswith("teacher_"):
        cfg = run_config(profile, job_id[len("teacher_"):], "vanilla", 0, p["teacher_epochs"], None,
                         data=data_config(profile, teacher=True))
        return Job(job_id, "train", {"config": cfg})
    j = parse_id(job_id)
    s, what, t = j["seed"], j["what"], j["teacher"]

    def student(method: str, teacher: dict | None, model: str | None = None, params: dict | None = None) -> Job:
        cfg = run_config(profile, model or p["student"], method, s, p["student_epochs"], teacher, params)
        return Job(job_id, "train", {"config": cfg})

    def teacher_section(src: str) -> dict:
        """The teacher section of a student of the model that stage ``src`` trained or adapted: its stored
        outputs, or in a live profile the model itself."""
        if not live_teachers(profile):
            return {"kind": "logits", "checkpoint": str(R[logits_id(src)].checkpoint)}
        if src.startswith("teacher_"):
            arch = src[len("teacher_"):]
        else:  # a KD student (born-again), TAKD's assistant, or an adapted teacher of ``t``
            what = parse_id(src)["what"]
            arch = p["student"] if what == "kd" else assistant(profile) if what == "takd-assistant" else t
        return {"kind": "model", "name": arch, "checkpoint": str(R[src].checkpoint)}

    if what == "vanilla":
        return student("vanilla", None)
    if what.startswith("adapt-"):
        var = VARIANTS[what[len("adapt-"):]]
        ref = f"s{s}_kd_{t}" if var.reference == "distilled" else f"s{s}_vanilla"
        return Job(job_id, "adapt", {"teacher": str(R[f"teacher_{t}"].checkpoint), "teacher_arch": t,
                                     "reference": str(R[ref].checkpoint), "reference_arch": p["student"],
                                     "data": data, "params": var.params, "seed": s,
                                     "distill_epochs": p["student_epochs"], "device": device(profile)})
    if what.startswith("aid-"):
        var_name, method = what[len("aid-"):].split("+")
        ad = R[f"s{s}_adapt-{var_name}_{t}"]
        if ad.result["teacher_kind"] == "targets":
            return student(method, {"kind": "targets", "checkpoint": str(ad.checkpoint)})
        return student(method, teacher_section(ad.name))
    if what == "takd-assistant":
        return student("kd", teacher_section(f"teacher_{t}"), model=assistant(profile))
    if what == "takd":
        return student("kd", teacher_section(f"s{s}_takd-assistant_{t}"))
    if what == "ban":  # born-again: a fresh student distilled from the KD student
        return student("kd", teacher_section(f"s{s}_kd_{t}"))
    if what in KD_PARTS:
        return student("kd", teacher_section(f"teacher_{t}"), params=KD_PARTS[what])
    return student(what, teacher_section(f"teacher_{t}"))


def teaching(wave: list[str]) -> list[str]:
    """The stages of ``wave`` whose outputs later stages distil from or are compared with: each gets a logits
    stage (teachers, the vanilla and KD students, TAKD's assistant, the fine-tuned teachers)."""
    out = []
    for job_id in wave:
        if job_id.startswith("teacher_"):
            out.append(job_id)
            continue
        what = parse_id(job_id)["what"]
        if what in ("vanilla", "kd", "takd-assistant") or (  # the fine-tuned teachers (finetune, mcmi)
                what.startswith("adapt-") and VARIANTS[what[len("adapt-"):]].objective != "projection"):
            out.append(job_id)
    return out


def run_study(profile: str, out: str | Path, executor=None, log=print) -> dict:
    """Run every stage of the profile (reusing the finished ones) under ``out``; return id -> StageResult."""
    from aidkd.stages import InProcessExecutor

    check_profile(profile)
    root = Path(out).expanduser() / "stages"
    root.mkdir(parents=True, exist_ok=True)
    executor = executor or InProcessExecutor()
    job_fn = functools.partial(run_job, str(root))
    R: dict = {}
    for i, wave in enumerate(plan(profile), 1):
        for ids in (wave, [logits_id(j) for j in teaching(wave)]):
            jobs = [make_job(profile, j, R) for j in ids]
            # the longest first, so that a pool is not left waiting on one long job at the end
            jobs.sort(key=lambda j: (not j.id.startswith("teacher_"), j.kind != "adapt"))
            for job, res in zip(jobs, executor.map(job_fn, jobs)):
                R[job.id] = res
            ran = sum(r.status in ("ran", "resumed") for r in R.values())
            log(f"fmnist-gap ({profile}): wave {i}: {len(jobs)} stages done; {len(R)} in all, {ran} run this time")
    return R


def collect(profile: str, out: str | Path) -> dict:
    """The finished stages of the profile under ``out`` (id -> StageResult), running nothing."""
    check_profile(profile)
    root = str(Path(out).expanduser() / "stages")
    R: dict = {}
    for wave in plan(profile):
        for ids in (wave, [logits_id(j) for j in teaching(wave)]):
            for job_id in ids:
                try:
                    job = make_job(profile, job_id, R)
                except KeyError:  # an input is not finished
                    continue
                res = run_job(root, job, reuse_only=True)
                if res is not None:
                    R[job_id] = res
    return R
