"""The AID pipeline (docs/aid.md section 6): from one config, the whole flow, each stage skipped when already done.

    teacher (trained unless a checkpoint is given)
      -> vanilla student, per seed (the baseline every benchmark trains)
      -> the pretrained student S_p (the vanilla one by default; distilled from T0 with KD; a proxy of another
         architecture; or a given checkpoint)
      -> adapt (T0 -> T: by default fine-tuned with the KD loss towards S_p, the published AID)
      -> per seed and method: the student distilled from T0 (baseline) and from T (AID + method)
         [with ``online: true``, the online variant ``aid_online`` from T0;
          with ``takd_assistant``, TAKD: the assistant from T0, then per seed the student from the assistant;
          with ``dgkd_assistants``, DGKD: the assistants, each from T0 and those before it, then per seed the
          student from all of them]
      -> results.md / results.json

Python API::

    from aidkd.aid.pipeline import load_pipeline_config, run_pipeline
    cfg = load_pipeline_config("pipeline/digits_quick", ["seeds=[0, 1]"])
    out = run_pipeline(cfg)            # out["results"], out["stages"], out["table"], out["out_dir"]

The plan runs over the stage primitive (:mod:`aidkd.stages`): every stage is a folder ``<stage>-<fingerprint>``
under ``output.dir``, skipped when finished, resumed when interrupted. By concern: :mod:`.schema` (the typed
config), :mod:`.stages` (the stages, returning typed results), :mod:`.results` (aggregation to a dict) and
:mod:`.render` (the Markdown report).
"""
from __future__ import annotations

import time

from ...files.checkpoint import atomic_write_json, atomic_write_text
from ...files.rundir import claim_folder, mark_folder
from ...stages import StageStore, json_safe
from .render import results_markdown
from .results import collect_results
from .schema import (MethodSpec, PipelineBase, PipelineConfig, StudentSpec, TeacherSpec,
                     load_pipeline_config, pipeline_config_from_dict)
from .pipeline_stages import (AdaptResult, adapt, adapt_stage, dgkd_assistant_stages, dgkd_student_stage, distill_stage,
                     online_stage, reference_stage, takd_assistant_stage, takd_student_stage, teacher_stage,
                     vanilla_stage)


#: what a pipeline (and the demo, which is one) writes at the top of its ``output.dir``, beside its stage folders
PIPELINE_FILES = frozenset({"results.md", "results.json", "pipeline.json", "demo.png"})


def _store(cfg: PipelineConfig, overwrite: bool, verbose: bool) -> StageStore:
    """The pipeline's stage store in ``output.dir``: a new or empty folder, or one a pipeline wrote (aidkd's mark,
    nothing but its outputs and stage folders); marked before anything is written."""
    root = claim_folder(cfg.output.dir, "output.dir", PIPELINE_FILES, subdirs=True)
    mark_folder(root, "pipeline", PIPELINE_FILES)
    return StageStore(root, overwrite=overwrite, verbose=verbose)


def run_adapt(cfg: PipelineConfig, *, overwrite: bool = False, on_epoch_end=None, verbose: bool = True) -> dict:
    """The stages up to the adapted teacher (teacher, reference and what it needs, adapt). Returns
    ``{"teacher": path of the adapted teacher, "teacher_kind": "model" | "targets", "report": the AID report
    (dict), "stage": its folder, "stages": {name: status}}``."""
    store = _store(cfg, overwrite, verbose)
    t0 = teacher_stage(cfg, store, on_epoch_end)
    ref = reference_stage(cfg, store, t0, on_epoch_end)
    ad = adapt_stage(cfg, store, t0, ref)
    return {"teacher": str(ad.teacher), "teacher_kind": ad.teacher_kind, "report": ad.report,
            "stage": str(ad.stage.dir), "stages": {n: r.status for n, r in store.results.items()}}


