"""Every loss against an independent float64 computation of its published formula (loops / numpy)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aidkd.losses.at import at_loss, attention_map
from aidkd.losses.crd import ContrastMemory, contrast_scores, nce_loss
from aidkd.losses.ctkd import ctkd_lambda, global_temperature, gradient_reversal
from aidkd.losses.decomposition import kd_decomposition
from aidkd.losses.dist import dist_loss, dist_terms
from aidkd.losses.dkd import dkd_loss, dkd_terms, dkd_warmup
from aidkd.losses.fitnet import ConvRegressor, fitnet_loss, regressor_kind
from aidkd.losses.kd import kd_loss
from aidkd.losses.lskd import standardize_logits
from aidkd.losses.mlkd import batch_correlation_loss, class_correlation_loss, multi_level_terms
from aidkd.losses.mse import logit_mse_loss
from aidkd.losses.reviewkd import ReviewConnector, hcl_loss, reviewkd_warmup


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a shared, busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    b, c = 12, 7
    zs = torch.randn(b, c, generator=g, dtype=torch.float64) * 3
    zt = torch.randn(b, c, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, c, (b,), generator=g)
    return zs, zt, y


def softmax_np(z, t=1.0):
    z = np.asarray(z, dtype=np.float64) / t
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def kl_np(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def block_pool_np(x, size):
    """Adaptive average pooling for sizes that divide evenly, x: (B, C, H, W)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, size, h // size, size, w // size).mean(axis=(3, 5))


# ---------------------------------------------------------------- KD, LSKD, TAKD


@pytest.mark.parametrize("t", [1.0, 4.0, 10.0])
def test_kd_matches_loop(logits, t):
    zs, zt, _ = logits
    ps, pt = softmax_np(zs.numpy(), t), softmax_np(zt.numpy(), t)
    ref = t * t * np.mean([kl_np(pt[i], ps[i]) for i in range(len(ps))])
    assert kd_loss(zs, zt, t).item() == pytest.approx(ref, rel=1e-10)


def test_logit_mse_matches_the_loop_and_the_official_mseloss(logits):
    """The batch mean of ||z_s - z_t||^2 (a float64 loop); elementwise_mean is nn.MSELoss(), the official code's;
    its gradient is 2 (z_s - z_t) / (B C)."""
    zs, zt, _ = logits
    ref = float(np.mean([sum((a - b) ** 2 for a, b in zip(rs, rt)) for rs, rt in zip(zs.tolist(), zt.tolist())]))
    assert logit_mse_loss(zs, zt, "batchmean").item() == pytest.approx(ref, rel=1e-12)
    assert logit_mse_loss(zs, zt).item() == pytest.approx(torch.nn.MSELoss()(zs, zt).item(), rel=1e-12)
    assert logit_mse_loss(zs, zt).item() == pytest.approx(ref / zs.shape[1], rel=1e-12)
    z = zs.clone().requires_grad_(True)
    logit_mse_loss(z, zt).backward()
    assert torch.allclose(z.grad, 2 * (zs - zt) / zs.numel(), rtol=1e-12, atol=0)
    assert logit_mse_loss(zt, zt).item() == 0.0
    assert logit_mse_loss(zs.half(), zt.half()).dtype == torch.float32  # computed in float32 at least
    with pytest.raises(ValueError, match="reduction"):
        logit_mse_loss(zs, zt, "sum")


def test_kd_elementwise_mean_is_takds_kldivloss(logits):
    zs, zt, _ = logits
    t = 5.0
    with pytest.warns(UserWarning):  # torch warns that 'mean' divides by B*C: the quirk itself
        takd = torch.nn.KLDivLoss()(F.log_softmax(zs / t, 1), F.softmax(zt / t, 1)) * t * t
    assert kd_loss(zs, zt, t, "elementwise_mean").item() == pytest.approx(takd.item(), rel=1e-10)
    assert kd_loss(zs, zt, t, "elementwise_mean").item() == pytest.approx(
        kd_loss(zs, zt, t).item() / zs.shape[1], rel=1e-10
    )


