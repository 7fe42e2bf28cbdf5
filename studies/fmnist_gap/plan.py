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
import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from aidkd.config import run_dict
from aidkd.errors import UserError

PROFILES = {
    "full": dict(seeds=[0, 1, 2, 3, 4], teacher_epochs=20, student_epochs=5, train_subset=20000, variants="all",
                 student="cnn_mini"),
    # the setting of docs/results/fmnist_gap_short.md: teachers too short to beat the student by much
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
# The study at ResNet scale on one GPU (studies/fmnist_gap_gpu.sh): the CIFAR zoo's ResNets, the whole split
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
# Evidence v4 (issue: the published AID judged where KD helps at convergence): the pilot's regime, the ladder from
# cnn_small (7k parameters on Fashion-MNIST) to cnn_xl (2.3M, 586x the student), the published AID + KD at three
# degrees. ``v4`` is the headline profile (20 seeds; about 3 h on 2 cores once the teachers exist); ``v4-ckpt`` the
# same arms from each teacher's second checkpoint (``ckpt`` 1: trained with seed 1), for the claims about teacher
# size; ``v4-test`` the plan on digits, for the tests.
_V4 = {"teachers": ["cnn_small", "cnn_medium", "cnn_large", "cnn_xl"], "teacher_epochs": 15, "teacher_subset": None,
       "teacher_batch_size": 128, "student": "cnn_mini", "train_subset": 2000, "batch_size": 32,
       "student_epochs": 80, "eval_every": 5, "plan": "v4", "degrees": ["pub_lr1e-4", "pub_lr1e-3", "pub"]}
PROFILES |= {
    "v4": _V4 | {"seeds": list(range(20)), "ckpt": 0},
    "v4-ckpt": _V4 | {"seeds": list(range(10)), "ckpt": 1, "degrees": ["pub_lr1e-3"]},
    # the other arms from the largest teacher, 10 seeds: DKD and DIST alone and after AID, TAKD (via cnn_large,
    # the ladder's geometric middle), born-again KD, the inner-class objective and MCMI as variants, the proxies;
    # the methods' warm-ups scaled to 80 of their published 240 epochs
    "v4-arms": _V4 | {"seeds": list(range(10)), "ckpt": 0, "plan": "v4-arms", "assistant": "cnn_large",
                      "degrees": ["pub_lr1e-3"], "method_params": {"dkd": {"beta": 8.0, "warmup_epochs": 7}},
                      "arms": ["dkd", "dist", "aid-pub_lr1e-3+dkd", "aid-pub_lr1e-3+dist", "takd", "ban", "aid-ft+kd",
                               "aid-mcmi+kd", "aid-pub_proxy-cnn_tiny+kd", "aid-pub_proxy-cnn_small+kd",
                               "aid-pub_proxy-cnn_medium+kd", "aid-proj_b0.01+kd", "aid-proj_ntmean+kd"]},
    "v4-test": _V4 | {"seeds": [0, 1], "ckpt": 0, "teachers": ["cnn_tiny", "cnn_small"], "teacher_epochs": 1,
                      "student": "cnn_tiny", "train_subset": None, "student_epochs": 2, "eval_every": 1,
                      "dataset": "digits", "degrees": ["pub_lr1e-3", "pub"]},
}
TEACHERS = ["cnn_small", "cnn_medium", "cnn_large"]  # the teacher ladder of a profile that names none


def ladder(profile: str) -> list[str]:
    """The profile's teachers, smallest first (the last is "the largest teacher" of the claims)."""
    return list(PROFILES[profile].get("teachers", TEACHERS))


def assistant(profile: str) -> str:
    """TAKD's assistant: the profile's own, else its smallest teacher."""
    return PROFILES[profile].get("assistant", ladder(profile)[0])


def _teacher_names() -> set[str]:
    return {t for p in PROFILES for t in ladder(p)}


@dataclass(frozen=True)
class Variant:
    """An AID setting: which student is the reference, and the AIDParams fields."""

    reference: str  # distilled (the KD student of that teacher) | vanilla | proxy-<arch> (a vanilla <arch> student)
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
    # the published AID (aid.objective kd: the teacher fine-tuned with the KD loss towards the vanilla student, E_a
    # 10% of the distillation epochs) at three degrees of adaptation: its learning rate 0.01 (the published one),
    # 0.001 and 0.0001
    "pub": Variant("vanilla", {"objective": "kd", "lr": 0.01}),
    "pub_lr1e-3": Variant("vanilla", {"objective": "kd", "lr": 0.001}),
    "pub_lr1e-4": Variant("vanilla", {"objective": "kd", "lr": 0.0001}),
    # the decomposition's mechanism, tested with targets at KD's loss form: the inner-class information removed from
    # every column (class-mean soft labels: the tempered target at beta -> 0) or from the non-target columns only
    "proj_b0.01": Variant("vanilla", _proj(ic_target="tempered", beta=0.01)),
    "proj_ntmean": Variant("vanilla", _proj(ic_target="nontarget_mean")),
    # the proxy-student ablation (the paper's Tables 8-9): the published AID towards a pretrained student of another
    # size than the student's (cnn_tiny about half of cnn_mini, cnn_small 1.7x, cnn_medium 6.7x)
    **{f"pub_proxy-{m}": Variant(f"proxy-{m}", {"objective": "kd", "lr": 0.001})
       for m in ("cnn_tiny", "cnn_small", "cnn_medium")},
}
#: the variants evidence v4 brought (the published AID, its proxies, the mechanism's targets): not in ``all``
V4_VARIANTS = {n for n in VARIANTS if n.startswith("pub") or n in ("proj_b0.01", "proj_ntmean")}
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
    every = [n for n in VARIANTS if n not in V4_VARIANTS]
    return every if v == "all" else QUICK_VARIANTS if v == "quick" else list(v)


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
    base = {"optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
            "sched": {"name": "cosine", "warmup_epochs": 0.3}, "train": train}
    defaults = METHOD_PARAMS | PROFILES[profile].get("method_params", {})
    method_section = {"name": method, "params": defaults.get(method, {}) if params is None else params}
    return run_dict(base, model=model, method=method_section, teacher=teacher or {}, data=data or data_config(profile))


