"""The AID pipeline's config: a typed schema (:class:`PipelineConfig`) and its checks.

Unknown keys and bad values are a :class:`~aidkd.errors.UserError` that names them and lists the allowed keys.
"""
from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ...config import DataConfig, OptimConfig, SchedConfig, TrainConfig, apply_overrides, read_yaml, resolve_config_path
from ...errors import UserError
from ..adapt import AIDParams

#: methods that need the real teacher model (its features, or its outputs on views other than the training
#: view): they cannot use a projection teacher (per-sample targets) or a teacher-output cache
NEEDS_TEACHER_MODEL = {
    "at": "needs the teacher's features",
    "crd": "needs the teacher's features",
    "fitnet": "needs the teacher's features",
    "reviewkd": "needs the teacher's features",
    "mlkd": "needs the teacher's outputs on strongly augmented views",
    "aid_online": "adapts the teacher model itself",
}


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
        a = self.aid
        p = {"tau": a.tau, "ce_weight": 0.1, "kd_weight": 0.9, "lambda_ce": a.lambda_ce, "lambda_ic": a.lambda_ic,
             "lambda_cs": a.lambda_cs, "detach_class_weights": a.detach_class_weights, "ic_target": a.ic_target,
             "beta": a.beta, "entropy_weights": a.entropy_weights, "sinkhorn_iters": a.sinkhorn_iters,
             "teacher_lr": a.lr, "teacher_momentum": a.momentum, "teacher_weight_decay": a.weight_decay,
             "freeze_bn": a.freeze_bn}
        p.update(self.online_params)
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
        from ...methods import METHODS
        from ...methods.kd import KDParams
        from ...models import MODELS
        from ...models.registry import canonical_name
        from ..online import AIDOnlineParams

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
            if self.aid.mode == "projection" and m.name in NEEDS_TEACHER_MODEL:
                raise UserError(f"{where}: method {m.name!r} {NEEDS_TEACHER_MODEL[m.name]}, which a projection "
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
        raise UserError(f"{where}: {_errors(e, params_cls)}") from None


def _errors(e: ValidationError, root: type[BaseModel] | None = None) -> str:
    msgs = []
    for err in e.errors():
        loc = tuple(err["loc"])
        key = _loc(loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1], root or PipelineConfig)
            msgs.append(f"unknown key {key!r}" + (f" (allowed: {', '.join(allowed)})" if allowed else ""))
        elif err["type"] == "missing":
            msgs.append(f"missing key {key!r}")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            msgs.append(f"{key}: {msg} (got {err.get('input')!r})" if key else msg)
    return "; ".join(msgs)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_in(ann) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in typing.get_args(ann):
        m = _model_in(a)
        if m is not None:
            return m
    return None


def _allowed_keys(section: tuple, root: type[BaseModel]) -> list[str]:
    model: Any = root
    for part in section:
        if isinstance(part, int):
            continue
        f = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if f is None:
            return []
        model = _model_in(f.annotation)
        if model is None:
            return []
    return sorted(model.model_fields)


def pipeline_config_from_dict(d: dict, source: str = "") -> PipelineConfig:
    try:
        cfg = PipelineConfig.model_validate(d)
    except ValidationError as e:
        raise UserError(f"bad pipeline config {source or '(dict)'}: {_errors(e)}") from None
    cfg.check(source)
    return cfg


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """A pipeline config from a YAML file (or a shipped name like ``pipeline/digits_quick``) and dotted
    overrides (``base.train.epochs=2 aid.lambda_ic=2 output.dir=runs/x``)."""
    p = resolve_config_path(path)
    d = apply_overrides(read_yaml(p), overrides or [])
    return pipeline_config_from_dict(d, str(path))


__all__ = ["NEEDS_TEACHER_MODEL", "MethodSpec", "OutputSpec", "PipelineBase", "PipelineConfig", "StudentSpec",
           "TeacherSpec", "load_pipeline_config", "pipeline_config_from_dict"]