def test_kd_zero_and_temperature_gradient(logits):
    zs, zt, _ = logits
    assert kd_loss(zt, zt, 4.0).item() == pytest.approx(0.0, abs=1e-12)
    tau = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    kd_loss(zs, zt, tau).backward()
    eps = 1e-6
    num = (kd_loss(zs, zt, 3.0 + eps) - kd_loss(zs, zt, 3.0 - eps)).item() / (2 * eps)
    assert tau.grad.item() == pytest.approx(num, rel=1e-6)


def test_kd_equals_decomposition_sum(logits):
    zs, zt, y = logits
    d = kd_decomposition(student_logits=zs, teacher_logits=zt, labels=y, temperature=4.0)
    assert (d.cs + d.ic).item() == pytest.approx(kd_loss(zs, zt, 4.0).item(), rel=1e-10)


def test_standardize_matches_numpy(logits):
    zs, _, _ = logits
    z = zs.numpy()
    ref = (z - z.mean(1, keepdims=True)) / (z.std(1, ddof=1, keepdims=True) + 1e-7)
    np.testing.assert_allclose(standardize_logits(zs).numpy(), ref, rtol=1e-12)
    # shift and scale invariance: LSKD ignores the logit range
    np.testing.assert_allclose(standardize_logits(3 * zs + 5).numpy(), ref, rtol=1e-6)


# ---------------------------------------------------------------- DKD


def dkd_np(zs, zt, y, t):
    ps, pt = softmax_np(zs, t), softmax_np(zt, t)
    tckd = nckd = 0.0
    for i in range(len(y)):
        g = y[i]
        bs = [ps[i, g], 1 - ps[i, g]]
        bt = [pt[i, g], 1 - pt[i, g]]
        tckd += kl_np(bt, bs)
        others = [c for c in range(zs.shape[1]) if c != g]
        qs = softmax_np(zs[i, others], t)
        qt = softmax_np(zt[i, others], t)
        nckd += kl_np(qt, qs)
    n = len(y)
    return t * t * tckd / n, t * t * nckd / n


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_dkd_matches_loop(logits, t):
    zs, zt, y = logits
    tckd, nckd = dkd_terms(zs, zt, y, t)
    rt, rn = dkd_np(zs.numpy(), zt.numpy(), y.numpy(), t)
    assert tckd.item() == pytest.approx(rt, rel=1e-8)
    assert nckd.item() == pytest.approx(rn, rel=1e-8)
    assert dkd_loss(zs, zt, y, 2.0, 6.0, t).item() == pytest.approx(2 * rt + 6 * rn, rel=1e-8)


def test_dkd_reformulates_kd(logits):
    """DKD's identity: KD = TCKD + (1 - p_t(gt)) * NCKD, per sample."""
    zs, zt, y = logits
    t = 4.0
    total = 0.0
    for i in range(len(y)):
        tckd, nckd = dkd_terms(zs[i : i + 1], zt[i : i + 1], y[i : i + 1], t)
        pt_gt = F.softmax(zt[i] / t, 0)[y[i]].item()
        total += tckd.item() + (1 - pt_gt) * nckd.item()
    assert total / len(y) == pytest.approx(kd_loss(zs, zt, t).item(), rel=1e-8)


def test_dkd_zero_and_warmup(logits):
    _, zt, y = logits
    assert dkd_loss(zt, zt, y).item() == pytest.approx(0.0, abs=1e-10)
    # mdistiller: min(epoch / 20, 1) with epochs from 1; the engine counts from 0
    assert dkd_warmup(0, 20) == pytest.approx(1 / 20)
    assert dkd_warmup(9, 20) == pytest.approx(0.5)
    assert dkd_warmup(19, 20) == 1.0 and dkd_warmup(100, 20) == 1.0
    assert dkd_warmup(0, 0) == 1.0


# ---------------------------------------------------------------- DIST


def test_dist_matches_corrcoef(logits):
    zs, zt, _ = logits
    tau = 4.0
    ys, yt = softmax_np(zs.numpy(), tau), softmax_np(zt.numpy(), tau)
    inter = 1 - np.mean([np.corrcoef(ys[i], yt[i])[0, 1] for i in range(ys.shape[0])])
    intra = 1 - np.mean([np.corrcoef(ys[:, c], yt[:, c])[0, 1] for c in range(ys.shape[1])])
    got_inter, got_intra = dist_terms(zs, zt, tau)
    assert got_inter.item() == pytest.approx(tau**2 * inter, rel=1e-6)
    assert got_intra.item() == pytest.approx(tau**2 * intra, rel=1e-6)
    assert dist_loss(zs, zt, 2.0, 3.0, tau).item() == pytest.approx(tau**2 * (2 * inter + 3 * intra), rel=1e-6)