# ---------------------------------------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class JobId:
    """A stage of the study, named in one place. ``what``: ``teacher`` (a teacher's training: ``teacher`` is its
    architecture, ``ckpt`` which of its checkpoints), ``vanilla``, a student of ``teacher`` (``kd``, ``kd-aa``,
    ``dkd``, ``takd-assistant``, ``ban``, ...), an adaptation ``adapt-<variant>`` or the student of one,
    ``aid-<variant>+<method>``; ``seed`` the student's; ``ckpt`` the teacher checkpoint it learns from;
    ``logits``: the logits stage of that stage. ``str()`` is the stage's name, :meth:`parse` reads one back."""

    what: str
    seed: int = 0
    teacher: str | None = None
    ckpt: int = 0
    logits: bool = False

    def __str__(self) -> str:
        t = None if self.teacher is None else self.teacher + (f"-c{self.ckpt}" if self.ckpt else "")
        name = f"teacher_{t}" if self.what == "teacher" else f"s{self.seed}_{self.what}" + (f"_{t}" if t else "")
        return f"logits_{name}" if self.logits else name

    @property
    def outputs(self) -> "JobId":
        """The logits stage of this stage."""
        return replace(self, logits=True)

    @property
    def trained(self) -> "JobId":
        """The stage whose model this logits stage holds."""
        return replace(self, logits=False)

    def of(self, what: str, teacher: str | None = None) -> "JobId":
        """Another stage of this one's seed and teacher checkpoint (``teacher``: this one's unless given)."""
        return JobId(what, self.seed, self.teacher if teacher is None else teacher, self.ckpt)

    @classmethod
    def parse(cls, name: str) -> "JobId":
        logits = name.startswith("logits_")
        rest = name[len("logits_"):] if logits else name
        if rest.startswith("teacher_"):
            t, ckpt = _teacher_part(rest[len("teacher_"):])
            return cls("teacher", 0, t, ckpt, logits)
        seed, rest = rest.split("_", 1)
        for t in sorted(_teacher_names(), key=len, reverse=True):  # the longest first: a name ending another is not it
            m = re.fullmatch(rf"(.+)_{re.escape(t)}(?:-c(\d+))?", rest)
            if m:
                return cls(m.group(1), int(seed[1:]), t, int(m.group(2) or 0), logits)
        return cls(rest, int(seed[1:]), None, 0, logits)


