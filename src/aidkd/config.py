"""Typed, validated run configuration: small YAML files plus dotted overrides.

    cfg = load_config("configs/fmnist/resnet8.yaml", ["optim.lr=0.1", "train.epochs=5"])

Unknown keys and bad values are rejected with a :class:`~aidkd.errors.UserError` that names the key and what is
allowed (with a "did you mean" for a near miss). Non-finite numbers (``.nan``, ``.inf``, ``1e400``) are refused in
every value. YAML is read with a bounded loader: at most :data:`MAX_YAML_BYTES` per document and
:data:`MAX_YAML_NODES` values once aliases are expanded (an alias bomb is refused at once), and syntax errors
name the line and column. Configs hold values only; code holds behaviour.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UserError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


#: the largest config document read (bytes); real configs are a few hundred bytes
MAX_YAML_BYTES = 1 << 20
#: the most values a YAML document may expand to once its aliases are resolved
MAX_YAML_NODES = 100_000


def did_you_mean(word: str, choices) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to ``word``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def safe_load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document with :func:`yaml.safe_load`'s types, refusing documents larger than
    :data:`MAX_YAML_BYTES` or expanding (through aliases) to more than :data:`MAX_YAML_NODES` values; errors name
    ``source`` with the line and column."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise UserError(f"{source} is larger than {MAX_YAML_BYTES} bytes; a config is a small YAML file")
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as e:  # the reader refuses control characters (a file of NUL bytes) at once
        raise UserError(f"{source} is not a YAML text file: {str(e).splitlines()[0]}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        n = _expanded_size(node, {})
        if n > MAX_YAML_NODES:
            raise UserError(f"{source} expands to more than {MAX_YAML_NODES} values through YAML aliases (&/*); "
                            "write the values out")
        twice = _duplicate_key(node, set())
        if twice is not None:
            raise UserError(f"{source}: the key {twice.value!r} appears twice in one mapping (line "
                            f"{twice.start_mark.line + 1}); keep one of them")
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise UserError(f"{source} is not valid YAML{where}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{source} is not valid YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise UserError(f"{source} is nested too deeply to be a config") from None
    finally:
        loader.dispose()


def _expanded_size(node, memo: dict) -> int:
    """The number of values ``node`` stands for with every alias expanded (shared nodes counted each time)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_YAML_NODES + 1  # a node that contains itself expands without bound
    if isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_size(c, memo) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        n = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        n = 1
    memo[key] = min(n, MAX_YAML_NODES + 1)
    return memo[key]


def _duplicate_key(node, seen: set) -> Any:
    """The first scalar key node that repeats a key of the same mapping, at any depth (None when there is none):
    YAML would keep the last value silently."""
    if id(node) in seen:
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set = set()
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                if k.value in keys:
                    return k
                keys.add(k.value)
            found = _duplicate_key(v, seen)
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for c in node.value:
            found = _duplicate_key(c, seen)
            if found is not None:
                return found
    return None


def check_finite(d: Any, source: str, path: str = "") -> None:
    """Raise a UserError naming the first key whose value (at any depth) is a non-finite float."""
    if isinstance(d, float) and not math.isfinite(d):
        raise UserError(f"{source}: {path or 'value'}={d} is not a finite number; give a finite value")
    if isinstance(d, dict):
        for k, v in d.items():
            check_finite(v, source, f"{path}.{k}" if path else str(k))
    elif isinstance(d, (list, tuple)):
        for i, v in enumerate(d):
            check_finite(v, source, f"{path}[{i}]")


class DataConfig(_Section):
    name: str = "digits"
    root: Optional[str] = None  # where the files are; default $AIDKD_DATA or ~/.cache/aidkd/data
    batch_size: int = Field(64, ge=1)  # global batch size, split across processes
    eval_batch_size: int = Field(256, ge=1)
    val_split: float = Field(0.0, ge=0.0, lt=1.0)  # fraction of train held out for model selection
    augment: bool = True  # the dataset's standard training augmentation
    in_memory: Literal["auto", "on", "off"] = "auto"  # keep a small-image dataset as one tensor on the device
    workers: int = Field(2, ge=0)
    download: bool = True  # try to download when files are missing (needs network)
    train_subset: Optional[int] = Field(None, ge=1)  # first N training samples (class-stratified), for quick runs
    balanced: Optional[list[int]] = None  # [P, K]: class-balanced batches of P classes x K samples

    @field_validator("in_memory", mode="before")
    @classmethod
    def _yaml_onoff(cls, v):  # YAML reads bare on/off as booleans
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


