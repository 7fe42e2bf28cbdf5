"""Distillation methods; importing this package registers them all."""
from . import at, crd, ctkd, dist, dkd, fitnet, kd, mlkd, reviewkd, vanilla  # noqa: F401
from .base import METHODS, Batch, Method, MethodContext, MethodParams, build_method

__all__ = ["METHODS", "Batch", "Method", "MethodContext", "MethodParams", "build_method"]
