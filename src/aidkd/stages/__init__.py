"""Stages: the one way to run, resume or reuse a unit of work (a training run, an adaptation, a logit cache).

A stage is a name, a kind, a JSON-ready config and a function that writes the stage's folder. The folder is
keyed by a fingerprint over the kind, the config and the *contents* of the files the stage reads, so a changed
input gets a new folder (the old output is kept) and an unchanged one is found again, under any name, and
reused. ``stage.json``, written last and atomically, marks a finished stage and holds its result.

* :mod:`.core`: :class:`StageStore` (fingerprints, folders, records: the reuse decision) and :class:`StageResult`;
* :mod:`.train`: the training case, a run of :func:`aidkd.engine.train` (resumed when interrupted);
* :mod:`.logits`: a frozen model's outputs on the training split, served as ``teacher.kind: logits``;
* :mod:`.executor`: one interface to run independent stages in-process, in a local process pool or on SLURM;
* :mod:`.artifacts`: reading and writing the models and files that stages exchange.

The AID pipeline (:mod:`aidkd.aid.pipeline`), TAKD chains (:mod:`aidkd.takd`) and the reproduction suites
(:mod:`aidkd.bench.suites`) are plans over these stages; docs/architecture.md states the contracts and how to add
a stage kind.
"""
from .core import RECORD, StageResult, StageStore, dict_hash, file_hash, json_safe
from .executor import (
           Executor,
           InProcessExecutor,
           PoolExecutor,
           SubmititExecutor,
           make_executor,
)
from .logits import logits_stage
from .train import train_stage

__all__ = ["RECORD", "Executor", "InProcessExecutor", "PoolExecutor", "StageResult", "StageStore",
           "SubmititExecutor", "dict_hash", "file_hash", "json_safe", "logits_stage", "make_executor", "train_stage"]