def _distill_job(job: tuple) -> object:
    """One distillation of the last wave, in whichever process the executor runs it."""
    cfg, root, overwrite, m, seed, teacher = job
    return _run_job(cfg, StageStore(root, overwrite=overwrite, verbose=False), m, seed, teacher)


def _run_job(cfg: PipelineConfig, store: StageStore, m, seed: int, teacher, on_epoch_end=None):
    """One student of the last wave: ``m`` a method (from T0 or the adapted teacher), ``"online"``, ``"takd"``
    (``teacher``: the assistant) or ``"dgkd"`` (``teacher``: T0 and the assistants' stages)."""
    if m == "online":
        return online_stage(cfg, store, seed, teacher, on_epoch_end)
    if m == "takd":
        return takd_student_stage(cfg, store, seed, teacher, on_epoch_end)
    if m == "dgkd":
        return dgkd_student_stage(cfg, store, seed, *teacher, on_epoch_end)
    return distill_stage(cfg, store, m, seed, teacher, on_epoch_end)


def run_pipeline(cfg: PipelineConfig, *, overwrite: bool = False, on_epoch_end=None, verbose: bool = True,
                 executor=None) -> dict:
    """Run every stage (skipping the finished ones) and write ``results.md`` / ``results.json`` and
    ``pipeline.json`` (the config and the stages) into ``cfg.output.dir``.

    ``on_epoch_end(stage_name, epoch, record)`` is called after every epoch of every engine stage that runs in
    this process. ``executor`` (:mod:`aidkd.stages.executor`; default: here, one after the other) runs the
    distillations, which are independent of each other, e.g. in a process pool or on SLURM. Returns ``{"results": the results dict (see :func:`collect_results`), "stages": {name: status}, "table":
    path of results.md, "out_dir": path}``."""
    t_start = time.time()
    cfg.check_given_checkpoints()
    store = _store(cfg, overwrite, verbose)
    t0 = teacher_stage(cfg, store, on_epoch_end)
    for s in cfg.seeds:
        vanilla_stage(cfg, store, s, on_epoch_end)
    ref = reference_stage(cfg, store, t0, on_epoch_end)
    ad = adapt_stage(cfg, store, t0, ref)
    assistant = takd_assistant_stage(cfg, store, t0, on_epoch_end) if cfg.takd_assistant else None
    dgkd_links = dgkd_assistant_stages(cfg, store, t0, on_epoch_end) if cfg.dgkd_assistants else None
    jobs = []
    for s in cfg.seeds:
        for m in cfg.methods:
            jobs += [(m, s, t0), (m, s, ad)]
        if cfg.online:
            jobs.append(("online", s, t0))
        if assistant is not None:
            jobs.append(("takd", s, assistant))
        if dgkd_links is not None:
            jobs.append(("dgkd", s, (t0, dgkd_links)))
    if executor is None:
        for m, s, teacher in jobs:
            _run_job(cfg, store, m, s, teacher, on_epoch_end)
    else:
        for res in executor.map(_distill_job, [(cfg, str(store.root), overwrite, *j) for j in jobs]):
            store.add(res)
    results = collect_results(cfg, store.results, ad.report, time.time() - t_start)
    out = store.root
    atomic_write_json(out / "results.json", json_safe(results))
    atomic_write_text(out / "results.md", results_markdown(results))
    atomic_write_json(out / "pipeline.json", json_safe({
        "config": cfg.model_dump(mode="json"), "stages": [r.row() for r in store.results.values()],
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    store.log(f"results: {out / 'results.md'}")
    return {"results": results, "stages": {n: r.status for n, r in store.results.items()},
            "table": str(out / "results.md"), "out_dir": str(out)}


__all__ = ["PIPELINE_FILES", "AdaptResult", "MethodSpec", "PipelineBase", "PipelineConfig", "StudentSpec",
           "TeacherSpec", "adapt", "collect_results", "load_pipeline_config", "pipeline_config_from_dict",
           "results_markdown", "run_adapt", "run_pipeline"]
