"""aidkd: knowledge distillation for image classification, with AID teacher adaptation.

The Python API at the top of the package (docs/python_api.md)::

    import aidkd
    model = aidkd.create_model("resnet8x4", num_classes=100)
    cfg = aidkd.load_config("cifar100/kd/res32x4_res8x4", ["train.epochs=2"])
    summary = aidkd.train(cfg)

Names are imported on first use (``import aidkd`` itself loads no torch).

* models: ``create_model``, ``list_models``, ``load_weights``, ``MODELS`` (the model registry)
* configs and training: ``load_config``, ``config_from_dict``, ``train``, ``evaluate`` (a model on a loader),
  ``evaluate_checkpoint``, ``build_data``, ``build_method``, ``METHODS`` (the method registry), ``DATASETS``
* the decomposition and AID: ``kd_decomposition`` (one batch of logits), ``split_decomposition`` (a whole split,
  two models), ``analyze``, ``adapt_teacher``, ``AIDParams``
* the pipeline: ``load_pipeline_config``, ``run_pipeline``
* losses: the module ``aidkd.losses``

Argument order: the loss functions take (student, teacher) as in the literature; every function of two models
takes (teacher, student); the decomposition functions of logits take keywords only.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> (module, attribute)
_API = {
    "create_model": ("aidkd.models", "create_model"),
    "list_models": ("aidkd.models", "list_models"),
    "load_weights": ("aidkd.models", "load_weights"),
    "MODELS": ("aidkd.models", "MODELS"),
    "load_config": ("aidkd.config", "load_config"),
    "config_from_dict": ("aidkd.config", "config_from_dict"),
    "RunConfig": ("aidkd.config", "RunConfig"),
    "train": ("aidkd.engine", "train"),
    "evaluate": ("aidkd.engine", "evaluate"),
    "evaluate_checkpoint": ("aidkd.checkpoint_eval", "evaluate_checkpoint"),
    "build_data": ("aidkd.data", "build_data"),
    "DATASETS": ("aidkd.data", "DATASETS"),
    "build_method": ("aidkd.methods", "build_method"),
    "METHODS": ("aidkd.methods", "METHODS"),
    "Batch": ("aidkd.data", "Batch"),
    "kd_decomposition": ("aidkd.losses", "kd_decomposition"),
    "split_decomposition": ("aidkd.aid", "split_decomposition"),
    "split_decomposition_from_logits": ("aidkd.aid", "split_decomposition_from_logits"),
    "analyze": ("aidkd.aid", "analyze"),
    "adapt_teacher": ("aidkd.aid", "adapt_teacher"),
    "AIDParams": ("aidkd.aid", "AIDParams"),
    "load_pipeline_config": ("aidkd.aid.pipeline", "load_pipeline_config"),
    "run_pipeline": ("aidkd.aid.pipeline", "run_pipeline"),
    "UserError": ("aidkd.errors", "UserError"),
}
_SUBMODULES = {"aid", "bench", "config", "data", "engine", "errors", "files", "losses", "methods", "models", "stages",
               "teachers"}


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"aidkd.{name}")
    raise AttributeError(f"module 'aidkd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | _SUBMODULES)


__all__ = [
    "DATASETS",
    "METHODS",
    "MODELS",
    "AIDParams",
    "Batch",
    "RunConfig",
    "UserError",
    "adapt_teacher",
    "analyze",
    "build_data",
    "build_method",
    "config_from_dict",
    "create_model",
    "evaluate",
    "evaluate_checkpoint",
    "kd_decomposition",
    "list_models",
    "load_config",
    "load_pipeline_config",
    "load_weights",
    "run_pipeline",
    "split_decomposition",
    "split_decomposition_from_logits",
    "train",
]