@dataclass(frozen=True)
class Arm:
    """A row of the study's tables: the stage ``what`` from ``teacher`` (its checkpoint ``ckpt``), one per seed."""

    what: str
    teacher: str | None = None
    ckpt: int = 0

    def job(self, seed: int) -> JobId:
        return JobId(self.what, seed, self.teacher, self.ckpt)


def _teacher_part(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.+?)(?:-c(\d+))?", text)
    return m.group(1), int(m.group(2) or 0)


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
    if job.kind == "shipped":  # verified, not retrained
        digest = hashlib.sha256(Path(a["file"]).read_bytes()).hexdigest()
        if digest != a["sha256"]:
            raise UserError(f"the shipped teacher {a['file']} does not match its sha256 in manifest.json ({digest[:12]} "
                            f"!= {a['sha256'][:12]}); restore it (git checkout) or remove its manifest entry to train it")
        res = store.given(job.id, a["file"])
        res.result["summary"] = a["summary"]
        return res
    if job.kind == "adapt":
        res = adapt(store, job.id, teacher=Path(a["teacher"]), reference=Path(a["reference"]),
                    teacher_arch=a["teacher_arch"], teacher_kwargs={}, reference_arch=a["reference_arch"],
                    reference_kwargs={}, data=DataConfig(**a["data"]), params=AIDParams(**a["params"]),
                    seed=a["seed"], distill_epochs=a["distill_epochs"], device=a["device"], eval_split="val")
        return None if res is None else res.stage
    raise ValueError(f"unknown job kind {job.kind!r}")


def plan(profile: str) -> list[list[JobId]]:
    """The study's training and adaptation stages, wave by wave (every stage depends only on earlier waves);
    each model that teaches gets a logits stage in the wave after it."""
    p = check_profile(profile)
    seeds = p["seeds"]
    if p.get("plan") == "probe":
        return probe_plan(seeds, ladder(profile))
    if p.get("plan") == "v4":
        return v4_plan(seeds, ladder(profile), p["degrees"], p["ckpt"])
    if p.get("plan") == "v4-arms":
        return arms_plan(seeds, ladder(profile)[-1], p["arms"], p["ckpt"])
    baselines = p.get("baselines", True)  # DKD, DIST, CTKD, TAKD, born-again KD, AID+DKD, AID+DIST
    teachers = ladder(profile)
    largest, smaller = teachers[-1], teachers[:-1]

    def kd_students(t: str) -> list[JobId]:
        aa = ["kd-aa"] if t in (teachers[0], largest) else []  # the A/A from both ends of the ladder
        return [JobId(k, s, t) for s in seeds for k in ["kd", "kd-cs", "kd-ic"] + aa]

    def adapts(t: str) -> list[JobId]:
        return [JobId(f"adapt-{v}", s, t) for s in seeds for v in (variants(profile) if t == largest else ["ft"])]

    def aid_students(t: str) -> list[JobId]:
        out = []
        for s in seeds:
            for v in variants(profile) if t == largest else ["ft"]:
                methods = ["kd"] + (["dkd", "dist"] if baselines and t == largest and v == "ft" else [])
                out += [JobId(f"aid-{v}+{m}", s, t) for m in methods]
        return out

    # the largest teacher trains beside the students of the smaller ones, so that neither waits on the other
    w1 = [JobId("teacher", teacher=t) for t in smaller] + [JobId("vanilla", s) for s in seeds]
    w2 = [JobId("teacher", teacher=largest)] + [j for t in smaller for j in kd_students(t)]
    w3 = kd_students(largest) + [j for t in smaller for j in adapts(t)]
    if baselines:
        w3 += [JobId(m, s, largest) for s in seeds for m in ("dkd", "dist", "ctkd", "takd-assistant")]
    w4 = adapts(largest) + [j for t in smaller for j in aid_students(t)]
    if baselines:
        w4 += [JobId(m, s, largest) for s in seeds for m in ("takd", "ban")]
    return [w1, w2, w3, w4, aid_students(largest)]


