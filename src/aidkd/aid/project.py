"""AID in closed form: adapted per-sample targets by iterative proportional fitting (docs/aid.md, projection mode and tempered target).

For every class group G_k (the samples of ground-truth class k, n_k of them), a target inner-class distribution
rho_{k,c}(i) (a distribution over i in G_k for every output class c) is combined with the teacher's class-wise
similarity m_k by fitting the joint

    J(i, c) = m_k(c) * rho_{k,c}(i),     i in G_k,

to row sums 1/n_k (every sample's target is a distribution) and column sums m_k(c) (the class means stay the
teacher's), alternating the two rescalings (Sinkhorn / IPF) in log space, vectorised over all groups at once.
The adapted target is p*_i = n_k J(i, .). Two choices of rho (``ic_target``):

* ``reference``: rho = r^ref, the reference student's own inner-class distribution (4b);
* ``tempered``: rho = r^beta proportional to r^beta, the teacher's own inner-class distribution made smoother
  (4c, beta < 1) or sharper (beta > 1: more within-class structure, the direction MCMI teachers take).
  beta = 1 leaves the teacher unchanged (J already has row sums 1/n_k); beta -> 0 gives every sample its
  class's mean m_k. beta is given, or found by bisection so that the entropy of the tempered distributions,
  averaged with the weights (n_k/N) m_k(c) of L_IC, equals the reference student's.

A mixing weight alpha in [0, 1] interpolates between the teacher's own targets (alpha = 0) and p* (alpha = 1)
in log space, renormalised. :class:`~aidkd.teachers.targets.TargetTeacher` serves the result to any logit-based
distillation method.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Iterable, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor, nn

from ..errors import UserError
from ..losses.decomposition import group_logsumexp, inner_class_log_dist
from ..teachers.targets import TargetTeacher
from .split import eval_mode, model_logits, unpack_batch

_F64 = torch.float64

#: the options of :func:`projection_targets`, named as the :class:`~aidkd.aid.objective.AIDParams` fields they
#: come from: ``projection_targets(..., **params.model_dump(include=PROJECTION_OPTIONS))``
PROJECTION_OPTIONS = frozenset({"tau", "alpha", "ic_target", "beta", "sinkhorn_iters", "entropy_weights"})


# ----------------------------------------------------------------------------------------------------------------
# group statistics


def _counts(labels: Tensor, num_groups: int, dtype: torch.dtype) -> Tensor:
    return torch.bincount(labels, minlength=num_groups).to(dtype)


def _safe_log_ratio(a: Tensor, b: Tensor) -> Tensor:
    """a - b for log values, 0 where a = -inf (nothing to rescale; -inf - -inf would be NaN)."""
    return torch.where(torch.isneginf(a), torch.zeros_like(a), a - b)


def group_log_means(log_p: Tensor, labels: Tensor, num_groups: int) -> Tensor:
    """log m_k(c), shape (num_groups, C); rows of absent groups are -inf."""
    counts = _counts(labels, num_groups, log_p.dtype)
    log_n = torch.log(counts.clamp_min(1)).unsqueeze(1)
    return group_logsumexp(log_p, labels, num_groups) - log_n


def tempered_inner_log_dist(log_p: Tensor, labels: Tensor, num_groups: int, beta: float) -> Tensor:
    """log r^beta_{y_i,c}(i) with r^beta proportional to r^beta within every group (docs/aid.md, tempered target).

    beta * log p_i(c) differs from beta * log r_{k,c}(i) by a constant per (group, column), which the
    renormalisation removes, so the teacher's log-probabilities can be passed directly."""
    x = beta * log_p
    return x - group_logsumexp(x, labels, num_groups)[labels]


def inner_entropy(log_r: Tensor, labels: Tensor, num_groups: int) -> Tensor:
    """H(r_{k,c}) = -sum_{i in G_k} r log r for every group k and column c, shape (num_groups, C)."""
    r = log_r.exp()
    h = torch.where(r > 0, -r * log_r, torch.zeros_like(r))
    out = torch.zeros((num_groups, log_r.shape[1]), dtype=log_r.dtype, device=log_r.device)
    return out.index_add(0, labels, h)


def weighted_inner_entropy(log_r: Tensor, labels: Tensor, num_groups: int, log_m: Tensor) -> float:
    """The mean entropy of the inner-class distributions weighted by (n_k/N) m_k(c), the weights of L_IC."""
    counts = _counts(labels, num_groups, log_r.dtype)
    w = (counts / counts.sum()).unsqueeze(1) * torch.nan_to_num(log_m.exp(), nan=0.0)
    return float((w * inner_entropy(log_r, labels, num_groups)).sum())


