"""Distillation methods; importing this package registers them all."""
from . import (  # noqa: F401
    aid_online,
    at,
    crd,
    ctkd,
    dgkd,
    dist,
    dkd,
    fitnet,
    kd,
    mlkd,
    mse,
    reviewkd,
    semckd,
    simkd,
    vanilla,
)
from .base import METHODS, Batch, Method, MethodContext, MethodParams, build_method, register_method

__all__ = ["METHODS", "Batch", "Method", "MethodContext", "MethodParams", "build_method", "register_method"]
