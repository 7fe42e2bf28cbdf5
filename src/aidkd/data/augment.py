"""Batched augmentation on the device, airbench style: one gather for a whole batch instead of per-image PIL
transforms. Every function takes a ``(B, C, H, W)`` tensor of any dtype and a ``torch.Generator`` on the
tensor's device, and draws all its random numbers from it (same generator state -> same result).

Methods may use them too (e.g. to make a second view of a batch): the loaders' images are normalised, so
``denormalize`` first when the padding should be black rather than the mean colour, or pass ``fill``.

The crop-with-padding + flip augmentation has a finite set of views per image, ``(2p+1)^2 x 2``; each has an
id (:func:`decode_views`), so a loader can record which view of each sample a batch holds.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
                        affine: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """``uint8`` images in 0..255 -> float32, normalised, in one fused multiply-add per channel (pass a cached
    ``affine = uint8_affine(mean, std, device)`` to skip building the constants)."""
    scale, bias = affine if affine is not None else uint8_affine(mean, std, x.device)
    return torch.addcmul(bias, x.float(), scale)


def num_views(padding: int, flip: bool) -> int:
    """How many distinct views the crop-with-padding + flip augmentation has per image: ``(2p+1)^2 x 2``."""
    return (2 * padding + 1) ** 2 * (2 if flip else 1)


def decode_views(view: Tensor, padding: int, flip: bool) -> tuple[Tensor, Tensor, Tensor]:
    """View ids -> ``(dy, dx, flipped)``: the crop's top-left corner in the padded image and whether the crop is
    mirrored. Ids run over ``dy`` (slowest), ``dx``, then the flip bit (fastest, only when ``flip``)."""
    nf = 2 if flip else 1
    side = 2 * padding + 1
    f = view % nf
    rest = torch.div(view, nf, rounding_mode="floor")
    return torch.div(rest, side, rounding_mode="floor"), rest % side, f.bool()


def encode_views(dy: Tensor, dx: Tensor, flipped: Tensor, padding: int, flip: bool) -> Tensor:
    """The inverse of :func:`decode_views`."""
    nf = 2 if flip else 1
    return (dy * (2 * padding + 1) + dx) * nf + (flipped.long() if flip else 0)


def draw_views(n: int, padding: int, flip: bool, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> Tensor:
    """``n`` view ids, uniform over all views: the offsets ``dy``, ``dx`` each uniform on ``0..2p`` and the flip
    a fair coin, independently, as torchvision's ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip()`` draw
    them."""
    return torch.randint(0, num_views(padding, flip), (n,), device=device, generator=generator)


def apply_views(x: Tensor, view: Tensor, padding: int, flip: bool, fill: float = 0) -> Tensor:
    """The view ``view[i]`` of each image ``x[i]``: the crop of the original size at ``(dy, dx)`` of the image
    padded by ``padding`` on each side with ``fill``, mirrored when the view's flip bit is set (torchvision's
    ``crop(pad(img, p), dy, dx, h, w)`` then ``hflip``), as a single gather."""
    b, c, h, w = x.shape
    dy, dx, f = decode_views(view.to(x.device), padding, flip)
    xp = torch.nn.functional.pad(x, (padding,) * 4, value=fill) if padding else x
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(f.view(b, 1), w - 1 - cols, cols) + dx.view(b, 1)
    rows = dy.view(b, 1) + torch.arange(h, device=x.device)
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return xp[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None, fill: float = 0) -> Tensor:
    """Random crop of the original size from the image padded by ``padding`` on each side with ``fill``
    (torchvision's ``RandomCrop(size, padding)``), one offset per image, as a single gather."""
    if padding <= 0:
        return x
    return apply_views(x, draw_views(x.shape[0], padding, False, generator, x.device), padding, False, fill)


def random_flip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Horizontal flip of each image with probability ``p``."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


@dataclass(frozen=True)
class TensorAugment:
    """A dataset's standard training augmentation for in-memory images: random crop with zero padding
    ``crop_pad`` (0 = none) and, if ``flip``, a random horizontal flip.

    It has a finite set of :attr:`num_views` views per image, numbered by :func:`decode_views`; :meth:`draw`
    picks one per image and :meth:`apply` makes it, so a batch can say which view of each sample it holds (the
    teacher-output cache serves the teacher's logits for exactly that view)."""

    crop_pad: int = 0
    flip: bool = False

    @property
    def num_views(self) -> int:
        return num_views(self.crop_pad, self.flip)

    def draw(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
        return draw_views(n, self.crop_pad, self.flip, generator, device)

    def apply(self, x: Tensor, view: Tensor) -> Tensor:
        return apply_views(x, view, self.crop_pad, self.flip) if self.active else x

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(x, self.draw(x.shape[0], generator, x.device))

    @property
    def active(self) -> bool:
        return bool(self.crop_pad or self.flip)

    def describe(self) -> str:
        parts = ([f"random crop, zero padding {self.crop_pad}"] if self.crop_pad else []) + (["horizontal flip"] if self.flip else [])
        return " + ".join(parts) or "none"