class ModelConfig(_Section):
    name: str = "resnet8"
    in_chans: Optional[int] = None  # default: the dataset's channels
    pretrained: bool | str = False  # published weights: true = the local cache, or a cache directory
    checkpoint: Optional[str] = None  # initial weights (aidkd checkpoint or a published state dict)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TeacherConfig(_Section):
    """What the teacher is: ``kind: model`` (an architecture ``name`` with ``checkpoint`` or ``pretrained``
    weights), ``logits`` (``checkpoint``: a file of per-sample training logits, written by a logits stage) or
    ``targets`` (``checkpoint``: an AID projection teacher's per-sample targets)."""

    kind: Literal["model", "logits", "targets"] = "model"
    name: Optional[str] = None
    checkpoint: Optional[str] = None
    pretrained: bool | str = False  # published weights: true = the local cache, or a cache directory
    #: serve the teacher's logits from the shared view cache (docs/speed.md; logit methods only): "views" = every
    #: view of the augmentation (exact), "sampled" = cache_views views per image (a change of recipe), "off"
    cache: Literal["off", "views", "sampled"] = "off"
    cache_views: int = Field(8, ge=1)  # sampled mode: views stored per image
    cache_topk: Optional[int] = Field(None, ge=1)  # store only the top-k logits per view (approximate)
    cache_budget_gb: float = Field(8.0, gt=0)  # refuse to build a cache larger than this
    lean: bool = True  # fold the frozen teacher's batch norms into its convolutions (logit methods)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_bool(cls, v):  # true/false (and YAML's on/off): the exact cache or none
        return {True: "views", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _kind_needs_file(self):
        if self.kind != "model":
            if not self.checkpoint:
                raise ValueError(f"teacher.kind: {self.kind} serves a file: set teacher.checkpoint to it")
            if self.cache != "off" or self.pretrained:
                raise ValueError(f"teacher.cache / teacher.pretrained apply to teacher.kind: model, not {self.kind}")
        return self


class MethodConfig(_Section):
    name: str = "vanilla"
    params: dict[str, Any] = Field(default_factory=dict)  # validated by the method's own Params class


class OptimConfig(_Section):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)


class SchedConfig(_Section):
    name: Literal["multistep", "cosine", "constant", "onecycle"] = "multistep"
    milestones: list[int] = Field(default_factory=lambda: [150, 180, 210])  # epochs, multistep only
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr: float = Field(0.0, ge=0)  # cosine floor