# ----------------------------------------------------------------------------------------------------------------
# the fitting


@dataclass
class FitInfo:
    iterations: int
    row_error: float  # max |sum_c J(i,c) - 1/n_k| after the fit
    col_error: float  # max |sum_{i in G_k} J(i,c) - m_k(c)| after the fit


def ipf_fit(
    log_m: Tensor, log_rho: Tensor, labels: Tensor, sinkhorn_iters: int = 50, tol: float = 0.0
) -> tuple[Tensor, FitInfo]:
    """Fit J(i, c) = m_k(c) rho_{k,c}(i) to row sums 1/n_k and column sums m_k(c); return (log p*, info) with
    log p*_i = log(n_k J(i, .)), shape (N, C).

    ``log_m``: (num_groups, C) target column sums per group (rows of groups with no sample are ignored);
    ``log_rho``: (N, C), each column normalised over its group. One iteration is a row then a column rescaling;
    a last row rescaling makes every p*_i an exact distribution, so the column sums carry the residual error.
    ``tol`` > 0 stops early once the column sums are within ``tol``.
    """
    num_groups = log_m.shape[0]
    labels = labels.long()
    counts = _counts(labels, num_groups, log_rho.dtype)
    log_n = torch.log(counts.clamp_min(1))
    row_target = -log_n[labels].unsqueeze(1)  # log(1/n_k)
    col_target = log_m
    log_j = log_m[labels] + log_rho
    it = 0
    for it in range(1, sinkhorn_iters + 1):
        log_j = log_j - _safe_log_ratio(torch.logsumexp(log_j, 1, keepdim=True), row_target)
        col = group_logsumexp(log_j, labels, num_groups)
        log_j = log_j - _safe_log_ratio(col, col_target)[labels]
        if tol > 0 and it % 5 == 0:
            if _col_error(log_j, labels, num_groups, col_target) < tol:
                break
    log_j = log_j - _safe_log_ratio(torch.logsumexp(log_j, 1, keepdim=True), row_target)
    info = FitInfo(
        iterations=it,
        row_error=float((torch.logsumexp(log_j, 1).exp() - row_target.squeeze(1).exp()).abs().max()),
        col_error=_col_error(log_j, labels, num_groups, col_target),
    )
    return log_j + log_n[labels].unsqueeze(1), info


def _col_error(log_j: Tensor, labels: Tensor, num_groups: int, col_target: Tensor) -> float:
    present = torch.bincount(labels, minlength=num_groups) > 0
    col = group_logsumexp(log_j, labels, num_groups)
    return float((col[present].exp() - col_target[present].exp()).abs().max())


# ----------------------------------------------------------------------------------------------------------------
# beta by bisection


def find_beta(
    teacher_log_p: Tensor,
    reference_log_q: Tensor,
    labels: Tensor,
    num_groups: int | None = None,
    entropy_weights: Literal["teacher", "own"] = "teacher",
    beta_min: float = 1e-3,
    beta_max: float = 1e3,
    iters: int = 60,
) -> tuple[float, dict]:
    """The beta in [beta_min, beta_max] whose tempered teacher inner-class distributions have the reference
    student's weighted mean entropy (docs/aid.md, tempered target); returns (beta, info).

    The weights are (n_k/N) m_k(c), the teacher's class means (the weights of L_IC(T -> S_p)), for both sides;
    ``entropy_weights="own"`` weights the reference's entropies with its own class means instead. The entropy of
    r^beta falls monotonically as beta grows, so bisection (on log beta) applies on both sides of 1: beta < 1 when
    the teacher's inner-class distributions are sharper than the reference's (smoothing), beta > 1 when they are
    smoother (sharpening); at the ends of the interval the end is returned.
    """
    labels = labels.long()
    g = num_groups or int(labels.max()) + 1
    log_m = group_log_means(teacher_log_p, labels, g)
    ref_weights = log_m if entropy_weights == "teacher" else group_log_means(reference_log_q, labels, g)
    target = weighted_inner_entropy(inner_class_log_dist(reference_log_q, labels, g), labels, g, ref_weights)

    def h(beta: float) -> float:
        return weighted_inner_entropy(tempered_inner_log_dist(teacher_log_p, labels, g, beta), labels, g, log_m)

    h1, hlo, hhi = h(1.0), h(beta_min), h(beta_max)
    info = {"target_entropy": target, "entropy_at_1": h1, "entropy_at_min": hlo, "entropy_at_max": hhi}
    if hlo <= target:
        beta = beta_min
    elif hhi >= target:
        beta = beta_max
    else:
        lo, hi = math.log(beta_min), math.log(beta_max)  # h(e^lo) > target > h(e^hi)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            if h(math.exp(mid)) > target:
                lo = mid
            else:
                hi = mid
        beta = math.exp(0.5 * (lo + hi))
    info["entropy"] = h(beta)
    return beta, info


