"""Distillation methods; importing this package registers them all."""
from . import at, crd, ctkd, dgkd, dist, dkd, fitnet, kd, mlkd, mse, reviewkd, semckd, simkd, vanilla  # noqa: F401
from .base import METHODS, Batch, Method, MethodContext, MethodParams, build_method, register_method

# aid_online lives with the AID code it steps (aidkd.aid.online); it registers here, as every method does
from ..aid import online as _aid_online  # noqa: E402, F401  (after .base, which it imports)

__all__ = ["METHODS", "Batch", "Method", "MethodContext", "MethodParams", "build_method", "register_method"]