class TrainConfig(_Section):
    epochs: int = Field(240, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a non-finite loss: stop with the last good checkpoint, or skip the step
    max_skipped_steps: int = Field(10, ge=1)  # on_nonfinite=skip: stop after this many non-finite steps in a row
    log_every: int = Field(20, ge=1)  # steps between host reads of the loss (progress bar, non-finite check)
    dist_timeout_s: float = Field(300.0, gt=0)  # collective timeout under torchrun: a stalled or lost peer ends the job
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto = bf16 autocast on CUDA and on CPUs with native bf16 (engine/precision.py)
    channels_last: bool = True  # student and teacher in channels_last (measured faster: docs/results/lean_teacher.md)
    compile: bool = False
    #: evaluate and save an exponential moving average of the student's weights (and batch-norm statistics),
    #: updated after every step with this decay (e.g. 0.99); the raw student's accuracy is logged beside it
    ema_decay: Optional[float] = Field(None, gt=0, lt=1)
    deterministic: bool = False
    select_on: Literal["auto", "val", "test", "last"] = "auto"  # which split picks the best checkpoint
    eval_every: int = Field(1, ge=1)
    progress: bool = True
    tensorboard: bool = True
    wandb: bool = False
    max_steps_per_epoch: Optional[int] = Field(None, ge=1)  # for smoke tests

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_onoff(cls, v):  # YAML reads bare on/off as booleans
        return {True: "bf16", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or v.startswith("cuda:"):
            return v
        raise ValueError("must be auto, cpu, cuda or cuda:N")


class OutputConfig(_Section):
    dir: str = "runs"
    name: Optional[str] = None  # default: derived from model, method and seed


#: train options added after runs were recorded, with the default that reproduces those runs: left out of
#: :meth:`RunConfig.identity` while at that default
#: How a config keeps the identity of the runs made before one of its options existed, the one mechanism: each
#: dotted key is left out of :meth:`RunConfig.identity` while it holds the value listed (the value those runs had
#: without saying), and one marked ``_NEVER_HASHED`` never changes results; a value renamed since is hashed under
#: its first spelling (``_IDENTITY_SPELLINGS``). A new option that changes results gets an entry here, so that every
#: stage and run folder made before it is still found.
_NEVER_HASHED = object()
_IDENTITY_DEFAULTS = {
    "assistants": [], "train.on_nonfinite": "stop", "train.max_skipped_steps": 10, "train.ema_decay": None,
    "teacher.kind": "model", "teacher.cache_views": 8, "teacher.cache_topk": None, "teacher.lean": True,
    "teacher.cache_budget_gb": _NEVER_HASHED,
}
_IDENTITY_SPELLINGS = {"teacher.cache": {"off": False, "views": True}}
#: train options that change how a run is shown or waited on, never what it computes
_DISPLAY_TRAIN_OPTIONS = ("progress", "log_every", "dist_timeout_s", "tensorboard", "wandb")


class RunConfig(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    #: further guides beside the teacher, largest first (DGKD's teacher assistants): each a teacher section
    assistants: list[TeacherConfig] = Field(default_factory=list)
    method: MethodConfig = Field(default_factory=MethodConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    sched: SchedConfig = Field(default_factory=SchedConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    # free-form notes carried into the run record (e.g. the published accuracy a suite compares against)
    meta: dict[str, Any] = Field(default_factory=dict)

    def run_name(self) -> str:
        if self.output.name:
            return self.output.name
        parts = [self.data.name, self.model.name, self.method.name]
        if self.teacher.name:
            parts.insert(1, self.teacher.name)
        return "-".join(parts) + f"-s{self.train.seed}"

    def recorded(self) -> dict:
        """The config as a checkpoint records it: everything but where the run was written and how it was shown,
        so that the same computation in two folders writes the same bytes."""
        d = self.model_dump(mode="json")
        d.pop("output", None)
        for k in _DISPLAY_TRAIN_OPTIONS:
            d["train"].pop(k, None)
        return d

    def identity(self) -> dict:
        """The config as it identifies a computation: everything that changes results (not the output location
        or the display), with the options of ``_IDENTITY_DEFAULTS`` left out at their neutral values.
        :meth:`fingerprint` and the stage layer both hash this."""
        d = self.recorded()
        for key, spelling in _IDENTITY_SPELLINGS.items():
            section, name = key.split(".")
            d[section][name] = spelling.get(d[section][name], d[section][name])
        for key, neutral in _IDENTITY_DEFAULTS.items():
            *path, name = key.split(".")
            node = d
            for part in path:
                node = node[part]
            if neutral is _NEVER_HASHED or node.get(name) == neutral:
                node.pop(name, None)
        return d

    def fingerprint(self) -> str:
        """A hash of everything that changes results (:meth:`identity`)."""
        d = self.identity()
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def parse_value(text: str) -> Any:
    """Parse an override's value as YAML (so 0.1, true, [150, 180], null work)."""
    try:
        return safe_load_yaml(text, "override value")
    except UserError as e:
        if "expands to more than" in str(e) or "larger than" in str(e):
            raise
        return text


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    d = copy.deepcopy(d)
    for ov in overrides:
        if "=" not in ov:
            raise UserError(f"override {ov!r} is not of the form key.path=value (e.g. optim.lr=0.1)")
        key, value = ov.split("=", 1)
        parts = key.strip().split(".")
        node = d
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise UserError(f"override {key!r}: {part!r} is a value, not a section")
            node = node.setdefault(part, {})
        node[parts[-1]] = parse_value(value)
        check_finite(node[parts[-1]], f"override {ov!r}", key.strip())
    return d


def validation_message(e: ValidationError, root: type[BaseModel]) -> str:
    """One line naming every problem of a pydantic ``ValidationError`` raised by ``root`` (a model class), joined
    by "; ": ``unknown key 'a.b' (allowed: ...)``, ``missing key 'a.b'``, ``a.b: <message> (got <value>)``. List
    positions are written ``methods[1].name``. The one formatter of the package: every config, parameter class
    and data section reports its validation errors through it."""
    msgs = []
    for err in e.errors():
        loc = tuple(err["loc"])
        key = _key(loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(root, loc[:-1])
            msgs.append(f"unknown key {key!r}" + did_you_mean(loc[-1], allowed) + (f" (allowed: {', '.join(allowed)})" if allowed else ""))
        elif err["type"] == "missing":
            msgs.append(f"missing key {key!r}")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            msgs.append(f"{key}: {msg} (got {err.get('input')!r})" if key else msg)
    return "; ".join(msgs)


def format_validation_error(e: ValidationError, source: str) -> str:
    return f"bad config {source}: " + validation_message(e, RunConfig)


def _key(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model class inside an annotation (``Section``, ``Optional[Section]``, ``list[Section]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for a in typing.get_args(annotation):
        m = _model_in(a)
        if m is not None:
            return m
    return None


def _allowed_keys(root: type[BaseModel], section: tuple) -> list[str]:
    model: type[BaseModel] | None = root
    for part in section:
        if isinstance(part, int):
            continue
        f = model.model_fields.get(part) if model is not None else None
        model = _model_in(f.annotation) if f is not None else None
        if model is None:
            return []
    return sorted(model.model_fields) if model is not None else []


def run_dict(base: dict, *, model: str | dict, method: str | dict, teacher: dict | None = None,
             seed: int | None = None, epochs: int | None = None, lr: float | None = None, **sections) -> dict:
    """A RunConfig dict of one run of a plan: ``base`` (the sections its runs share: data, optim, sched, train;
    copied, never changed) with the run's ``model`` and ``method`` (a name or a section), its ``teacher`` section,
    ``train.seed``, ``train.epochs`` and ``optim.lr`` where given; ``sections`` (``data=``, ``output=``, ``meta=``)
    replace whole sections. The one way the plans (the AID pipeline, the suites, the Fashion-MNIST study) build
    their runs."""
    d = copy.deepcopy(base)
    d["model"] = {"name": model} if isinstance(model, str) else copy.deepcopy(model)
    d["method"] = {"name": method} if isinstance(method, str) else copy.deepcopy(method)
    if teacher is not None:
        d["teacher"] = copy.deepcopy(teacher)
    for section, key, value in (("train", "seed", seed), ("train", "epochs", epochs), ("optim", "lr", lr)):
        if value is not None:
            d.setdefault(section, {})[key] = value
    d.update(copy.deepcopy(sections))
    order = list(RunConfig.model_fields)  # the sections in the config's own order, as they are written
    return {k: d[k] for k in sorted(d, key=lambda k: order.index(k) if k in order else len(order))}


def config_from_dict(d: dict, source: str = "") -> RunConfig:
    check_finite(d, source or "(dict)")
    try:
        return RunConfig.model_validate(d)
    except ValidationError as e:
        raise UserError(format_validation_error(e, source or "(dict)")) from None


#: the configs shipped with the package (``configs/**/*.yaml`` in the package data)
SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> list[str]:
    """The names of the shipped configs, as ``resolve_config_path`` accepts them (e.g. ``pipeline/digits_quick``)."""
    if not SHIPPED_CONFIGS.is_dir():
        return []
    return sorted(str(p.relative_to(SHIPPED_CONFIGS).with_suffix("")) for p in SHIPPED_CONFIGS.rglob("*.yaml"))


def resolve_config_path(name: str | Path) -> Path:
    """The YAML file a ``--config`` value names.

    A path to an existing file is returned as it is (real paths always win). Otherwise the value is looked up
    among the shipped configs: ``pipeline/digits_quick``, ``pipeline/digits_quick.yaml`` and
    ``configs/pipeline/digits_quick.yaml`` all name ``<package>/configs/pipeline/digits_quick.yaml``. A name
    found nowhere is a UserError that lists the shipped configs.
    """
    p = Path(name).expanduser()
    if p.is_file():
        return p
    rel = Path(str(name).replace("\\", "/"))
    if rel.parts and rel.parts[0] == "configs":
        rel = Path(*rel.parts[1:]) if len(rel.parts) > 1 else Path()
    if str(rel) not in ("", ".") and not rel.is_absolute() and ".." not in rel.parts:
        for cand in (SHIPPED_CONFIGS / rel, SHIPPED_CONFIGS / f"{rel}.yaml", SHIPPED_CONFIGS / f"{rel}.yml"):
            if cand.is_file():
                return cand
    names = shipped_configs()
    close = difflib.get_close_matches(str(rel), names, n=5, cutoff=0.5)
    if close:
        hint = f"; did you mean: {', '.join(close)}?"
    else:
        folders = sorted({n.split("/")[0] for n in names})
        hint = f"; shipped configs are under: {', '.join(folders)} (see {SHIPPED_CONFIGS})" if folders else ""
    raise UserError(f"config file {str(name)!r} not found; give the path of a YAML file or a shipped config name{hint}")


def read_yaml(path: str | Path) -> dict:
    """A config file as a dict (bounded YAML, finite numbers); an empty file is ``{}``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} not found; give the path of a YAML file")
    source = f"config file {str(p)!r}"
    try:
        if p.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"{source} is larger than {MAX_YAML_BYTES} bytes; a config is a small YAML file")
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{source} is not UTF-8 text; a config is a YAML file") from None
    except OSError as e:
        raise UserError(f"{source} cannot be read ({e.strerror})") from None
    d = safe_load_yaml(text, source) or {}
    if not isinstance(d, dict):
        raise UserError(f"{source} must hold a mapping of sections (data:, model:, ...)")
    check_finite(d, source)
    return d


def load_config_dict(path: str | Path | None = None, overrides: list[str] | None = None,
                     base: dict | None = None) -> dict:
    """The raw config dict of ``path`` (a file or a shipped name) with ``overrides`` applied on top of ``base``."""
    d = dict(base or {})
    if path is not None:
        d = _deep_merge(d, read_yaml(resolve_config_path(path)))
    return apply_overrides(d, overrides or [])


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None,
                require_model: bool = False) -> RunConfig:
    """The validated config of ``path`` with ``overrides`` applied (see :func:`load_config_dict`).

    ``require_model`` (the CLI's training commands): refuse a config that does not name ``model.name``, so that
    an empty file or a bare ``aidkd train`` never starts a run of the defaults."""
    d = load_config_dict(path, overrides, base)
    if require_model:
        require_model_name(d, path)
    return config_from_dict(d, str(path) if path else "(overrides)")


def require_model_name(d: dict, path: str | Path | None) -> None:
    """Refuse a raw config that does not set ``model.name`` (one line saying how to give one)."""
    if not (isinstance(d.get("model"), dict) and d["model"].get("name")):
        what = f"config {str(path)!r} sets no model.name" if path else "no --config and no model.name given"
        raise UserError(f"{what}; name the model to train, e.g. model.name=resnet8 (see `aidkd models`), "
                        "or start from a shipped config such as --config fmnist/teacher")


#: the defaults a user most often leaves unset without meaning to, reported when a run starts
NOTABLE_DEFAULTS = ("data.name", "train.epochs", "optim.lr", "sched.name")


def defaults_used(d: dict, cfg: RunConfig) -> list[str]:
    """``key=value`` for each of :data:`NOTABLE_DEFAULTS` that the raw config ``d`` leaves to its default."""
    out = []
    for key in NOTABLE_DEFAULTS:
        section, name = key.split(".")
        if not (isinstance(d.get(section), dict) and name in d[section]):
            out.append(f"{key}={getattr(getattr(cfg, section), name)}")
    return out


def _deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
