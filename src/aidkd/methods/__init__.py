"""Distillation methods; importing this package registers them all."""
from . import vanilla  # noqa: F401
from .base import METHODS, Batch, Method, MethodContext, MethodParams, build_method

__all__ = ["METHODS", "Batch", "Method", "MethodContext", "MethodParams", "build_method"]
