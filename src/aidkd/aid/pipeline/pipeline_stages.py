"""The pipeline's stages, each a stage of :mod:`aidkd.stages` returning a typed result.

teacher (given or trained), vanilla students, the pretrained student S_p (the reference), the adaptation T0 -> T,
the distillations from T0 and from T, and with ``takd_assistant`` TAKD's assistant and its students. :func:`adapt`
is the adapt stage on its own (any teacher and reference checkpoint, any data config): the benchmarks run the
adaptation through it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ...config import DataConfig, config_from_dict
from ...data import build_data
from ...engine.precision import resolve_precision
from ...engine.recipe import evaluate
from ...engine.runtime import amp_dtype, resolve_device, seed_everything
from ...errors import UserError
from ...files.checkpoint import atomic_write_json, model_checkpoint, save_checkpoint
from ...methods import METHODS
from ...stages import StageResult, StageStore, json_safe, train_stage
from ...stages.artifacts import checkpoint_config, load_model
from ...teachers import serve_model
from ..adapt import AIDParams, adapt_teacher
from .schema import MethodSpec, PipelineConfig


@dataclass
class AdaptResult:
    """The adapt stage: the adapted teacher's file and how a run config serves it, and the AID report."""

    stage: StageResult
    report: dict

    @property
    def teacher(self) -> Path:
        return self.stage.checkpoint

    @property
    def teacher_kind(self) -> Literal["model", "targets"]:
        return self.stage.result["teacher_kind"]


def adapt(store: StageStore, name: str, *, teacher: Path, reference: Path, teacher_arch: str,
          teacher_kwargs: dict, reference_arch: str, reference_kwargs: dict, data: DataConfig, params: AIDParams,
          seed: int, distill_epochs: int, device: str = "cpu", deterministic: bool = False,
          eval_split: Literal["test", "val"] = "test", on_warning=None,
          t0_cache_run: dict | None = None, amp: str = "auto") -> AdaptResult | None:
    """Adapt the teacher in ``teacher`` (T0) towards the pretrained student in ``reference`` (S_p) with ``params``.

    Fine-tuning writes an aidkd checkpoint (``teacher.pt``, a model teacher) and measures before/after on
    ``eval_split`` and on the training images (without augmentation); projection writes a
    :class:`~aidkd.teachers.TargetTeacher` (``teacher.kind: targets``), measured on the projected training
    samples, and T0's accuracy on ``eval_split``. The report is returned and
    also written to ``report.json`` for the reader (None from a ``reuse_only`` store that has not got it).
    ``teacher_arch`` / ``reference_arch`` are used for files that
    are not aidkd checkpoints (published state dicts). ``t0_cache_run``: the RunConfig dict of a distillation from
    T0 with ``teacher.cache`` on: the adaptation then reads T0's logits from that same view cache (built here if
    it is not yet) instead of running T0 at every step. ``amp``: ``train.amp`` of the fine-tuning's forward passes
    (:mod:`aidkd.engine.precision`); the report records the precision used."""
    ref_config = checkpoint_config(reference)
    ref_arch = None if ref_config is not None else reference_arch
    ref_name = ((ref_config or {}).get("model") or {}).get("name") or reference_arch
    config = {
        "teacher": {"name": teacher_arch, "kwargs": teacher_kwargs},
        "reference": {"name": ref_arch, "kwargs": reference_kwargs},
        "aid": params.model_dump(mode="json"), "data": data.model_dump(mode="json"),
        "adapt_epochs": params.num_epochs(distill_epochs) if params.finetunes else None,
        "seed": seed, "device": device, "deterministic": deterministic, "eval_split": eval_split, "amp": amp,
    }
    if t0_cache_run is not None and params.finetunes and params.needs_t0:  # T0's logits stored in fp16 (or top-k)
        config["t0_cache"] = t0_cache_run["teacher"]["cache"]

    def run(folder: Path, overwrite: bool) -> tuple[dict, str]:
        dev = resolve_device(device)
        precision = resolve_precision(amp, dev)
        seed_everything(seed, deterministic)
        dcfg = data.model_copy(update={"balanced": None})
        d = build_data(dcfg, device=dev, seed=seed)
        held_out = d.test if eval_split == "test" else d.val
        if held_out is None:
            raise UserError("the adapt stage measures on the validation split, but the data has none: set "
                            "data.val_split")
        t0 = load_model(teacher, d.spec, teacher_arch, teacher_kwargs)
        ref = load_model(reference, d.spec, ref_arch, None if ref_arch is None else reference_kwargs)
        extra = {"distill_epochs": distill_epochs, "seed": seed, "teacher_checkpoint": str(teacher),
                 "reference_checkpoint": str(reference), "reference_model": ref_name,
                 "precision": precision.name, "precision_reason": precision.reason}
        if params.finetunes:
            t0_cache = t0_cache_run if "t0_cache" in config else None
            report, rd = _finetune(folder, t0, ref, d, dcfg, held_out, params, dev, precision.dtype, t0_cache, extra,
                                   store.log, teacher, reference, teacher_arch, teacher_kwargs, seed, device,
                                   distill_epochs, eval_split)
            kind = "model"
        else:
            t0_acc = evaluate(t0.to(dev), held_out, dev)["top1"]
            adapted, report = adapt_teacher(t0, ref, d.train.as_eval(), None, params, dev)
            rd = report.to_dict()
            rd.update(extra, **{f"teacher_{eval_split}_acc": t0_acc})
            adapted.save(folder / "teacher.pt")
            kind = "targets"
        if report.acc_warning and on_warning is not None:
            on_warning(report)
        atomic_write_json(folder / "report.json", json_safe(rd))
        return {"checkpoint": "teacher.pt", "teacher_kind": kind, "report": rd}, "ran"

    res = store.run(name, "adapt", config, {"teacher": teacher, "reference": reference}, run)
    return None if res is None else AdaptResult(res, res.result["report"])


