"""MLKD: multi-level (instance, batch, class) logit alignment at several temperatures on a weak and a strong view.

The weak view is the batch the engine gives (the dataset's standard augmentation). The strong view is made here,
per sample, from that batch: un-normalise with the run's mean/std, RandAugment with 2 ops at a random magnitude
on uint8, a Cutout of random side up to half the image (filled with the dataset mean), re-normalise. The
official code instead draws the strong view from the raw image with its own crop and flip in the data loader;
see docs/methods.md for this and the other differences (``variant: official`` reproduces the official loss).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from torchvision.transforms import v2

from ..errors import UserError
from ..losses.kd import as_float, kd_loss
from ..losses.lskd import maybe_standardize
from ..losses.mlkd import batch_correlation_loss, class_correlation_loss, multi_level_terms
from .base import Batch, Method, MethodParams, register_method

RANDAUG_BINS = 31  # torchvision's default number of magnitude bins


def cutout_(x: Tensor, max_fraction: float, fill: Tensor) -> Tensor:
    """In place: one square of side U(0, max_fraction) * size per image (centre uniform, clipped at the border,
    as the official CutoutAbs), set to ``fill`` (C,). ``x`` is (B, C, H, W)."""
    b, _, h, w = x.shape
    dev = x.device
    frac = torch.rand(b, device=dev) * max_fraction
    side_h, side_w = frac * h, frac * w
    y0 = (torch.rand(b, device=dev) * h - side_h / 2).clamp(min=0).floor()
    x0 = (torch.rand(b, device=dev) * w - side_w / 2).clamp(min=0).floor()
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = (
        (rows >= y0.view(b, 1, 1)) & (rows < (y0 + side_h).view(b, 1, 1))
        & (cols >= x0.view(b, 1, 1)) & (cols < (x0 + side_w).view(b, 1, 1))
    )
    x.copy_(torch.where(inside.unsqueeze(1), fill.view(1, -1, 1, 1).to(x.dtype), x))
    return x


@torch.no_grad()
def strong_view(
    images: Tensor, mean: tuple[float, ...], std: tuple[float, ...], num_ops: int = 2, cutout_max: float = 0.5
) -> Tensor:
    """The strong view of a normalised batch (same shape, dtype and device)."""
    mean_t = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    u8 = ((images.float() * std_t + mean_t).clamp(0, 1) * 255).round().to(torch.uint8)
    if num_ops > 0:
        mags = torch.randint(0, RANDAUG_BINS, (u8.shape[0],)).tolist()
        u8 = torch.stack([
            v2.RandAugment(num_ops=num_ops, magnitude=m, num_magnitude_bins=RANDAUG_BINS)(img)
            for img, m in zip(u8, mags)
        ])
    x = u8.float() / 255
    if cutout_max > 0:
        cutout_(x, cutout_max, mean_t.view(-1))
    return ((x - mean_t) / std_t).to(images.dtype)


class MLKDParams(MethodParams):
    ce_weight: float = Field(0.1, ge=0)  # applied to CE(weak) + CE(strong)
    kd_weight: float = Field(0.9, ge=0)  # applied to every alignment term at every temperature
    temperatures: tuple[float, ...] = Field((4.0, 3.0, 5.0, 2.0, 6.0), min_length=1)
    #: "paper": all three levels at every temperature on both views, unmasked. "official": the loss of the
    #: official code (see docs/methods.md)
    variant: Literal["paper", "official"] = "paper"
    logit_standardization: bool = False  # LSKD: the instance-level KL terms only
    randaug_ops: int = Field(2, ge=0)
    cutout_max: float = Field(0.5, ge=0, le=1)


@register_method("mlkd")
class MLKD(Method):
    Params = MLKDParams
    teacher_other_views = True  # the strong views

    def __init__(self, student, teacher, params: MLKDParams, ctx):
        super().__init__(student, teacher, params, ctx)
        chans = ctx.input_size[0] if ctx.input_size else None
        if chans not in (1, 3) or len(ctx.mean) != chans or len(ctx.std) != chans:
            raise UserError(
                f"method 'mlkd' builds its strong view from the batch and needs 1- or 3-channel images with their "
                f"normalisation mean/std (got input size {tuple(ctx.input_size)}, mean {tuple(ctx.mean)}, "
                f"std {tuple(ctx.std)})"
            )

    def make_strong_view(self, images: Tensor) -> Tensor:
        p: MLKDParams = self.params
        return strong_view(images, self.ctx.mean, self.ctx.std, p.randaug_ops, p.cutout_max)

    def forward(self, batch: Batch, epoch: int):
        p: MLKDParams = self.params
        strong = self.make_strong_view(batch.images)
        s_weak, s_strong = self.student(batch.images), self.student(strong)
        t_weak = self.teacher_logits(batch)
        t_strong = self.teacher_logits(Batch(strong, batch.labels, batch.index))
        losses = {"ce": p.ce_weight * (F.cross_entropy(s_weak, batch.labels) + F.cross_entropy(s_strong, batch.labels))}
        if p.variant == "paper":
            weak = multi_level_terms(s_weak, t_weak, p.temperatures, p.logit_standardization)
            strong_terms = multi_level_terms(s_strong, t_strong, p.temperatures, p.logit_standardization)
            for key in ("kd", "cc", "bc"):
                losses[key] = p.kd_weight * (weak[key] + strong_terms[key])
        else:
            losses.update(self._official_terms(s_weak, t_weak, s_strong, t_strong))
        return s_weak, losses

    def _official_terms(self, s_weak, t_weak, s_strong, t_strong) -> dict[str, Tensor]:
        """The official KD_ours loss: per-sample / per-class confidence "masks" multiply already-reduced scalars,
        so they only rescale by the fraction kept (samples, resp. classes, at or below the median teacher
        confidence); the strong-view KD uses the weak logits from the 4th temperature on; the strong-view
        correlation terms are not part of the loss."""
        p: MLKDParams = self.params
        with torch.no_grad():
            prob = F.softmax(as_float(t_weak), dim=1)  # the input's dtype (float32 at least), as the official code
            conf = prob.max(dim=1).values
            sample_frac = (conf <= torch.quantile(conf, 0.5)).float().mean()
            class_conf = prob.sum(dim=0)
            class_frac = (class_conf <= torch.quantile(class_conf, 0.5)).float().mean()
        ls = p.logit_standardization
        zs_w, zt_w = maybe_standardize(s_weak, ls), maybe_standardize(t_weak, ls)
        zs_s, zt_s = maybe_standardize(s_strong, ls), maybe_standardize(t_strong, ls)
        kd_weak = sum(kd_loss(zs_w, zt_w, t) for t in p.temperatures) * sample_frac
        kd_strong = sum(
            kd_loss(zs_s, zt_s, t) if i < 3 else kd_loss(zs_w, zt_w, t) for i, t in enumerate(p.temperatures)
        )
        cc = sum(class_correlation_loss(s_weak, t_weak, t) for t in p.temperatures) * class_frac
        bc = sum(batch_correlation_loss(s_weak, t_weak, t) for t in p.temperatures) * sample_frac
        return {"kd": p.kd_weight * (kd_weak + kd_strong), "cc": p.kd_weight * cc, "bc": p.kd_weight * bc}