def probe_plan(seeds: list[int], teachers: list[str]) -> list[list[JobId]]:
    """A probe's waves, so that results come early: the smaller teachers and the vanilla students first, then
    the largest teacher beside the students of the smaller ones, then the students of the largest."""
    largest, smaller = teachers[-1], teachers[:-1]

    def students(t: str) -> list[JobId]:
        kinds = ["kd", "kd-aa"] if t in (teachers[0], largest) else ["kd"]  # the A/A from both ends of the ladder
        return [JobId(k, s, t) for s in seeds for k in kinds]

    return [[JobId("teacher", teacher=t) for t in smaller] + [JobId("vanilla", s) for s in seeds],
            [JobId("teacher", teacher=largest)] + [j for t in smaller for j in students(t)], students(largest)]


def v4_plan(seeds: list[int], teachers: list[str], degrees: list[str], ckpt: int) -> list[list[JobId]]:
    """Evidence v4's waves: the teachers (checkpoint ``ckpt``) and the vanilla students; KD from every teacher, KD
    once more from the largest (the replicated control, through the L_CS + L_IC path), and the published AID's
    adaptation of every teacher towards the vanilla student of the seed (the largest at every degree, the others
    at the middle one); then the AID + KD students."""
    largest = teachers[-1]
    default = degrees[len(degrees) // 2]

    def degrees_of(t: str) -> list[str]:
        return degrees if t == largest else [default]

    w1 = [JobId("teacher", teacher=t, ckpt=ckpt) for t in teachers] + [JobId("vanilla", s) for s in seeds]
    w2 = [JobId("kd", s, t, ckpt) for s in seeds for t in teachers] + [JobId("kd-aa", s, largest, ckpt) for s in seeds]
    w2 += [JobId(f"adapt-{v}", s, t, ckpt) for s in seeds for t in teachers for v in degrees_of(t)]
    w3 = [JobId(f"aid-{v}+kd", s, t, ckpt) for s in seeds for t in teachers for v in degrees_of(t)]
    return [w1, w2, w3]


SHIPPED = Path(__file__).with_name("teachers")


def shipped_teacher(job: JobId, cfg: dict) -> dict | None:
    """The study's shipped checkpoint of teacher ``job`` (``teachers/manifest.json``: safetensors, sha256, the
    fingerprint of the train stage that made it, recipe, accuracy) when it was trained with exactly the config
    ``cfg`` (the same train-stage fingerprint), as the arguments of a ``shipped`` job; else None (it is trained)."""
    from aidkd.config import config_from_dict
    from aidkd.files.checkpoint import read_json_object
    from aidkd.stages import StageStore
    from aidkd.stages.train import stage_config

    entry = (read_json_object(SHIPPED / "manifest.json") or {}).get(str(job)[len("teacher_"):])
    if entry is None:
        return None
    config, files = stage_config(config_from_dict(cfg, "fmnist-gap"))
    if StageStore.fingerprint("train", config, files) != entry["stage_fingerprint"]:
        return None
    summary = {"arch": job.teacher, "seed": job.ckpt, "epochs": entry["epochs"], "selection": "val",
               "best_acc": entry["val_top1_selected"], "best_test_acc": entry["test_top1_selected"],
               "last_test_acc": entry["test_top1_last"], "wall_time_s": entry["wall_time_s"],
               "precision": entry["precision"]}
    return {"file": str(SHIPPED / entry["file"]), "sha256": entry["sha256"], "summary": summary}


def arms_plan(seeds: list[int], teacher: str, arms: list[str], ckpt: int) -> list[list[JobId]]:
    """The other arms of evidence v4, from one teacher: each ``aid-<variant>+<method>`` arm with its adaptation
    (and a proxy student, where the variant's reference is one), TAKD with its assistant, born-again KD with the KD
    student it learns from, and any method alone; every stage only after what it reads."""
    t = teacher
    w1 = [JobId("teacher", teacher=t, ckpt=ckpt)] + [JobId("vanilla", s) for s in seeds]
    w1 += sorted({JobId(VARIANTS[a[4:].split("+")[0]].reference, s) for s in seeds for a in arms
                  if a.startswith("aid-") and VARIANTS[a[4:].split("+")[0]].reference.startswith("proxy-")},
                 key=str)
    w2 = [JobId("kd", s, t, ckpt) for s in seeds] + [JobId("takd-assistant", s, t, ckpt) for s in seeds if "takd" in arms]
    w2 += [JobId(a, s, t, ckpt) for s in seeds for a in arms if not a.startswith("aid-") and a not in ("takd", "ban")]
    adapts = sorted({a[4:].split("+")[0] for a in arms if a.startswith("aid-")})
    w3 = [JobId(f"adapt-{v}", s, t, ckpt) for s in seeds for v in adapts]
    w3 += [JobId(a, s, t, ckpt) for s in seeds for a in ("takd", "ban") if a in arms]
    w4 = [JobId(a, s, t, ckpt) for s in seeds for a in arms if a.startswith("aid-")]
    return [w1, w2, w3, w4]


def make_job(profile: str, job: JobId, R: dict) -> Job:
    """The job of ``job``, its inputs taken from the finished stages ``R`` (JobId -> StageResult)."""
    p = PROFILES[profile]
    data = data_config(profile)
    if job.logits:
        views = data | {"augment": False} if live_teachers(profile) else data
        return Job(str(job), "logits", {"checkpoint": str(R[job.trained].checkpoint), "data": views,
                                        "device": device(profile)})
    if job.what == "teacher":
        cfg = run_config(profile, job.teacher, "vanilla", job.ckpt, p["teacher_epochs"], None,
                         data=data_config(profile, teacher=True))
        shipped = shipped_teacher(job, cfg)
        if shipped is not None:
            return Job(str(job), "shipped", shipped)
        return Job(str(job), "train", {"config": cfg})
    s, what, t = job.seed, job.what, job.teacher
    teacher_job = JobId("teacher", teacher=t, ckpt=job.ckpt)

    def student(method: str, teacher: dict | None, model: str | None = None, params: dict | None = None) -> Job:
        cfg = run_config(profile, model or p["student"], method, s, p["student_epochs"], teacher, params)
        return Job(str(job), "train", {"config": cfg})

    def teacher_section(src: JobId) -> dict:
        """The teacher section of a student of the model that stage ``src`` trained or adapted: its stored
        outputs, or in a live profile the model itself."""
        if not live_teachers(profile):
            return {"kind": "logits", "checkpoint": str(R[src.outputs].checkpoint)}
        if src.what == "teacher":
            arch = src.teacher
        else:  # a KD student (born-again), TAKD's assistant, or an adapted teacher of ``t``
            arch = p["student"] if src.what == "kd" else assistant(profile) if src.what == "takd-assistant" else t
        return {"kind": "model", "name": arch, "checkpoint": str(R[src].checkpoint)}

    if what == "vanilla":
        return student("vanilla", None)
    if what.startswith("proxy-"):  # a vanilla student of another architecture: a proxy for the adaptation
        return student("vanilla", None, model=what[len("proxy-"):])
    if what.startswith("adapt-"):
        var = VARIANTS[what[len("adapt-"):]]
        ref = {"distilled": job.of("kd"), "vanilla": JobId("vanilla", s)}.get(var.reference, JobId(var.reference, s))
        ref_arch = var.reference[len("proxy-"):] if var.reference.startswith("proxy-") else p["student"]
        return Job(str(job), "adapt", {"teacher": str(R[teacher_job].checkpoint), "teacher_arch": t,
                                       "reference": str(R[ref].checkpoint), "reference_arch": ref_arch,
                                       "data": data, "params": var.params, "seed": s,
                                       "distill_epochs": p["student_epochs"], "device": device(profile)})
    if what.startswith("aid-"):
        var_name, method = what[len("aid-"):].split("+")
        ad = R[job.of(f"adapt-{var_name}")]
        if ad.result["teacher_kind"] == "targets":
            return student(method, {"kind": "targets", "checkpoint": str(ad.checkpoint)})
        return student(method, teacher_section(job.of(f"adapt-{var_name}")))
    if what == "takd-assistant":
        return student("kd", teacher_section(teacher_job), model=assistant(profile))
    if what == "takd":
        return student("kd", teacher_section(job.of("takd-assistant")))
    if what == "ban":  # born-again: a fresh student distilled from the KD student
        return student("kd", teacher_section(job.of("kd")))
    if what in KD_PARTS:
        return student("kd", teacher_section(teacher_job), params=KD_PARTS[what])
    return student(what, teacher_section(teacher_job))


def teaching(wave: list[JobId]) -> list[JobId]:
    """The stages of ``wave`` whose outputs later stages distil from or are compared with: each gets a logits
    stage (teachers, the vanilla and KD students, TAKD's assistant, the fine-tuned teachers)."""
    out = []
    for job in wave:
        what = job.what
        if what in ("teacher", "vanilla", "kd", "takd-assistant") or (  # the fine-tuned teachers (finetune, mcmi)
                what.startswith("adapt-") and VARIANTS[what[len("adapt-"):]].objective != "projection"):
            out.append(job)
    return out


def run_study(profile: str, out: str | Path, executor=None, log=print) -> dict:
    """Run every stage of the profile (reusing the finished ones) under ``out``; return JobId -> StageResult."""
    from aidkd.stages import InProcessExecutor

    check_profile(profile)
    root = Path(out).expanduser() / "stages"
    root.mkdir(parents=True, exist_ok=True)
    executor = executor or InProcessExecutor()
    job_fn = functools.partial(run_job, str(root))
    R: dict = {}
    for i, wave in enumerate(plan(profile), 1):
        for ids in (wave, [j.outputs for j in teaching(wave)]):
            # the longest first, so that a pool is not left waiting on one long job at the end
            ids = sorted(ids, key=lambda j: (j.what != "teacher", not j.what.startswith("adapt-")))
            jobs = [make_job(profile, j, R) for j in ids]
            for job_id, res in zip(ids, executor.map(job_fn, jobs), strict=True):
                R[job_id] = res
            ran = sum(r.status in ("ran", "resumed") for r in R.values())
            log(f"fmnist-gap ({profile}): wave {i}: {len(jobs)} stages done; {len(R)} in all, {ran} run this time")
    return R


def collect(profile: str, out: str | Path) -> dict:
    """The finished stages of the profile under ``out`` (JobId -> StageResult), running nothing."""
    check_profile(profile)
    root = str(Path(out).expanduser() / "stages")
    R: dict = {}
    for wave in plan(profile):
        for ids in (wave, [j.outputs for j in teaching(wave)]):
            for job_id in ids:
                try:
                    job = make_job(profile, job_id, R)
                except KeyError:  # an input is not finished
                    continue
                res = run_job(root, job, reuse_only=True)
                if res is not None:
                    R[job_id] = res
    return R