# ----------------------------------------------------------------------------------------------------------------
# targets


@dataclass
class ProjectionResult:
    log_targets: Tensor  # (N, C) log p* at temperature tau, mixed with alpha
    tau: float
    alpha: float
    ic_target: str
    beta: float | None
    fit: FitInfo
    beta_info: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "tau": self.tau,
            "alpha": self.alpha,
            "ic_target": self.ic_target,
            "beta": self.beta,
            "ipf_iterations": self.fit.iterations,
            "ipf_row_error": self.fit.row_error,
            "ipf_col_error": self.fit.col_error,
            **{f"beta_{k}": v for k, v in self.beta_info.items()},
        }


def projection_targets(
    teacher_logits: Tensor,
    reference_logits: Tensor | None,
    labels: Tensor,
    num_classes: int | None = None,
    tau: float = 4.0,
    *,
    alpha: float = 1.0,
    ic_target: Literal["reference", "tempered", "nontarget_mean"] = "reference",
    beta: float | None = None,
    sinkhorn_iters: int = 50,
    entropy_weights: Literal["teacher", "own"] = "teacher",
    dtype: torch.dtype = torch.float64,
) -> ProjectionResult:
    """The adapted targets log p*_i (N, C) at temperature ``tau`` (docs/aid.md, projection mode); the options
    are those of :class:`~aidkd.aid.objective.AIDParams`, by the same names.

    ``teacher_logits``, ``reference_logits``: (N, C) logits of the teacher and the reference student on the same
    samples (the groups are the classes of ``labels`` over these N samples). ``reference_logits`` may be None for
    ``ic_target="tempered"`` with a given ``beta``, and for ``"nontarget_mean"`` (:func:`nontarget_class_mean`, no
    fit). ``alpha`` mixes log p (0) and log p* (1), renormalised.
    """
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"alpha must lie in [0, 1], got {alpha}")
    if ic_target not in ("reference", "tempered", "nontarget_mean"):
        raise UserError(f"ic_target must be 'reference', 'tempered' or 'nontarget_mean', got {ic_target!r}")
    if beta is not None and not beta > 0.0:
        raise UserError(f"beta must be positive (below 1 smooths, above 1 sharpens), got {beta}")
    if target_needs_reference(ic_target, beta) and reference_logits is None:
        raise UserError("the reference student's logits are needed for ic_target 'reference' or a beta to be found")
    labels = labels.long().to(teacher_logits.device)
    g = num_classes or teacher_logits.shape[1]
    log_p = torch.log_softmax(teacher_logits.detach().to(dtype) / tau, dim=1)
    log_q = (
        torch.log_softmax(reference_logits.detach().to(teacher_logits.device, dtype) / tau, dim=1)
        if reference_logits is not None
        else None
    )
    log_m = group_log_means(log_p, labels, g)
    beta_info: dict = {}
    used_beta = None
    if ic_target == "nontarget_mean":
        log_star, info = nontarget_class_mean(log_p, labels, g), FitInfo(0, 0.0, 0.0)
    else:
        if ic_target == "reference":
            log_rho = inner_class_log_dist(log_q, labels, g)
        else:
            if beta is None:
                beta, beta_info = find_beta(log_p, log_q, labels, g, entropy_weights)
            log_rho = tempered_inner_log_dist(log_p, labels, g, beta)
            used_beta = float(beta)
        log_star, info = ipf_fit(log_m, log_rho, labels, sinkhorn_iters)
    if alpha == 0.0:
        log_t = log_p
    elif alpha == 1.0:
        log_t = log_star
    else:
        log_t = torch.log_softmax((1.0 - alpha) * log_p + alpha * log_star, dim=1)
    return ProjectionResult(log_t, float(tau), float(alpha), ic_target, used_beta, info, beta_info)


def target_needs_reference(ic_target: str, beta: float | None) -> bool:
    """Whether the inner-class target reads the reference student: it is the reference's own (``reference``), or a
    tempered one whose beta is found from it (``tempered`` without ``beta``)."""
    return ic_target == "reference" or (ic_target == "tempered" and beta is None)