def _finetune(folder: Path, t0, ref, d, dcfg: DataConfig, held_out, params: AIDParams, dev, dtype,
              t0_cache_run: dict | None, extra: dict, log, teacher: Path, reference: Path, teacher_arch: str,
              teacher_kwargs: dict, seed: int, device: str, distill_epochs: int, eval_split: str):
    """The fine-tuning objectives of the adapt stage: the adapted teacher written to ``teacher.pt``; returns the
    report and its dict with ``extra``. The batches are the ordinary training batches or class-balanced ones;
    ``t0_cache_run`` (a distillation from T0 with ``teacher.cache`` on) serves T0's logits from that cache."""
    spec = d.spec
    bal = d
    if params.balanced:
        P = params.P or min(spec.num_classes, max(1, dcfg.batch_size // params.K))
        bal = build_data(dcfg.model_copy(update={"balanced": [P, params.K]}), device=dev, seed=seed)
        extra["balanced"] = [P, params.K]
    t0_outputs = None
    if t0_cache_run is not None:  # the view cache a distillation from T0 reads, over the same images
        run_cfg = config_from_dict(t0_cache_run, "the distillation from T0")
        needs = METHODS.get(run_cfg.method.name).teacher_needs()
        t0_outputs = serve_model(t0.to(dev).eval(), run_cfg.teacher, run_cfg, bal, dev, amp_dtype(run_cfg, dev), needs,
                                 log=log)
    adapted, report = adapt_teacher(t0, ref, bal.train, held_out, params, dev, distill_epochs=distill_epochs,
                                    t0_outputs=t0_outputs, train_eval_loader=d.train.as_eval(), dtype=dtype)
    rd = report.to_dict()
    rd.update(extra, eval_split=eval_split)
    meta = {"aid_adapted": True, "aid": params.model_dump(mode="json"), "adapted_from": str(teacher),
            "reference": str(reference)}
    _save_adapted_teacher(folder / "teacher.pt", adapted, teacher_arch, teacher_kwargs, spec, dcfg, seed, device, meta,
                          report.epochs, {f"{eval_split}.top1": report.teacher_acc_after})
    return report, rd


def _save_adapted_teacher(path: Path, model, arch: str, kwargs: dict, spec, data: DataConfig, seed: int, device: str,
                          meta: dict, epochs: int, metrics: dict) -> None:
    """The adapted teacher as an engine checkpoint, usable as ``teacher.checkpoint`` by every command."""
    run_cfg = {"data": data.model_dump(mode="json"), "model": {"name": arch, "kwargs": kwargs},
               "method": {"name": "vanilla"}, "train": {"seed": seed, "device": device}, "meta": meta}
    ck = model_checkpoint(model, arch, spec, kwargs, config_from_dict(run_cfg, "adapted teacher").model_dump(mode="json"),
                          epochs)
    save_checkpoint({**ck, "metrics": metrics}, path)


# ------------------------------------------------------------------------------------------------ the plan's stages
def _teacher_section(cfg: PipelineConfig, checkpoint: Path, kind: str = "model", cache: str = "off") -> dict:
    if kind != "model":
        return {"kind": kind, "name": cfg.teacher.name, "checkpoint": str(checkpoint)}
    return {"name": cfg.teacher.name, "checkpoint": str(checkpoint), "kwargs": dict(cfg.teacher.kwargs), "cache": cache}


def _model(name: str, kwargs: dict, pretrained: bool | str) -> dict:
    """A model section; ``pretrained`` only when set, so that the stages of configs without it keep their
    fingerprints."""
    return {"name": name, "kwargs": dict(kwargs), **({"pretrained": pretrained} if pretrained else {})}


def _student(cfg: PipelineConfig) -> dict:
    return _model(cfg.student.name, cfg.student.kwargs, cfg.student.pretrained)


def _reference_model(cfg: PipelineConfig) -> dict:
    return {"name": cfg.reference_model, "kwargs": cfg.reference_model_kwargs}


def _method(name: str, params: dict) -> dict:
    """The method section of a run, its parameters completed with the defaults (so that ``{}`` and the defaults
    spelt out give the same fingerprint, and the distilled reference is recognised as the KD baseline)."""
    return {"name": name, "params": METHODS.get(name).Params(**params).model_dump(mode="json")}


def _uses_cache(cfg: PipelineConfig, method: str) -> str:
    """The ``teacher.cache`` of a distillation with ``method``: the pipeline's, for a method the cache can serve."""
    return "off" if METHODS.get(method).teacher_model_needed() else cfg.teacher.cache


def _train(store: StageStore, name: str, d: dict, on_epoch_end) -> StageResult:
    """The train stage ``name`` of the RunConfig dict ``d`` (without ``output``)."""
    run = config_from_dict({**d, "output": {"dir": str(store.root), "name": name}}, f"stage {name}")
    return train_stage(store, name, run, on_epoch_end=on_epoch_end)


def teacher_stage(cfg: PipelineConfig, store: StageStore, on_epoch_end=None) -> StageResult:
    if cfg.teacher.checkpoint:
        if cfg.teacher.epochs or cfg.teacher.lr:
            store.log("teacher.checkpoint is given: teacher.epochs / teacher.lr are not used")
        return store.given("teacher", cfg.teacher.checkpoint)
    d = cfg.run_dict(_model(cfg.teacher.name, cfg.teacher.kwargs, cfg.teacher.pretrained), {"name": "vanilla"},
                     cfg.teacher.seed if cfg.teacher.seed is not None else cfg.seeds[0],
                     epochs=cfg.teacher.epochs, lr=cfg.teacher.lr)
    return _train(store, "teacher", d, on_epoch_end)


def vanilla_stage(cfg: PipelineConfig, store: StageStore, seed: int, on_epoch_end=None) -> StageResult:
    return _train(store, f"vanilla-s{seed}", cfg.run_dict(_student(cfg), {"name": "vanilla"}, seed), on_epoch_end)


def reference_stage(cfg: PipelineConfig, store: StageStore, t0: StageResult, on_epoch_end=None) -> StageResult:
    """The pretrained student S_p: a given checkpoint; the vanilla student of the first seed (the student's
    architecture, its run reused) or a vanilla proxy; or a student (or proxy) distilled from T0 with KD."""
    a = cfg.aid
    if a.reference_kind == "checkpoint":
        return store.given("reference", a.reference)
    proxy = a.reference_model is not None
    if a.reference_kind == "vanilla":
        if not proxy and a.reference_epochs is None:
            v = store.results.get(f"vanilla-s{cfg.seeds[0]}") or vanilla_stage(cfg, store, cfg.seeds[0], on_epoch_end)
            return store.alias("reference", v)
        d = cfg.run_dict(_reference_model(cfg), {"name": "vanilla"}, cfg.seeds[0], epochs=a.reference_epochs)
        return _train(store, "reference", d, on_epoch_end)
    d = cfg.run_dict(_reference_model(cfg), _method("kd", a.reference_params), cfg.seeds[0],
                     teacher=_teacher_section(cfg, t0.checkpoint, cache=_uses_cache(cfg, "kd")),
                     epochs=a.reference_epochs)
    return _train(store, "reference", d, on_epoch_end)


def adapt_stage(cfg: PipelineConfig, store: StageStore, t0: StageResult, ref: StageResult) -> AdaptResult:
    """Adapt T0 towards S_p with ``cfg.aid``, on the pipeline's data (before/after on the test split and on the
    training images)."""
    def warn(report) -> None:
        store.log(f"[bold red]WARNING: the adapted teacher lost {report.acc_drop:.2f} accuracy points "
                  f"({report.teacher_acc_before:.2f} -> {report.teacher_acc_after:.2f}), more than the tolerance "
                  f"of {report.acc_tolerance:.2f}[/]")

    kd_from_t0 = cfg.run_dict(_student(cfg), _method("kd", {}), cfg.seeds[0],
                              teacher=_teacher_section(cfg, t0.checkpoint, cache=_uses_cache(cfg, "kd")))
    return adapt(store, "adapt", teacher=t0.checkpoint, reference=ref.checkpoint, teacher_arch=cfg.teacher.name,
                 teacher_kwargs=dict(cfg.teacher.kwargs), reference_arch=cfg.reference_model,
                 reference_kwargs=cfg.reference_model_kwargs, data=cfg.base.data, params=cfg.aid.adaptation(),
                 seed=cfg.seeds[0], distill_epochs=cfg.base.train.epochs, device=cfg.base.train.device,
                 deterministic=cfg.base.train.deterministic, on_warning=warn,
                 t0_cache_run=kd_from_t0 if kd_from_t0["teacher"]["cache"] != "off" else None,
                 amp=cfg.base.train.amp)


def distill_stage(cfg: PipelineConfig, store: StageStore, m: MethodSpec, seed: int, teacher: StageResult | AdaptResult,
                  on_epoch_end=None) -> StageResult:
    """Method ``m`` from T0 (a teacher stage) or from the adapted teacher (an :class:`AdaptResult`)."""
    aid = isinstance(teacher, AdaptResult)
    name = f"{'aid-' if aid else ''}{m.key}-s{seed}"
    if aid and teacher.teacher_kind == "targets":
        section = _teacher_section(cfg, teacher.teacher, kind="targets")
    else:
        ckpt = teacher.teacher if aid else teacher.checkpoint
        section = _teacher_section(cfg, ckpt, cache=_uses_cache(cfg, m.name))
    d = cfg.run_dict(_student(cfg), _method(m.name, m.params), seed, teacher=section)
    return _train(store, name, d, on_epoch_end)


def takd_assistant_stage(cfg: PipelineConfig, store: StageStore, t0: StageResult,
                         on_epoch_end=None) -> StageResult:
    """TAKD's assistant (``cfg.takd_assistant``), distilled from T0 with the pipeline's first KD settings, seed of
    the first seed: the first link of the chain T0 -> assistant -> student."""
    d = cfg.run_dict({"name": cfg.takd_assistant}, _method("kd", _kd_params(cfg)), cfg.seeds[0],
                     teacher=_teacher_section(cfg, t0.checkpoint, cache=_uses_cache(cfg, "kd")))
    return _train(store, "takd-assistant", d, on_epoch_end)


def takd_student_stage(cfg: PipelineConfig, store: StageStore, seed: int, assistant: StageResult,
                       on_epoch_end=None) -> StageResult:
    """TAKD's student: KD (the pipeline's first KD settings) from the assistant."""
    section = {"name": cfg.takd_assistant, "checkpoint": str(assistant.checkpoint), "kwargs": {},
               "cache": _uses_cache(cfg, "kd")}
    d = cfg.run_dict(_student(cfg), _method("kd", _kd_params(cfg)), seed, teacher=section)
    return _train(store, f"takd-s{seed}", d, on_epoch_end)


def _dgkd_params(cfg: PipelineConfig) -> dict:
    """DGKD with the CE / KD weights and temperature of the pipeline's first KD settings (its drop at default)."""
    kd = _kd_params(cfg)
    return {k: kd[k] for k in ("ce_weight", "kd_weight", "temperature") if k in kd}


def _dgkd_run(cfg: PipelineConfig, model: dict, seed: int, t0: StageResult, links: list[StageResult]) -> dict:
    guides = [{"name": n, "checkpoint": str(r.checkpoint), "kwargs": {}, "cache": _uses_cache(cfg, "dgkd")}
              for n, r in zip(cfg.dgkd_assistants, links)]
    d = cfg.run_dict(model, _method("dgkd", _dgkd_params(cfg)), seed,
                     teacher=_teacher_section(cfg, t0.checkpoint, cache=_uses_cache(cfg, "dgkd")))
    d["assistants"] = guides
    return d


def dgkd_assistant_stages(cfg: PipelineConfig, store: StageStore, t0: StageResult,
                          on_epoch_end=None) -> list[StageResult]:
    """DGKD's assistants (``cfg.dgkd_assistants``, largest first), each distilled from T0 and every assistant
    before it, seed of the first seed: stages ``dgkd-a<i>``."""
    links: list[StageResult] = []
    for i, name in enumerate(cfg.dgkd_assistants, 1):
        d = _dgkd_run(cfg, {"name": name}, cfg.seeds[0], t0, links)
        links.append(_train(store, f"dgkd-a{i}", d, on_epoch_end))
    return links


def dgkd_student_stage(cfg: PipelineConfig, store: StageStore, seed: int, t0: StageResult,
                       links: list[StageResult], on_epoch_end=None) -> StageResult:
    """DGKD's student: from T0 and every assistant at once."""
    return _train(store, f"dgkd-s{seed}", _dgkd_run(cfg, _student(cfg), seed, t0, links), on_epoch_end)


def _kd_params(cfg: PipelineConfig) -> dict:
    """The parameters of the first ``kd`` in ``cfg.methods`` (the defaults when there is none)."""
    return next((dict(m.params) for m in cfg.methods if m.name == "kd"), {})


def online_stage(cfg: PipelineConfig, store: StageStore, seed: int, t0: StageResult, on_epoch_end=None) -> StageResult:
    d = cfg.run_dict(_student(cfg), _method("aid_online", cfg.online_method_params()), seed,
                     teacher=_teacher_section(cfg, t0.checkpoint))
    return _train(store, f"aid_online-s{seed}", d, on_epoch_end)


__all__ = ["AdaptResult", "adapt", "adapt_stage", "dgkd_assistant_stages", "dgkd_student_stage", "distill_stage",
           "online_stage", "reference_stage",
           "takd_assistant_stage", "takd_student_stage", "teacher_stage", "vanilla_stage"]