def test_dist_zero_when_equal(logits):
    _, zt, _ = logits
    # zero up to the 1e-8 in the Pearson denominator (times tau^2 = 16)
    assert dist_loss(zt, zt).item() == pytest.approx(0.0, abs=1e-4)
    assert dist_loss(zt, zt, tau=1.0).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- CTKD


def test_ctkd_schedule_and_temperature():
    # CosineDecay(max=0, min=-1, loops=10) at official epoch e = engine epoch + 1, sign carried separately
    assert ctkd_lambda(0) == pytest.approx(1 - (math.cos(math.pi / 10) + 1) / 2)
    assert ctkd_lambda(0) == pytest.approx(0.02447, abs=1e-5)
    assert ctkd_lambda(4) == pytest.approx(0.5)
    assert ctkd_lambda(9) == pytest.approx(1.0) and ctkd_lambda(50) == pytest.approx(1.0)
    assert all(ctkd_lambda(e) < ctkd_lambda(e + 1) for e in range(9))
    theta = torch.tensor(1.0)
    assert global_temperature(theta).item() == pytest.approx(1 + 20 / (1 + math.exp(-1)))


def test_gradient_reversal():
    x = torch.tensor([0.5, -2.0], requires_grad=True)
    y = gradient_reversal(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.3, -0.6]))


# ---------------------------------------------------------------- MLKD


def correlations_np(zs, zt, t):
    ps, pt = softmax_np(zs, t), softmax_np(zt, t)
    b, c = ps.shape
    cc = 0.0
    for j in range(c):
        for k in range(c):
            ms = sum(ps[i, j] * ps[i, k] for i in range(b))
            mt = sum(pt[i, j] * pt[i, k] for i in range(b))
            cc += (ms - mt) ** 2
    bc = 0.0
    for i in range(b):
        for k in range(b):
            gs = sum(ps[i, j] * ps[k, j] for j in range(c))
            gt = sum(pt[i, j] * pt[k, j] for j in range(c))
            bc += (gs - gt) ** 2
    return cc / c, bc / b


def test_mlkd_correlations_match_loops(logits):
    zs, zt, _ = logits
    for t in (2.0, 4.0):
        cc, bc = correlations_np(zs.numpy(), zt.numpy(), t)
        assert class_correlation_loss(zs, zt, t).item() == pytest.approx(cc, rel=1e-9)
        assert batch_correlation_loss(zs, zt, t).item() == pytest.approx(bc, rel=1e-9)


def test_mlkd_multi_level_terms(logits):
    zs, zt, _ = logits
    temps = (4.0, 3.0, 5.0, 2.0, 6.0)
    terms = multi_level_terms(zs, zt, temps)
    assert terms["kd"].item() == pytest.approx(sum(kd_loss(zs, zt, t).item() for t in temps), rel=1e-10)
    ref_cc = sum(correlations_np(zs.numpy(), zt.numpy(), t)[0] for t in temps)
    assert terms["cc"].item() == pytest.approx(ref_cc, rel=1e-9)
    zero = multi_level_terms(zt, zt, temps)
    assert all(v.item() == pytest.approx(0.0, abs=1e-12) for v in zero.values())
    # LSKD's MLKD: only the KL sees standardised logits
    ls = multi_level_terms(zs, zt, temps, logit_standardization=True)
    sz, tz = standardize_logits(zs), standardize_logits(zt)
    assert ls["kd"].item() == pytest.approx(sum(kd_loss(sz, tz, t).item() for t in temps), rel=1e-10)
    assert ls["cc"].item() == pytest.approx(terms["cc"].item(), rel=1e-12)


# ---------------------------------------------------------------- ReviewKD


