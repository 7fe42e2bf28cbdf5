"""Batched augmentation on the device, airbench style: one gather for a whole batch instead of per-image PIL
transforms. Every function takes a ``(B, C, H, W)`` tensor of any dtype and a ``torch.Generator`` on the
tensor's device, and draws all its random numbers from it (same generator state -> same result).

Methods may use them too (e.g. to make a second view of a batch): the loaders' images are normalised, so
``denormalize`` first when the padding should be black rather than the mean colour, or pass ``fill``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor


def _stats(x: Tensor, v: Sequence[float]) -> Tensor:
    return torch.as_tensor(tuple(v), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Images in [0, 1] -> normalised images ``(x - mean) / std`` (per channel)."""
    return (x - _stats(x, mean)) / _stats(x, std)


def denormalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Normalised images -> images in [0, 1] (the inverse of :func:`normalize`)."""
    return x * _stats(x, std) + _stats(x, mean)


def uint8_affine(mean: Sequence[float], std: Sequence[float], device=None) -> tuple[Tensor, Tensor]:
    """``(scale, bias)`` of shape ``(1, C, 1, 1)`` with ``(x / 255 - mean) / std == x * scale + bias``."""
    m = torch.tensor(tuple(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(tuple(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return 1.0 / (255.0 * s), -m / s


def to_float_normalized(x: Tensor, mean: Sequence[float] = (), std: Sequence[float] = (),
                        affine: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
    """``uint8`` images in 0..255 -> float32, normalised, in one fused multiply-add per channel (pass a cached
    ``affine = uint8_affine(mean, std, device)`` to skip building the constants)."""
    scale, bias = affine if affine is not None else uint8_affine(mean, std, x.device)
    return torch.addcmul(bias, x.float(), scale)


def random_crop(x: Tensor, padding: int, generator: Optional[torch.Generator] = None, fill: float = 0) -> Tensor:
    """Random crop of the original size from the image padded by ``padding`` on each side with ``fill``
    (torchvision's ``RandomCrop(size, padding)``), one offset per image, as a single gather."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (padding, padding, padding, padding), value=fill)
    dy = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return xp[bi, ci, rows, cols]


def random_flip(x: Tensor, generator: Optional[torch.Generator] = None, p: float = 0.5) -> Tensor:
    """Horizontal flip of each image with probability ``p``."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


@dataclass(frozen=True)
class TensorAugment:
    """A dataset's standard training augmentation for in-memory images: random crop with zero padding
    ``crop_pad`` (0 = none) and, if ``flip``, a random horizontal flip."""

    crop_pad: int = 0
    flip: bool = False

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        if self.crop_pad:
            x = random_crop(x, self.crop_pad, generator)
        if self.flip:
            x = random_flip(x, generator)
        return x

    @property
    def active(self) -> bool:
        return bool(self.crop_pad or self.flip)

    def describe(self) -> str:
        parts = ([f"random crop, zero padding {self.crop_pad}"] if self.crop_pad else []) + (["horizontal flip"] if self.flip else [])
        return " + ".join(parts) or "none"
