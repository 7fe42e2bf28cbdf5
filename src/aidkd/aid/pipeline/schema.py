"""The AID pipeline's config: a typed schema (:class:`PipelineConfig`) and its checks.

Unknown keys and bad values are a :class:`~aidkd.errors.UserError` that names them and lists the allowed keys.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ...config import (DataConfig, OptimConfig, SchedConfig, TrainConfig, apply_overrides, read_yaml, run_dict,
                       resolve_config_path, validation_message)
from ...files.checkpoint import read_checkpoint
from ...errors import UserError
from ...methods import METHODS
from ...methods.aid_online import AIDOnlineParams
from ...methods.kd import KDParams
from ...models import MODELS
from ...models.registry import canonical_name
from ..adapt import AIDParams

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
    checkpoint: str | None = None  # trained T0; None: trained by the pipeline
    kwargs: dict[str, Any] = Field(default_factory=dict)
    #: the pipeline's teacher training starts from published weights (torchvision/timm models: true = the local
    #: cache, or a directory); false: from scratch
    pretrained: bool | str = False
    epochs: int | None = Field(None, ge=1)  # teacher training: epochs (default base.train.epochs)
    lr: float | None = Field(None, gt=0)  # teacher training: learning rate (default base.optim.lr)
    seed: int | None = None  # teacher training seed (default: the first of ``seeds``)
    #: serve the teacher (and the adapted teacher) from the view cache in the logit-based distillations:
    #: off | views (every crop/flip view, exact) | sampled (teacher.cache_views per image); true means views
    cache: Literal["off", "views", "sampled"] = "off"

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_bool(cls, v):
        return {True: "views", False: "off"}.get(v, v) if isinstance(v, bool) else v


class StudentSpec(_Strict):
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    pretrained: bool | str = False  # every student run starts from published weights (as teacher.pretrained)


class MethodSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None  # the name in folders and tables (default: name); needed twice the same method

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, v):
        return {"name": v} if isinstance(v, str) else v

    @property
    def key(self) -> str:
        return self.label or self.name


class OutputSpec(_Strict):
    dir: str = "runs/pipeline"


#: the keys of the pipeline's ``aid`` section that choose the pretrained student S_p, not the adaptation
REFERENCE_KEYS = ("reference", "reference_model", "reference_kwargs", "reference_epochs", "reference_params")


class PipelineAID(AIDParams):
    """The pipeline's ``aid`` section: the adaptation's options (:class:`~aidkd.aid.objective.AIDParams`) and the
    pretrained student S_p it adapts the teacher towards."""

    #: S_p: ``vanilla`` (the student trained with CE alone, the pipeline's vanilla run of the first seed),
    #: ``distilled`` (KD from T0) or a checkpoint path
    reference: str = "vanilla"
    #: a proxy S_p of another architecture (trained as ``reference`` says); None: the student's architecture
    reference_model: str | None = None
    reference_kwargs: dict[str, Any] = Field(default_factory=dict)  # the proxy's model kwargs
    reference_epochs: int | None = Field(None, ge=1)  # S_p's training epochs (default base.train.epochs)
    reference_params: dict[str, Any] = Field(default_factory=dict)  # distilled S_p: KD parameters

    @property
    def reference_kind(self) -> str:
        return self.reference if self.reference in ("distilled", "vanilla") else "checkpoint"

    def adaptation(self) -> AIDParams:
        """The adaptation's options alone."""
        return AIDParams(**self.model_dump(exclude=set(REFERENCE_KEYS)))


