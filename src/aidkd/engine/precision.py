"""The precision a run computes in: ``train.amp`` resolved for the device and the CPU it runs on.

``amp: auto`` means bf16 autocast where the hardware does bf16 natively and fp32 elsewhere:

* CUDA: bf16;
* a CPU with native bf16 arithmetic (AVX512-BF16 or AMX, as torch reports them): bf16;
* any other CPU (AVX2, AVX-512 without BF16): fp32, because bf16 is emulated there and slower.

``amp: bf16`` forces bf16 autocast (emulated where the CPU lacks it), ``amp: off`` forces fp32. Autocast casts
convolutions and linear layers; batch norms, their statistics and every loss stay in float32 or better (the losses
upcast their inputs, ``aidkd.losses.kd.as_float``). :func:`resolve_precision` gives the choice and the reason,
which a run records in its summary.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def cpu_bf16_features() -> list[str]:
    """The native bf16 features of this CPU that torch reports (``AVX512-BF16``, ``AMX``); empty when none."""
    cpu = getattr(torch, "cpu", None)
    checks = (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
    return [name for name, fn in checks if callable(getattr(cpu, fn, None)) and getattr(cpu, fn)()]


def cpu_capability() -> str:
    """A short description of this CPU's vector and bf16 support, for reports."""
    cpu = getattr(torch, "cpu", None)

    def has(fn: str) -> bool:
        return callable(getattr(cpu, fn, None)) and bool(getattr(cpu, fn)())

    native = cpu_bf16_features()
    vector = "AVX-512" if has("_is_avx512_supported") else "AVX2" if has("_is_avx2_supported") else "no AVX2"
    return f"{vector}, native bf16: {' + '.join(native) if native else 'no (emulated)'}"


@dataclass(frozen=True)
class Precision:
    """The resolved autocast precision: ``dtype`` (None = fp32, no autocast), its ``name`` and the ``reason``."""

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        return "fp32" if self.dtype is None else "bf16"


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """``train.amp`` (``auto`` | ``bf16`` | ``off``) on ``device``."""
    if amp == "off":
        return Precision(None, "train.amp=off")
    if amp == "bf16":
        return Precision(torch.bfloat16, "train.amp=bf16")
    if device.type == "cuda":
        return Precision(torch.bfloat16, "train.amp=auto on CUDA")
    native = cpu_bf16_features()
    if device.type == "cpu" and native:
        return Precision(torch.bfloat16, f"train.amp=auto on a CPU with native bf16 ({' + '.join(native)})")
    return Precision(None, f"train.amp=auto on a {device.type.upper()} without native bf16")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``'s type; no autocast (fp32) when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


__all__ = ["Precision", "autocast", "cpu_bf16_features", "cpu_capability", "resolve_precision"]