def nontarget_class_mean(log_p: Tensor, labels: Tensor, num_groups: int) -> Tensor:
    """log p* (N, C): every sample keeps its own probability of its label, and its non-target classes share the rest
    as the mean non-target distribution of its class does: p*_i(c) = (1 - p_i(y_i)) mean_{j: y_j = y_i}
    p_j(c) / (1 - p_j(y_j)) for c != y_i. The inner-class information of the non-target columns is removed (the
    paper's "smoothing over non-target classes"), the per-sample confidence in the label is not."""
    n, c = log_p.shape
    target = F.one_hot(labels, c).bool()
    log_rest = torch.log1p(-log_p[target].exp().clamp(max=1 - 1e-12))  # log(1 - p_i(y_i))
    nontarget = (log_p - log_rest.unsqueeze(1)).exp().masked_fill(target, 0.0)  # each row sums to 1 off the label
    sums = torch.zeros(num_groups, c, dtype=log_p.dtype, device=log_p.device).index_add_(0, labels, nontarget)
    counts = torch.bincount(labels, minlength=num_groups).to(log_p.dtype).clamp_min(1).unsqueeze(1)
    out = (sums / counts)[labels].clamp_min(torch.finfo(log_p.dtype).tiny).log() + log_rest.unsqueeze(1)
    return torch.where(target, log_p, out)


@torch.no_grad()
def collect_logits(
    models: list[nn.Module], loader: Iterable, device: torch.device | str = "cpu", num_samples: int | None = None
) -> tuple[list[Tensor], Tensor, Tensor]:
    """Every model's logits on every sample of ``loader``, placed by the batches' ``index``.

    Returns (logits per model, each (num_samples, C) float32 on the CPU; labels (num_samples,); seen mask). Needs
    a loader without random augmentation (the projection assumes the teacher's outputs on the training views are
    fixed) and with sample indices. ``num_samples`` defaults to the largest index + 1.
    """
    device = torch.device(device)
    chunks: list[tuple[Tensor, Tensor, list[Tensor]]] = []
    with eval_mode(*models):
        for batch in loader:
            images, labels, index = unpack_batch(batch, device)
            if index is None:
                raise UserError("projection needs sample indices in every batch (Batch.index)")
            outs = [model_logits(m, images, index).float().cpu() for m in models]
            chunks.append((index.cpu().long(), labels.cpu().long(), outs))
    if not chunks:
        raise UserError("the loader yielded no batches")
    n = num_samples or int(max(int(c[0].max()) for c in chunks)) + 1
    c = chunks[0][2][0].shape[1]
    logits = [torch.zeros(n, c) for _ in models]
    labels = torch.zeros(n, dtype=torch.long)
    seen = torch.zeros(n, dtype=torch.bool)
    for index, lab, outs in chunks:
        labels[index] = lab
        seen[index] = True
        for dst, out in zip(logits, outs):
            dst[index] = out
    return logits, labels, seen


def project_teacher(
    teacher: nn.Module,
    reference: nn.Module | None,
    loader: Iterable,
    params: BaseModel,
    *,
    device: torch.device | str = "cpu",
    num_samples: int | None = None,
) -> tuple[TargetTeacher, ProjectionResult, dict]:
    """Run the teacher (and the reference) over the training split and build the projection teacher with the
    options of ``params`` (an :class:`~aidkd.aid.objective.AIDParams`: :data:`PROJECTION_OPTIONS`).

    Returns (teacher serving the targets, the projection result, a dict of the collected ``teacher_logits``,
    ``reference_logits``, ``labels`` and ``seen`` for reporting). Samples the loader never served keep the
    teacher's own targets (they are excluded from the groups)."""
    models = [teacher] + ([reference] if reference is not None else [])
    logits, labels, seen = collect_logits(models, loader, device, num_samples)
    t_logits = logits[0]
    r_logits = logits[1] if reference is not None else None
    idx = seen.nonzero().squeeze(1)
    res = projection_targets(
        t_logits[idx],
        r_logits[idx] if r_logits is not None else None,
        labels[idx],
        t_logits.shape[1],
        **params.model_dump(include=PROJECTION_OPTIONS),
    )
    full = torch.log_softmax(t_logits.double() / params.tau, dim=1)
    full[idx] = res.log_targets
    res.log_targets = full
    meta = {**res.summary(), "num_samples": int(seen.numel()), "num_seen": int(seen.sum())}
    target = TargetTeacher(full, params.tau, meta)
    return target, res, {"teacher_logits": t_logits, "reference_logits": r_logits, "labels": labels, "seen": seen}


__all__ = [
    "PROJECTION_OPTIONS",
    "FitInfo",
    "ProjectionResult",
    "collect_logits",
    "find_beta",
    "group_log_means",
    "inner_entropy",
    "ipf_fit",
    "nontarget_class_mean",
    "project_teacher",
    "projection_targets",
    "target_needs_reference",
    "tempered_inner_log_dist",
    "weighted_inner_entropy",
]
