"""The AID pipeline (docs/aid.md section 6): from one config, the whole flow, each stage skipped when already done.

    teacher (trained unless a checkpoint is given)
      -> vanilla student, per seed (the baseline every benchmark trains)
      -> reference student S_ref (distilled from T0 with KD, the vanilla one, or a given checkpoint)
      -> adapt (T0 -> T, fine-tuning or projection)
      -> per seed and method: the student distilled from T0 (baseline) and from T (AID + method)
         [and, with ``online: true``, the online variant ``aid_online`` from T0]
      -> results.md / results.json

Python API::

    from aidkd.aid.pipeline import load_pipeline_config, run_pipeline
    cfg = load_pipeline_config("pipeline/digits_quick", ["seeds=[0, 1]"])
    out = run_pipeline(cfg)            # out["results"], out["stages"], out["table"]

Stage folders and skipping: :mod:`aidkd.aid.stages`. The config is typed (:class:`PipelineConfig`); unknown keys
and bad values are a :class:`~aidkd.errors.UserError` that names them.
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import (DataConfig, OptimConfig, SchedConfig, TrainConfig, apply_overrides, read_yaml,
                      resolve_config_path, validation_message)
from ..engine.checkpoint import atomic_write_json, atomic_write_text, checkpoint_config
from ..errors import UserError
from .adapt import AIDParams
from .stages import StageResult, StageRunner, file_hash, json_safe

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class PipelineBase(_Strict):
    """Defaults of every engine stage (the sections of a RunConfig that are not about models or the method)."""

    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    sched: SchedConfig = Field(default_factory=SchedConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


class TeacherSpec(_Strict):
    name: str  # architecture
    checkpoint: Optional[str] = None  # trained T0; None: trained by the pipeline
    kwargs: dict[str, Any] = Field(default_factory=dict)
    epochs: Optional[int] = Field(None, ge=1)  # teacher training: epochs (default base.train.epochs)
    lr: Optional[float] = Field(None, gt=0)  # teacher training: learning rate (default base.optim.lr)
    seed: Optional[int] = None  # teacher training seed (default: the first of ``seeds``)
    cache: bool = False  # serve the teacher from a logit cache in the logit-based distillations (augment off)


class StudentSpec(_Strict):
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class MethodSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: Optional[str] = None  # the name in folders and tables (default: name); needed twice the same method

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, v):
        return {"name": v} if isinstance(v, str) else v

    @property
    def key(self) -> str:
        return self.label or self.name


class OutputSpec(_Strict):
    dir: str = "runs/pipeline"


class PipelineConfig(_Strict):
    base: PipelineBase = Field(default_factory=PipelineBase)
    teacher: TeacherSpec
    student: StudentSpec
    #: S_ref: ``distilled`` (KD from T0), ``vanilla`` (the vanilla student of the first seed) or a checkpoint path
    reference: str = "distilled"
    reference_epochs: Optional[int] = Field(None, ge=1)  # distilled reference: epochs (default base.train.epochs)
    reference_params: dict[str, Any] = Field(default_factory=dict)  # distilled reference: KD parameters
    aid: AIDParams = Field(default_factory=AIDParams)
    methods: list[MethodSpec] = Field(default_factory=lambda: [MethodSpec(name="kd")], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    online: bool = False  # also run the online variant (aid_online) per seed
    online_params: dict[str, Any] = Field(default_factory=dict)  # overrides of the aid_online parameters
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_validator(mode="before")
    @classmethod
    def _reference_at_top(cls, v):
        if isinstance(v, dict) and isinstance(v.get("aid"), dict):
            bad = [k for k in ("reference", "reference_checkpoint") if k in v["aid"]]
            if bad:
                raise ValueError(f"aid.{bad[0]} is set by the top-level key 'reference' in a pipeline config "
                                 "(distilled, vanilla or a checkpoint path)")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    # ------------------------------------------------------------------------------------------------ derived
    @property
    def reference_kind(self) -> str:
        return self.reference if self.reference in ("distilled", "vanilla") else "checkpoint"

    def online_method_params(self) -> dict:
        """The aid_online parameters: the pipeline's ``aid`` section, KD weights 0.1 / 0.9, ``online_params`` on
        top (``online_params.aid`` merged key by key)."""
        p = {"ce_weight": 0.1, "kd_weight": 0.9, **self.online_params}
        p["aid"] = {**self.aid.model_dump(mode="json"), **dict(self.online_params.get("aid") or {})}
        return p

    def run_dict(self, model: dict, method: dict, seed: int, teacher: dict | None = None,
                 epochs: int | None = None, lr: float | None = None) -> dict:
        """A RunConfig dict (without ``output``) of one engine stage."""
        d = self.base.model_dump(mode="json")
        d["model"] = model
        d["method"] = method
        if teacher is not None:
            d["teacher"] = teacher
        d["train"]["seed"] = seed
        if epochs is not None:
            d["train"]["epochs"] = epochs
        if lr is not None:
            d["optim"]["lr"] = lr
        return d

    def check(self, source: str = "") -> None:
        """Checks that need the registries: method names and parameters, model names, AID compatibility."""
        from ..methods import METHODS
        from ..methods.kd import KDParams
        from ..models import MODELS
        from ..models.registry import canonical_name
        from .online import AIDOnlineParams

        where = f"bad pipeline config {source or '(dict)'}"
        for key, name in (("teacher.name", self.teacher.name), ("student.name", self.student.name)):
            if not name.startswith(("tv:", "timm:")) and canonical_name(name) not in MODELS:
                raise UserError(f"{where}: {key}: unknown model {name!r}; `aidkd models` lists them")
        labels = set()
        for i, m in enumerate(self.methods):
            if m.name == "vanilla":
                raise UserError(f"{where}: methods[{i}]: the vanilla student is always trained (the baseline); "
                                "list distillation methods only")
            if m.name not in METHODS:
                raise UserError(f"{where}: methods[{i}].name: unknown method {m.name!r}; choose one of: "
                                f"{', '.join(n for n in METHODS.names() if n != 'vanilla')}")
            _validate(METHODS.get(m.name).Params, m.params, f"{where}: methods[{i}].params")
            if m.key in labels:
                raise UserError(f"{where}: methods[{i}]: {m.key!r} is listed twice; give each a distinct label")
            labels.add(m.key)
            needed = METHODS.get(m.name).teacher_model_needed()
            if self.aid.mode == "projection" and needed:
                raise UserError(f"{where}: method {m.name!r} {needed}, which a projection "
                                "teacher (per-sample targets) does not have; use aid.mode: finetune for it")
        if self.reference_kind == "distilled":
            _validate(KDParams, self.reference_params, f"{where}: reference_params")
        elif self.reference_params or self.reference_epochs:
            raise UserError(f"{where}: reference_params / reference_epochs apply to reference: distilled only")
        if self.online:
            _validate(AIDOnlineParams, self.online_method_params(), f"{where}: online_params")
        elif self.online_params:
            raise UserError(f"{where}: online_params is set but online is false")
        if self.aid.mode == "projection" and self.base.data.augment:
            raise UserError(f"{where}: aid.mode: projection needs fixed training views: set base.data.augment: "
                            "false (for the baseline students too, so that they compare)")
        if self.teacher.cache and self.base.data.augment:
            raise UserError(f"{where}: teacher.cache needs base.data.augment: false")


def _validate(params_cls, d: dict, where: str) -> None:
    try:
        params_cls(**d)
    except ValidationError as e:
        raise UserError(f"{where}: {validation_message(e, params_cls)}") from None


def pipeline_config_from_dict(d: dict, source: str = "") -> PipelineConfig:
    try:
        cfg = PipelineConfig.model_validate(d)
    except ValidationError as e:
        raise UserError(f"bad pipeline config {source or '(dict)'}: {validation_message(e, PipelineConfig)}") from None
    cfg.check(source)
    return cfg


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """A pipeline config from a YAML file (or a shipped name like ``pipeline/digits_quick``) and dotted
    overrides (``base.train.epochs=2 aid.lambda_ic=2 output.dir=runs/x``)."""
    p = resolve_config_path(path)
    d = apply_overrides(read_yaml(p), overrides or [])
    return pipeline_config_from_dict(d, str(path))


# ----------------------------------------------------------------------------------------------------- stages
def _teacher_section(cfg: PipelineConfig, checkpoint: str, cache: bool) -> dict:
    return {"name": cfg.teacher.name, "checkpoint": checkpoint, "kwargs": dict(cfg.teacher.kwargs), "cache": cache}


def _student(cfg: PipelineConfig) -> dict:
    return {"name": cfg.student.name, "kwargs": dict(cfg.student.kwargs)}


def _method(name: str, params: dict) -> dict:
    """The method section of a run, its parameters completed with the defaults (so that ``{}`` and the defaults
    spelt out give the same fingerprint, and the distilled reference is recognised as the KD baseline)."""
    from ..methods import METHODS

    return {"name": name, "params": METHODS.get(name).Params(**params).model_dump(mode="json")}


def _uses_cache(cfg: PipelineConfig, method: str) -> bool:
    from ..methods import METHODS

    return cfg.teacher.cache and not METHODS.get(method).teacher_model_needed()


def teacher_stage(cfg: PipelineConfig, runner: StageRunner) -> StageResult:
    if cfg.teacher.checkpoint:
        if cfg.teacher.epochs or cfg.teacher.lr:
            runner.log("teacher.checkpoint is given: teacher.epochs / teacher.lr are not used")
        return runner.given("teacher", cfg.teacher.checkpoint)
    d = cfg.run_dict({"name": cfg.teacher.name, "kwargs": dict(cfg.teacher.kwargs)}, {"name": "vanilla"},
                     cfg.teacher.seed if cfg.teacher.seed is not None else cfg.seeds[0],
                     epochs=cfg.teacher.epochs, lr=cfg.teacher.lr)
    return runner.train_stage("teacher", d)


def vanilla_stage(cfg: PipelineConfig, runner: StageRunner, seed: int) -> StageResult:
    return runner.train_stage(f"vanilla-s{seed}", cfg.run_dict(_student(cfg), {"name": "vanilla"}, seed))


def reference_stage(cfg: PipelineConfig, runner: StageRunner, t0: StageResult) -> StageResult:
    kind = cfg.reference_kind
    if kind == "checkpoint":
        return runner.given("reference", cfg.reference)
    if kind == "vanilla":
        v = runner.results.get(f"vanilla-s{cfg.seeds[0]}") or vanilla_stage(cfg, runner, cfg.seeds[0])
        res = StageResult("reference", v.kind, v.dir, "reused", v.fingerprint, v.record)
        runner.results["reference"] = res
        runner.log(f"[bold]stage reference[/]: the vanilla student -> {v.dir}")
        return res
    d = cfg.run_dict(_student(cfg), _method("kd", cfg.reference_params), cfg.seeds[0],
                     teacher=_teacher_section(cfg, str(t0.checkpoint), _uses_cache(cfg, "kd")),
                     epochs=cfg.reference_epochs)
    return runner.train_stage("reference", d)


def adapt_stage(cfg: PipelineConfig, runner: StageRunner, t0: StageResult, ref: StageResult) -> StageResult:
    """Adapt T0 towards S_ref; the adapted teacher is ``<stage>/teacher.pt``, the report ``report.json``."""
    params = cfg.aid
    seed = cfg.seeds[0]
    distill_epochs = cfg.base.train.epochs
    ref_is_aidkd = checkpoint_config(ref.checkpoint) is not None
    inputs = {
        "teacher": {"name": cfg.teacher.name, "kwargs": cfg.teacher.kwargs, "sha256": file_hash(t0.checkpoint)},
        "reference": {"name": None if ref_is_aidkd else cfg.student.name, "kwargs": cfg.student.kwargs,
                      "sha256": file_hash(ref.checkpoint)},
        "aid": params.model_dump(mode="json"), "data": cfg.base.data.model_dump(mode="json"),
        "adapt_epochs": params.num_epochs(distill_epochs) if params.mode != "projection" else None,
        "seed": seed, "device": cfg.base.train.device,
        "deterministic": cfg.base.train.deterministic,
    }

    def run(folder: Path) -> tuple[str, dict]:
        from ..data import build_data
        from ..engine.trainer import evaluate, resolve_device, seed_everything
        from .adapt import adapt_teacher
        from ..engine.checkpoint import model_checkpoint, save_checkpoint
        from .stages import load_model

        device = resolve_device(cfg.base.train.device)
        seed_everything(seed, cfg.base.train.deterministic)
        dcfg = cfg.base.data.model_copy(update={"balanced": None})
        data = build_data(dcfg, device=device, seed=seed)
        spec = data.spec
        teacher = load_model(t0.checkpoint, spec, cfg.teacher.name, cfg.teacher.kwargs)
        reference = load_model(ref.checkpoint, spec, None if ref_is_aidkd else cfg.student.name,
                               None if ref_is_aidkd else cfg.student.kwargs)
        extra: dict = {"distill_epochs": distill_epochs, "seed": seed,
                       "teacher_checkpoint": str(t0.checkpoint), "reference_checkpoint": str(ref.checkpoint)}
        if params.mode != "projection":  # finetune: class-balanced batches; mcmi: the ordinary training batches
            if params.mode == "finetune":
                P = params.P or min(spec.num_classes, max(1, dcfg.batch_size // params.K))
                bal = build_data(dcfg.model_copy(update={"balanced": [P, params.K]}), device=device, seed=seed)
                loader, extra["balanced"] = bal.train, [P, params.K]
            else:
                loader = data.train
            adapted, report = adapt_teacher(teacher, reference, loader, data.test, params, device,
                                            distill_epochs=distill_epochs)
            rd = report.to_dict()
            rd.update(extra, eval_split="test")
            run_cfg = cfg.run_dict({"name": cfg.teacher.name, "kwargs": dict(cfg.teacher.kwargs)},
                                   {"name": "vanilla"}, seed)
            run_cfg["meta"] = {"aid_adapted": True, "aid": params.model_dump(mode="json"),
                               "adapted_from": str(t0.checkpoint), "reference": str(ref.checkpoint)}
            ck = model_checkpoint(adapted, cfg.teacher.name, spec, cfg.teacher.kwargs, run_cfg, report.epochs)
            save_checkpoint({**ck, "metrics": {"test.top1": report.teacher_acc_after}}, folder / "teacher.pt")
        else:
            t0_test = evaluate(teacher.to(device), data.test, device)["top1"]
            adapted, report = adapt_teacher(teacher, reference, data.train.as_eval(), None, params, device)
            rd = report.to_dict()
            rd.update(extra, teacher_test_acc=t0_test)
            adapted.save(folder / "teacher.pt")
        if report.acc_warning:
            runner.log(f"[bold red]WARNING: the adapted teacher lost {report.acc_drop:.2f} accuracy points "
                       f"({report.teacher_acc_before:.2f} -> {report.teacher_acc_after:.2f}), more than the tolerance "
                       f"of {report.acc_tolerance:.2f}[/]")
        return "teacher.pt", rd

    return runner.adapt_stage("adapt", inputs, run)


def distill_stage(cfg: PipelineConfig, runner: StageRunner, m: MethodSpec, seed: int, teacher: StageResult,
                  aid: bool) -> StageResult:
    name = f"{'aid-' if aid else ''}{m.key}-s{seed}"
    method = _method(m.name, m.params)
    if aid and cfg.aid.mode == "projection":
        from .project import TargetTeacher

        t = TargetTeacher.load(teacher.checkpoint)
        d = cfg.run_dict(_student(cfg), method, seed, teacher=_teacher_section(cfg, str(teacher.checkpoint), False))
        return runner.train_stage(name, d, teacher=t)
    d = cfg.run_dict(_student(cfg), method, seed,
                     teacher=_teacher_section(cfg, str(teacher.checkpoint), _uses_cache(cfg, m.name)))
    return runner.train_stage(name, d)


def online_stage(cfg: PipelineConfig, runner: StageRunner, seed: int, t0: StageResult) -> StageResult:
    d = cfg.run_dict(_student(cfg), _method("aid_online", cfg.online_method_params()), seed,
                     teacher=_teacher_section(cfg, str(t0.checkpoint), False))
    return runner.train_stage(f"aid_online-s{seed}", d)


# ----------------------------------------------------------------------------------------------------- runners
def _runner(cfg: PipelineConfig, overwrite: bool, on_epoch_end, verbose: bool) -> StageRunner:
    runner = StageRunner(cfg.output.dir, overwrite=overwrite, on_epoch_end=on_epoch_end, verbose=verbose)
    runner.out.mkdir(parents=True, exist_ok=True)
    return runner


def run_adapt(cfg: PipelineConfig, *, overwrite: bool = False, on_epoch_end=None, verbose: bool = True) -> dict:
    """The stages up to the adapted teacher (teacher, reference and what it needs, adapt). Returns
    ``{"teacher": path, "report": dict, "stage": dir, "stages": {name: status}}``."""
    import json

    runner = _runner(cfg, overwrite, on_epoch_end, verbose)
    t0 = teacher_stage(cfg, runner)
    ref = reference_stage(cfg, runner, t0)
    ad = adapt_stage(cfg, runner, t0, ref)
    report = json.loads((ad.dir / "report.json").read_text())  # type: ignore[operator]
    return {"teacher": str(ad.checkpoint), "report": report, "stage": str(ad.dir),
            "stages": {n: r.status for n, r in runner.results.items()}}


def run_pipeline(cfg: PipelineConfig, *, overwrite: bool = False, on_epoch_end=None, verbose: bool = True) -> dict:
    """Run every stage (skipping the finished ones) and write ``results.md`` / ``results.json`` and
    ``pipeline.json`` (the config and the stages) into ``cfg.output.dir``.

    ``on_epoch_end(stage_name, epoch, record)`` is called after every epoch of every engine stage that runs.
    Returns ``{"results": dict, "stages": {name: status}, "table": path of results.md, "out_dir": path}``."""
    import json

    t_start = time.time()
    runner = _runner(cfg, overwrite, on_epoch_end, verbose)
    t0 = teacher_stage(cfg, runner)
    for s in cfg.seeds:
        vanilla_stage(cfg, runner, s)
    ref = reference_stage(cfg, runner, t0)
    ad = adapt_stage(cfg, runner, t0, ref)
    for s in cfg.seeds:
        for m in cfg.methods:
            distill_stage(cfg, runner, m, s, t0, aid=False)
            distill_stage(cfg, runner, m, s, ad, aid=True)
        if cfg.online:
            online_stage(cfg, runner, s, t0)
    report = json.loads((ad.dir / "report.json").read_text())  # type: ignore[operator]
    results = collect_results(cfg, runner, report, time.time() - t_start)
    out = runner.out
    atomic_write_json(out / "results.json", json_safe(results))
    table = results_markdown(results)
    atomic_write_text(out / "results.md", table)
    atomic_write_json(out / "pipeline.json", json_safe({
        "config": cfg.model_dump(mode="json"), "stages": [r.row() for r in runner.results.values()],
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    runner.log(f"results: {out / 'results.md'}")
    return {"results": results, "stages": {n: r.status for n, r in runner.results.items()},
            "table": str(out / "results.md"), "out_dir": str(out)}


# ----------------------------------------------------------------------------------------------------- results
def _stats(xs: list) -> dict:
    vals = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def _student_row(runner: StageRunner, names: list[str]) -> dict:
    res = [runner.results[n] for n in names]
    last = [r.summary.get("last_test_acc") for r in res]
    best = [r.summary.get("best_test_acc") for r in res]
    return {"stages": names, "last": last, "best": best, "last_stats": _stats(last), "best_stats": _stats(best),
            "selection": res[0].summary.get("selection") if res else None,
            "wall_time_s": [r.wall_time_s for r in res]}


def collect_results(cfg: PipelineConfig, runner: StageRunner, report: dict, wall_time_s: float) -> dict:
    seeds = cfg.seeds
    t = runner.results["teacher"]
    acc_before = report.get("teacher_acc_before")
    acc_after = report.get("teacher_acc_after")
    if cfg.aid.mode == "projection":  # the report's numbers are on the projected training samples
        acc_split = "train (projected samples)"
    else:
        acc_split = "test"
    methods = []
    for m in cfg.methods:
        base = _student_row(runner, [f"{m.key}-s{s}" for s in seeds])
        aid = _student_row(runner, [f"aid-{m.key}-s{s}" for s in seeds])
        gain = [a - b if a is not None and b is not None else None for a, b in zip(aid["last"], base["last"])]
        gain_best = [a - b if a is not None and b is not None else None for a, b in zip(aid["best"], base["best"])]
        methods.append({"method": m.key, "name": m.name, "params": m.params, "baseline": base, "aid": aid,
                        "gain_last": _stats(gain), "gain_best": _stats(gain_best)})
    out = {
        "dataset": cfg.base.data.name,
        "teacher": {"name": cfg.teacher.name, "checkpoint": str(t.checkpoint), "trained": t.kind == "train",
                    "acc_before": acc_before, "acc_after": acc_after, "acc_split": acc_split,
                    "test_acc": report.get("teacher_test_acc", acc_before if acc_split == "test" else None),
                    "acc_drop": report.get("acc_drop"), "acc_tolerance": report.get("acc_tolerance"),
                    "acc_warning": report.get("acc_warning")},
        "student": cfg.student.name,
        "reference": {"kind": cfg.reference_kind, "checkpoint": str(runner.results["reference"].checkpoint),
                      "acc": report.get("reference_acc")},
        "aid": {"mode": cfg.aid.mode, "ic_target": cfg.aid.ic_target, "tau": cfg.aid.tau,
                "lambda_ic": cfg.aid.lambda_ic, "lambda_cs": cfg.aid.lambda_cs, "lambda_ce": cfg.aid.lambda_ce,
                "epochs": report.get("epochs"), "alpha": cfg.aid.alpha if cfg.aid.mode == "projection" else None,
                "beta": report.get("beta")},
        "decomposition": {k: report.get(k) for k in ("kd_before", "cs_before", "ic_before", "kd_after", "cs_after",
                                                     "ic_after", "teacher_info_before", "teacher_info_after")} | {"split": report.get("eval_split")},
        "seeds": seeds,
        "epochs": cfg.base.train.epochs,
        "vanilla": _student_row(runner, [f"vanilla-s{s}" for s in seeds]),
        "methods": methods,
        "online": _student_row(runner, [f"aid_online-s{s}" for s in seeds]) if cfg.online else None,
        "stages": [r.row() for r in runner.results.values()],
        "pipeline_wall_time_s": wall_time_s,
    }
    return out


def _fmt(st: dict, digits: int = 2, signed: bool = False) -> str:
    if not st or st.get("mean") is None:
        return "-"
    m = f"{st['mean']:+.{digits}f}" if signed else f"{st['mean']:.{digits}f}"
    return m if st["n"] < 2 else f"{m} ± {st['std']:.{digits}f}"


def _num(x, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def results_markdown(r: dict) -> str:
    """The results table (Markdown) of :func:`collect_results`'s dict."""
    t, d, a = r["teacher"], r["decomposition"], r["aid"]
    n = len(r["seeds"])
    lines = [
        f"# AID pipeline: {r['dataset']}, teacher {t['name']} -> student {r['student']}",
        "",
        f"Seeds {', '.join(map(str, r['seeds']))} ({'mean ± std over ' + str(n) + ' seeds' if n > 1 else 'one seed'}); "
        f"{r['epochs']} distillation epochs. Student accuracy: test top-1 (%), at the last epoch and at the epoch "
        f"selected by the engine (selection: {r['vanilla']['selection']}).",
        "",
        "## Teacher and adaptation",
        "",
        "| | before AID | after AID |",
        "|---|---|---|",
        f"| teacher top-1 (%, {t['acc_split']}) | {_num(t['acc_before'], 2)} | {_num(t['acc_after'], 2)} |",
        f"| L_KD (teacher ‖ S_ref, {d['split']}) | {_num(d['kd_before'])} | {_num(d['kd_after'])} |",
        f"| L_CS (class-wise similarity) | {_num(d['cs_before'])} | {_num(d['cs_after'])} |",
        f"| L_IC (inner-class distribution) | {_num(d['ic_before'])} | {_num(d['ic_after'])} |",
        f"| I_T (teacher's inner-class information) | {_num(d.get('teacher_info_before'))} | "
        f"{_num(d.get('teacher_info_after'))} |",
        "",
        f"AID: mode {a['mode']}, ic_target {a['ic_target']}, tau {a['tau']:g}, lambda_ic {a['lambda_ic']:g}, "
        f"lambda_cs {a['lambda_cs']:g}, lambda_ce {a['lambda_ce']:g}"
        + (f", epochs {a['epochs']}" if a["mode"] != "projection" else f", alpha {a['alpha']:g}")
        + (f", beta {a['beta']:.3f}" if a.get("beta") is not None else "")
        + f". Reference S_ref: {r['reference']['kind']} (top-1 {_num(r['reference']['acc'], 2)}%).",
    ]
    if t["acc_split"] != "test" and t.get("test_acc") is not None:
        lines += ["", f"T0 test top-1: {t['test_acc']:.2f}% (the projection teacher serves the training split only)."]
    if t.get("acc_warning"):
        lines += ["", f"**WARNING: the adapted teacher lost {t['acc_drop']:.2f} points, more than the tolerance of "
                      f"{t['acc_tolerance']:.2f}.**"]
    lines += [
        "",
        "## Students",
        "",
        "| method | without AID: last | without AID: best-sel. | with AID: last | with AID: best-sel. | "
        "AID gain: last | AID gain: best-sel. |",
        "|---|---|---|---|---|---|---|",
        f"| vanilla (CE only) | {_fmt(r['vanilla']['last_stats'])} | {_fmt(r['vanilla']['best_stats'])} | - | - | - | - |",
    ]
    for m in r["methods"]:
        lines.append(f"| {m['method']} | {_fmt(m['baseline']['last_stats'])} | {_fmt(m['baseline']['best_stats'])} | "
                     f"{_fmt(m['aid']['last_stats'])} | {_fmt(m['aid']['best_stats'])} | "
                     f"{_fmt(m['gain_last'], signed=True)} | {_fmt(m['gain_best'], signed=True)} |")
    if r.get("online"):
        o = r["online"]
        lines.append(f"| aid_online (KD, adapted online) | - | - | {_fmt(o['last_stats'])} | {_fmt(o['best_stats'])} "
                     "| - | - |")
    lines += ["", "## Stages", "", "| stage | status (this run) | wall time (s) | folder |", "|---|---|---|---|"]
    for s in r["stages"]:
        folder = Path(s["dir"]).name if s["dir"] else s["checkpoint"]
        lines.append(f"| {s['stage']} | {s['status']} | {_num(s['wall_time_s'], 1)} | {folder} |")
    lines += ["", f"Pipeline wall time of this invocation: {r['pipeline_wall_time_s']:.1f} s "
                  "(skipped stages cost nothing; their recorded wall time is shown above).", ""]
    return "\n".join(lines)


__all__ = ["MethodSpec", "PipelineBase", "PipelineConfig", "StudentSpec", "TeacherSpec",
           "collect_results", "load_pipeline_config", "pipeline_config_from_dict", "results_markdown", "run_adapt",
           "run_pipeline"]