def hcl_np(fs, ft):
    total = 0.0
    for a, b in zip(fs, ft):
        h = a.shape[2]
        loss, weight, wsum = np.mean((a - b) ** 2), 1.0, 1.0
        for lv in (4, 2, 1):
            if lv >= h:
                continue
            weight /= 2
            loss += weight * np.mean((block_pool_np(a, lv) - block_pool_np(b, lv)) ** 2)
            wsum += weight
        total += loss / wsum
    return total


def test_hcl_matches_numpy():
    g = torch.Generator().manual_seed(1)
    shapes = [(3, 4, 8, 8), (3, 5, 4, 4), (3, 6, 2, 2), (3, 7, 1, 1)]
    fs = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    ft = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    ref = hcl_np([f.numpy() for f in fs], [f.numpy() for f in ft])
    assert hcl_loss(fs, ft).item() == pytest.approx(ref, rel=1e-10)
    # explicit weights for an 8x8 map: levels 4, 2, 1 at 1/2, 1/4, 1/8
    a, b = fs[0].numpy(), ft[0].numpy()
    explicit = (np.mean((a - b) ** 2) + sum(w * np.mean((block_pool_np(a, h) - block_pool_np(b, h)) ** 2)
                                            for h, w in ((4, 0.5), (2, 0.25), (1, 0.125)))) / 1.875
    assert hcl_loss(fs[:1], ft[:1]).item() == pytest.approx(explicit, rel=1e-10)
    assert hcl_loss(ft, ft).item() == 0.0


def test_review_connector_shapes_and_warmup():
    student = [(4, 16, 16), (8, 8, 8), (16, 4, 4), (16, 1, 1)]
    teacher = [(6, 8, 8), (12, 4, 4), (24, 2, 2), (24, 1, 1)]
    conn = ReviewConnector(student, teacher)
    assert conn.abfs[0].att_conv is None and all(a.att_conv is not None for a in conn.abfs[1:])
    outs = conn([torch.randn(2, *s) for s in student])
    assert [tuple(o.shape[1:]) for o in outs] == teacher
    assert reviewkd_warmup(0, 20) == 0.0
    assert reviewkd_warmup(10, 20) == 0.5 and reviewkd_warmup(20, 20) == 1.0 and reviewkd_warmup(99, 20) == 1.0


# ---------------------------------------------------------------- FitNet, AT


def test_fitnet_regressors_and_loss():
    assert regressor_kind((8, 8), (4, 4)) == "down2"
    assert regressor_kind((4, 4), (8, 8)) == "up2"
    assert regressor_kind((8, 8), (8, 8)) == "valid" and regressor_kind((8, 8), (6, 6)) == "valid"
    assert regressor_kind((4, 4), (16, 16)) is None
    for s, t in (((3, 8, 8), (5, 4, 4)), ((3, 4, 4), (5, 8, 8)), ((3, 8, 8), (5, 8, 8)), ((3, 8, 8), (5, 6, 6))):
        reg = ConvRegressor(s, t)
        assert tuple(reg(torch.randn(2, *s)).shape[1:]) == t
    a = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    b = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert fitnet_loss(a, b).item() == pytest.approx(float(np.mean((a.numpy() - b.numpy()) ** 2)), rel=1e-12)


def at_np(fs, ft, p=2):
    total = 0.0
    for a, b in zip(fs, ft):
        if a.shape[2] > b.shape[2]:
            a = block_pool_np(a, b.shape[2])
        elif b.shape[2] > a.shape[2]:
            b = block_pool_np(b, a.shape[2])
        diffs = []
        for i in range(a.shape[0]):
            qa = (a[i] ** p).mean(axis=0).ravel()
            qb = (b[i] ** p).mean(axis=0).ravel()
            diffs.append((qa / max(np.linalg.norm(qa), 1e-12) - qb / max(np.linalg.norm(qb), 1e-12)) ** 2)
        total += np.mean(diffs)
    return total


def test_at_matches_numpy():
    g = torch.Generator().manual_seed(2)
    fs = [torch.randn(s, generator=g, dtype=torch.float64) for s in ((3, 4, 8, 8), (3, 5, 4, 4))]
    ft = [torch.randn(s, generator=g, dtype=torch.float64) for s in ((3, 6, 4, 4), (3, 2, 4, 4))]
    ref = at_np([f.numpy() for f in fs], [f.numpy() for f in ft])
    assert at_loss(fs, ft).item() == pytest.approx(ref, rel=1e-10)
    assert at_loss(ft, ft).item() == 0.0
    # the map ignores the channel count and the sign of the activations
    f = fs[1]
    assert torch.allclose(attention_map(f), attention_map(torch.cat([f, -f], 1)))


