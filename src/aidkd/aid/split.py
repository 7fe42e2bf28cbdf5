"""The L_CS / L_IC decomposition over a whole data split, grouped by class across the split, in bounded memory.

:func:`aidkd.losses.decomposition.kd_decomposition` groups the samples of one batch. For analysis, the groups are
the classes of the whole split (all the samples of class k, not the few of one batch), and the split may be far
too large to hold all its logits. :class:`SplitAccumulator` streams over batches and keeps, per class and in
float64, only

* n_k, the class count;
* log S_k(c) = log sum_{i in G_k} p_i(c) and log S^_k(c) (the same for q), as running log-sum-exps, so that the
  class means m_k = S_k / n_k never underflow;
* sum_{i in G_k} KL(p_i || q_i), the per-class sum of per-sample KL;
* sum_{i in G_k} sum_c p_i(c) log p_i(c) (and the same for q), the per-class sum of negative entropies;
* sum_{i in G_k} <p_i, q_i>, sum ||p_i||^2 and sum ||q_i||^2, for the inner-class agreement below;
* the number of correct top-1 predictions of both models.

Memory is O(C^2) whatever the split size. At the end

    L_KD_k = tau^2 / n_k * sum_{i in G_k} KL(p_i || q_i)      (mean per-sample KD loss of class k)
    L_CS_k = tau^2 * KL(m_k || m^_k)
    L_IC_k = L_KD_k - L_CS_k                                   (the exact identity of docs/aid.md section 1)

and the split totals are the n_k/N-weighted sums of these. The inner-class information of each model,

    I_T = tau^2 / N sum_i KL(p_i || m_{y_i})  = sum_k n_k/N tau^2 [H(m_k) - mean_{i in G_k} H(p_i)]

(the conditional mutual information that MCMI teachers raise; the L_IC of the teacher against its own class
means), and I_S the same for the student, come from the entropies in the same pass. So does the inner-class
agreement of the two models (this project's reading of the AID paper's Fig. 3a), per class

    rho_k = tr(C_k) / sqrt(tr(Cov^p_k) tr(Cov^q_k)),   C_k = (1/n_k) sum_{i in G_k} (p_i - m_k)(q_i - m^_k)^T

with tr(C_k) = (1/n_k) sum <p_i, q_i> - <m_k, m^_k> and tr(Cov^p_k) = (1/n_k) sum ||p_i||^2 - ||m_k||^2: 1 when the
two models place every class's mass on the same samples in proportion, 0 when unrelated. ``agreement`` is its
n_k-weighted mean over the classes where both spreads are positive (NaN per class elsewhere). **L_IC is obtained from the identity**, in one pass:
every term is accumulated in float64, so the subtraction loses only float64 rounding relative to L_KD_k (a
value below zero by rounding is clipped to 0). ``ic_mode="two_pass"`` instead computes L_IC directly from its
definition, sum_i sum_c p_i(c) [log r_{k,c}(i) - log r^_{k,c}(i)], in a second pass over the data that reuses
the class sums of the first; it costs a second forward pass of both models and needs a loader that yields the
same views twice (no random augmentation). The two agree to rounding; the tests check it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal

import torch
from torch import Tensor, nn

from ..data.base import Batch
from ..errors import UserError
from ..teachers import logits_of
from ..losses.decomposition import group_logsumexp

_F64 = torch.float64


# ----------------------------------------------------------------------------------------------------------------
# result


@dataclass
class SplitDecomposition:
    """The decomposition of one split. Totals are floats; per-class values are float64 tensors of shape (C,).

    Per-class values are *per sample of that class* (``kd_per_class[k]`` is tau^2 times the mean KL over the
    samples of class k), NaN for classes absent from the split; ``total = sum_k counts[k] / N * per_class[k]``.
    Accuracies are top-1 in percent (NaN when unknown, e.g. for precomputed logits without labels).
    """

    kd: float
    cs: float
    ic: float
    kd_per_class: Tensor
    cs_per_class: Tensor
    ic_per_class: Tensor
    counts: Tensor
    teacher_acc: float
    student_acc: float
    num_samples: int
    temperature: float
    ic_mode: str = "identity"
    teacher_info: float = float("nan")  # I_T: tau^2 mean KL(p_i || m_{y_i}), the teacher's inner-class information
    student_info: float = float("nan")  # I_S: the same for the student
    agreement: float = float("nan")  # the n_k-weighted mean of rho_k, the inner-class agreement
    agreement_per_class: Tensor | None = None  # rho_k, NaN where a class has no spread

    def to_dict(self, per_class: bool = True) -> dict:
        """A JSON-ready dict (plain floats and lists; NaN for absent classes)."""
        out = {
            "kd": self.kd,
            "cs": self.cs,
            "ic": self.ic,
            "teacher_acc": self.teacher_acc,
            "student_acc": self.student_acc,
            "num_samples": self.num_samples,
            "temperature": self.temperature,
            "ic_mode": self.ic_mode,
            "teacher_info": self.teacher_info,
            "student_info": self.student_info,
            "agreement": self.agreement,
        }
        if per_class:
            out["per_class"] = {
                "count": self.counts.tolist(),
                "kd": self.kd_per_class.tolist(),
                "cs": self.cs_per_class.tolist(),
                "ic": self.ic_per_class.tolist(),
                "agreement": None if self.agreement_per_class is None else self.agreement_per_class.tolist(),
            }
        return out


# ----------------------------------------------------------------------------------------------------------------
# the streaming accumulator


class SplitAccumulator:
    """Streams (teacher logits, student logits, labels) batches; :meth:`result` gives the split decomposition.

    ``teacher`` is the target distribution p (first argument of the KL), ``student`` the second (q).
    """

    def __init__(self, num_classes: int, temperature: float, device: torch.device | str = "cpu"):
        if temperature <= 0:
            raise UserError(f"temperature must be positive, got {temperature}")
        self.num_classes = int(num_classes)
        self.temperature = float(temperature)
        c = self.num_classes
        dev = torch.device(device)
        self.counts = torch.zeros(c, dtype=_F64, device=dev)
        self.log_sum_p = torch.full((c, c), float("-inf"), dtype=_F64, device=dev)
        self.log_sum_q = torch.full((c, c), float("-inf"), dtype=_F64, device=dev)
        self.kl_sum = torch.zeros(c, dtype=_F64, device=dev)
        self.neg_entropy_p = torch.zeros(c, dtype=_F64, device=dev)
        self.neg_entropy_q = torch.zeros(c, dtype=_F64, device=dev)
        self.dot_pq = torch.zeros(c, dtype=_F64, device=dev)
        self.dot_pp = torch.zeros(c, dtype=_F64, device=dev)
        self.dot_qq = torch.zeros(c, dtype=_F64, device=dev)
        self.correct_t = torch.zeros((), dtype=_F64, device=dev)
        self.correct_s = torch.zeros((), dtype=_F64, device=dev)
        # second pass (direct L_IC), filled by update_ic
        self.ic_sum = torch.zeros(c, dtype=_F64, device=dev)

    def _log_probs(self, t_logits: Tensor, s_logits: Tensor) -> tuple[Tensor, Tensor]:
        dev = self.counts.device
        log_p = torch.log_softmax(t_logits.detach().to(dev, _F64) / self.temperature, dim=1)
        log_q = torch.log_softmax(s_logits.detach().to(dev, _F64) / self.temperature, dim=1)
        return log_p, log_q

    def _check(self, t_logits: Tensor, s_logits: Tensor, labels: Tensor) -> Tensor:
        if t_logits.shape != s_logits.shape or t_logits.dim() != 2 or t_logits.shape[1] != self.num_classes:
            raise UserError(
                f"logits must both be (N, {self.num_classes}); got {tuple(t_logits.shape)} and {tuple(s_logits.shape)}"
            )
        labels = labels.detach().to(self.counts.device).long().view(-1)
        if labels.numel() != t_logits.shape[0]:
            raise UserError(f"{labels.numel()} labels for {t_logits.shape[0]} samples")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise UserError(f"labels must lie in [0, {self.num_classes - 1}]")
        return labels

    def _prepare(self, t_logits: Tensor, s_logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """(labels, log p, log q) of a checked batch, in float64 on the accumulator's device; None when empty."""
        labels = self._check(t_logits, s_logits, labels)
        if labels.numel() == 0:
            return None
        return (labels, *self._log_probs(t_logits, s_logits))

    @torch.no_grad()
    def update(self, t_logits: Tensor, s_logits: Tensor, labels: Tensor) -> None:
        """Add one batch (first pass)."""
        batch = self._prepare(t_logits, s_logits, labels)
        if batch is None:
            return
        labels, log_p, log_q = batch
        c = self.num_classes
        self.counts += torch.bincount(labels, minlength=c).to(_F64)
        self.log_sum_p = torch.logaddexp(self.log_sum_p, group_logsumexp(log_p, labels, c))
        self.log_sum_q = torch.logaddexp(self.log_sum_q, group_logsumexp(log_q, labels, c))
        kl = (log_p.exp() * (log_p - log_q)).sum(1)
        self.kl_sum.index_add_(0, labels, kl)
        self.neg_entropy_p.index_add_(0, labels, _plogp(log_p).sum(1))
        self.neg_entropy_q.index_add_(0, labels, _plogp(log_q).sum(1))
        p, q = log_p.exp(), log_q.exp()
        self.dot_pq.index_add_(0, labels, (p * q).sum(1))
        self.dot_pp.index_add_(0, labels, (p * p).sum(1))
        self.dot_qq.index_add_(0, labels, (q * q).sum(1))
        self.correct_t += (t_logits.detach().to(labels.device).argmax(1) == labels).sum()
        self.correct_s += (s_logits.detach().to(labels.device).argmax(1) == labels).sum()

    @torch.no_grad()
    def update_ic(self, t_logits: Tensor, s_logits: Tensor, labels: Tensor) -> None:
        """Add one batch to the direct computation of L_IC (second pass, after all first-pass updates)."""
        batch = self._prepare(t_logits, s_logits, labels)
        if batch is None:
            return
        labels, log_p, log_q = batch
        log_r = log_p - self.log_sum_p[labels]
        log_rh = log_q - self.log_sum_q[labels]
        self.ic_sum.index_add_(0, labels, (log_p.exp() * (log_r - log_rh)).sum(1))

    def result(self, ic_mode: Literal["identity", "two_pass"] = "identity") -> SplitDecomposition:
        tau2 = self.temperature**2
        counts = self.counts
        n = float(counts.sum())
        if n == 0:
            raise UserError("the split is empty: nothing to decompose")
        present = counts > 0
        safe_counts = torch.where(present, counts, torch.ones_like(counts))
        log_n = torch.log(safe_counts).unsqueeze(1)
        log_m = self.log_sum_p - log_n
        log_mh = self.log_sum_q - log_n
        m = log_m.exp()
        # KL(m_k || m^_k) with the convention 0 log 0 = 0 (m_k(c) may underflow for far-off classes)
        diff = torch.where(m > 0, log_m - log_mh, torch.zeros_like(log_m))
        cs_k = tau2 * (m * diff).sum(1)
        kd_k = tau2 * self.kl_sum / safe_counts
        if ic_mode == "identity":
            ic_k = (kd_k - cs_k).clamp_min(0.0)
        elif ic_mode == "two_pass":
            ic_k = tau2 * self.ic_sum / safe_counts
        else:
            raise UserError(f"ic_mode must be 'identity' or 'two_pass', got {ic_mode!r}")
        info_t = tau2 * (self.neg_entropy_p / safe_counts - _plogp(log_m).sum(1)).clamp_min(0.0)
        info_s = tau2 * (self.neg_entropy_q / safe_counts - _plogp(log_mh).sum(1)).clamp_min(0.0)
        nan = torch.full_like(kd_k, float("nan"))
        kd_k, cs_k, ic_k = (torch.where(present, x, nan) for x in (kd_k, cs_k, ic_k))
        rho_k, spread = self._agreement(m, log_mh.exp(), safe_counts)
        rho_k = torch.where(present & spread, rho_k, nan)
        w = counts / n

        def total(x: Tensor, where: Tensor = present) -> float:
            return float((w[where] * x[where]).sum())

        has_rho = present & spread
        agreement = total(rho_k, has_rho) / float(w[has_rho].sum()) if bool(has_rho.any()) else float("nan")

        return SplitDecomposition(
            kd=total(kd_k),
            cs=total(cs_k),
            ic=total(ic_k),
            kd_per_class=kd_k.cpu(),
            cs_per_class=cs_k.cpu(),
            ic_per_class=ic_k.cpu(),
            counts=counts.long().cpu(),
            teacher_acc=100.0 * float(self.correct_t) / n,
            student_acc=100.0 * float(self.correct_s) / n,
            num_samples=int(n),
            temperature=self.temperature,
            ic_mode=ic_mode,
            teacher_info=total(info_t),
            student_info=total(info_s),
            agreement=agreement,
            agreement_per_class=rho_k.cpu(),
        )

    def _agreement(self, m: Tensor, mh: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        """(rho_k, whether both models' spreads within class k are positive) from the class means and sums."""
        cross = self.dot_pq / counts - (m * mh).sum(1)
        var_p = (self.dot_pp / counts - (m * m).sum(1)).clamp_min(0.0)
        var_q = (self.dot_qq / counts - (mh * mh).sum(1)).clamp_min(0.0)
        # a spread below float64 rounding of the sums it is the difference of is no spread
        tiny = 1e-12 * torch.minimum(self.dot_pp, self.dot_qq) / counts
        spread = (var_p > tiny) & (var_q > tiny)
        denom = torch.sqrt(var_p * var_q)
        rho = cross / torch.where(spread, denom, torch.ones_like(denom))
        return torch.where(spread, rho, torch.zeros_like(cross)), spread


def _plogp(log_p: Tensor) -> Tensor:
    """p log p elementwise, 0 where p = 0."""
    return torch.where(torch.isneginf(log_p), torch.zeros_like(log_p), log_p.exp() * log_p)


# ----------------------------------------------------------------------------------------------------------------
# models and loaders


def unpack_batch(batch, device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """(images, labels, index) of a :class:`~aidkd.methods.base.Batch`, or of an ``(images, labels[, index])``
    tuple, moved to ``device`` when given."""
    if hasattr(batch, "images"):
        images, labels, index = batch.images, batch.labels, getattr(batch, "index", None)
    else:
        images, labels = batch[0], batch[1]
        index = batch[2] if len(batch) > 2 else None
    if device is not None:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if index is not None:
            index = index.to(device, non_blocking=True)
    return images, labels, index


def model_logits(model: nn.Module, images: Tensor, index: Tensor | None = None) -> Tensor:
    """The model's logits on ``images``, samples ``index`` of the training split: a served teacher
    (:class:`~aidkd.teachers.Teacher`, e.g. AID's projected targets) gives them for those samples."""
    return logits_of(model, Batch(images, None, index))


@contextlib.contextmanager
def eval_mode(*models: nn.Module | None, freeze: bool = False) -> Iterator[None]:
    """Put ``models`` (None entries are skipped) in eval mode, and with ``freeze`` turn off their parameters'
    gradients; restore both on exit."""
    mods = [m for m in models if isinstance(m, nn.Module)]
    state = [(m.training, [q.requires_grad for q in m.parameters()]) for m in mods]
    for m in mods:
        m.eval()
        if freeze:
            for q in m.parameters():
                q.requires_grad_(False)
    try:
        yield
    finally:
        for m, (training, flags) in zip(mods, state):
            m.train(training)
            for q, f in zip(m.parameters(), flags):
                q.requires_grad_(f)


@torch.no_grad()
def split_decomposition(
    teacher: nn.Module,
    student: nn.Module,
    loader: Iterable,
    temperature: float = 4.0,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    ic_mode: Literal["identity", "two_pass"] = "identity",
) -> SplitDecomposition:
    """Decompose tau^2 KL(teacher || student) over the whole split served by ``loader``, classes grouped across
    the split, streaming (memory O(C^2), not O(N C)).

    ``loader`` yields :class:`~aidkd.methods.base.Batch` objects (or ``(images, labels[, index])`` tuples). Both
    models run in eval mode without gradients; their train/eval state is restored afterwards. ``num_classes``
    defaults to the width of the first batch's logits. ``ic_mode``: see the module docstring (``"identity"``:
    one pass, L_IC = L_KD - L_CS per class; ``"two_pass"``: L_IC from its definition in a second pass).
    """
    device = torch.device(device)
    acc: SplitAccumulator | None = None

    def batches():
        for batch in loader:
            images, labels, index = unpack_batch(batch, device)
            yield model_logits(teacher, images, index), model_logits(student, images, index), labels

    with eval_mode(teacher, student):
        for zt, zs, labels in batches():
            if acc is None:
                acc = SplitAccumulator(num_classes or zt.shape[1], temperature, device)
            acc.update(zt, zs, labels)
        if acc is None:
            raise UserError("the loader yielded no batches: nothing to decompose")
        if ic_mode == "two_pass":
            for zt, zs, labels in batches():
                acc.update_ic(zt, zs, labels)
    return acc.result(ic_mode)


@torch.no_grad()
def split_decomposition_from_logits(
    *,
    teacher_logits: Tensor,
    student_logits: Tensor,
    labels: Tensor,
    temperature: float = 4.0,
    num_classes: int | None = None,
    chunk_size: int = 65536,
    ic_mode: Literal["identity", "two_pass"] = "identity",
) -> SplitDecomposition:
    """The same from precomputed logits (N, C), every argument a keyword (``teacher_logits=``,
    ``student_logits=``, ``labels=``; see :func:`~aidkd.losses.decomposition.kd_decomposition`) (e.g. a teacher-output cache, possibly memory-mapped), processed
    in chunks of ``chunk_size`` rows so that only one chunk is converted to float64 at a time."""
    if teacher_logits.shape[0] != labels.shape[0] or student_logits.shape[0] != labels.shape[0]:
        raise UserError("teacher logits, student logits and labels must have the same number of rows")
    device = teacher_logits.device
    acc = SplitAccumulator(num_classes or teacher_logits.shape[1], temperature, device)
    n = labels.shape[0]
    for s in range(0, n, chunk_size):
        acc.update(teacher_logits[s : s + chunk_size], student_logits[s : s + chunk_size], labels[s : s + chunk_size])
    if ic_mode == "two_pass":
        for s in range(0, n, chunk_size):
            acc.update_ic(
                teacher_logits[s : s + chunk_size], student_logits[s : s + chunk_size], labels[s : s + chunk_size]
            )
    return acc.result(ic_mode)