class PipelineConfig(_Strict):
    base: PipelineBase = Field(default_factory=PipelineBase)
    teacher: TeacherSpec
    student: StudentSpec
    aid: PipelineAID = Field(default_factory=PipelineAID)
    methods: list[MethodSpec] = Field(default_factory=lambda: [MethodSpec(name="kd")], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    online: bool = False  # also run the online variant (aid_online) per seed
    online_params: dict[str, Any] = Field(default_factory=dict)  # overrides of the aid_online parameters
    #: TAKD's assistant architecture: when set, TAKD (T0 -> assistant -> student with KD) runs beside the others
    #: and the cost table compares AID's time with it (the paper's Table 7)
    takd_assistant: str | None = None
    #: DGKD's assistants, largest first: when set, DGKD (each assistant from T0 and the assistants before it, then
    #: the student from all of them) runs beside the others and joins the cost table
    dgkd_assistants: list[str] = Field(default_factory=list)
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_validator(mode="before")
    @classmethod
    def _reference_in_aid(cls, v):
        if isinstance(v, dict):
            moved = [k for k in REFERENCE_KEYS if k in v]
            if moved:
                raise ValueError(f"{moved[0]} belongs to the aid section now: write aid.{moved[0]} (the pretrained "
                                 "student S_p: vanilla, distilled or a checkpoint path)")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    # ------------------------------------------------------------------------------------------------ derived
    @property
    def reference_model(self) -> str:
        """S_p's architecture: the proxy's, or the student's."""
        return self.aid.reference_model or self.student.name

    @property
    def reference_model_kwargs(self) -> dict:
        return dict(self.aid.reference_kwargs) if self.aid.reference_model else dict(self.student.kwargs)

    def online_method_params(self) -> dict:
        """The aid_online parameters: the pipeline's adaptation options, KD weights 0.1 / 0.9, ``online_params``
        on top (``online_params.aid`` merged key by key)."""
        p = {"ce_weight": 0.1, "kd_weight": 0.9, **self.online_params}
        p["aid"] = {**self.aid.adaptation().model_dump(mode="json"),
                    **dict(self.online_params.get("aid") or {})}
        return p

    def run_dict(self, model: dict, method: dict, seed: int, teacher: dict | None = None,
                 epochs: int | None = None, lr: float | None = None) -> dict:
        """A RunConfig dict (without ``output``) of one engine stage (:func:`aidkd.config.run_dict`)."""
        return run_dict(self.base.model_dump(mode="json"), model=model, method=method, teacher=teacher, seed=seed,
                        epochs=epochs, lr=lr)

    def check_given_checkpoints(self) -> None:
        """Read the checkpoints the config names (the teacher, a reference file): a missing, corrupt or unsafe
        file is refused before any stage runs, not when the stage that needs it starts. Not part of
        :meth:`check`: a plan may load a config whose teacher an earlier stage of the plan will train."""
        given = [("teacher.checkpoint", self.teacher.checkpoint)]
        if self.aid.reference_kind == "checkpoint":
            given.append(("aid.reference", self.aid.reference))
        for key, path in given:
            if path:
                try:
                    read_checkpoint(path)
                except UserError as e:
                    raise UserError(f"pipeline config: {key}: {e}") from None

    def check(self, source: str = "") -> None:
        """Checks that need the registries: method names and parameters, model names, AID compatibility."""
        where = f"bad pipeline config {source or '(dict)'}"
        models = [("teacher.name", self.teacher.name), ("student.name", self.student.name)]
        models += [(k, n) for k, n in (("aid.reference_model", self.aid.reference_model),
                                       ("takd_assistant", self.takd_assistant)) if n]
        models += [(f"dgkd_assistants[{i}]", n) for i, n in enumerate(self.dgkd_assistants)]
        for key, name in models:
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
            if self.aid.objective == "projection" and needed:
                raise UserError(f"{where}: method {m.name!r} {needed}, which a projection "
                                "teacher (per-sample targets) does not have; use a fine-tuning aid.objective for it")
        a = self.aid
        if a.reference_kind == "distilled":
            _validate(KDParams, a.reference_params, f"{where}: aid.reference_params")
        elif a.reference_params:
            raise UserError(f"{where}: aid.reference_params applies to aid.reference: distilled only")
        if a.reference_kind == "checkpoint" and (a.reference_model or a.reference_epochs):
            raise UserError(f"{where}: aid.reference_model / aid.reference_epochs choose how S_p is trained; a "
                            "checkpoint given as aid.reference is used as it is")
        if self.online:
            _validate(AIDOnlineParams, self.online_method_params(), f"{where}: online_params")
        elif self.online_params:
            raise UserError(f"{where}: online_params is set but online is false")
        if self.aid.objective == "projection" and self.base.data.augment:
            raise UserError(f"{where}: aid.objective: projection needs fixed training views: set base.data.augment: "
                            "false (for the baseline students too, so that they compare)")


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


__all__ = ["REFERENCE_KEYS", "MethodSpec", "OutputSpec", "PipelineAID", "PipelineBase", "PipelineConfig", "StudentSpec",
           "TeacherSpec", "load_pipeline_config", "pipeline_config_from_dict"]