# ---------------------------------------------------------------- CRD


def test_nce_loss_matches_loop():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 9, generator=g, dtype=torch.float64) * 1e-3
    n_data = 1000
    k = 8
    ref = 0.0
    for i in range(5):
        ref += math.log(x[i, 0].item() / (x[i, 0].item() + k / n_data + 1e-7))
        for j in range(1, 9):
            ref += math.log((k / n_data) / (x[i, j].item() + k / n_data + 1e-7))
    assert nce_loss(x, n_data).item() == pytest.approx(-ref / 5, rel=1e-10)


def test_contrast_memory_scores_update_and_sampling():
    torch.manual_seed(0)
    n, d, k = 50, 6, 10
    mem = ContrastMemory(d, n, k, nce_t=0.1, momentum=0.3)
    old_s, old_t = mem.memory_s.clone(), mem.memory_t.clone()
    v_s = F.normalize(torch.randn(4, d), dim=1)
    v_t = F.normalize(torch.randn(4, d), dim=1)
    index = torch.tensor([3, 7, 11, 40])
    labels = torch.tensor([0, 1, 2, 0])
    mem.labels[:] = torch.arange(n) % 3
    idx = mem.sample(index, labels)
    assert idx.shape == (4, k + 1) and torch.equal(idx[:, 0], index)
    assert not (idx[:, 1:] == index[:, None]).any()
    assert not (mem.labels[idx[:, 1:]] == labels[:, None]).any()
    out_s, out_t = mem(v_s, v_t, index, idx)
    raw_s = np.exp(np.einsum("bkd,bd->bk", old_t[idx].numpy(), v_s.numpy()) / 0.1)
    raw_t = np.exp(np.einsum("bkd,bd->bk", old_s[idx].numpy(), v_t.numpy()) / 0.1)
    np.testing.assert_allclose(out_s.numpy(), raw_s / (raw_s.mean() * n), rtol=1e-5)
    np.testing.assert_allclose(out_t.numpy(), raw_t / (raw_t.mean() * n), rtol=1e-5)
    for i, j in enumerate(index.tolist()):
        want = 0.3 * old_s[j].numpy() + 0.7 * v_s[i].numpy()
        np.testing.assert_allclose(mem.memory_s[j].numpy(), want / np.linalg.norm(want), rtol=1e-5)
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(mem.memory_s[untouched], old_s[untouched])
    # contrast_scores never differentiates the memory
    v = v_s.clone().requires_grad_(True)
    contrast_scores(v, mem.memory_t, idx, 0.1).sum().backward()
    assert v.grad is not None and not mem.memory_t.requires_grad


def test_crd_negatives_exactly_from_the_other_classes():
    """With every slot's label given up front, the negatives are drawn uniformly from the slots of the other
    classes only (the official sampler's cls_negative), even with two classes where redrawing would not do."""
    n, k = 40, 4000
    mem = ContrastMemory(8, n, k)
    slot_labels = torch.tensor([0] * 10 + [1] * 30)[torch.randperm(n, generator=torch.Generator().manual_seed(1))]
    mem.set_labels(slot_labels)
    index = torch.tensor([int((slot_labels == 0).nonzero()[0]), int((slot_labels == 1).nonzero()[0])])
    torch.manual_seed(0)
    idx = mem.sample(index, slot_labels[index])
    assert torch.equal(idx[:, 0], index)
    for row, y in zip(idx[:, 1:], slot_labels[index].tolist()):
        assert (slot_labels[row] != y).all()
        freq = torch.bincount(row, minlength=n).double() / k
        others = slot_labels != y
        expected = 1.0 / int(others.sum())
        assert (freq[others] - expected).abs().max() < 0.5 * expected  # every other-class slot, evenly
    # without labels: any slot but the sample's own
    free = mem.sample(index, None)
    assert not (free[:, 1:] == index[:, None]).any() and (slot_labels[free[1, 1:]] == 1).any()
