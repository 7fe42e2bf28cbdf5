"""The distillation methods: registration, params, model requirements, schedules, gradients and short real runs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aidkd.teachers import TableTeacher
import torch.nn.functional as F

from aidkd.errors import UserError
from aidkd.losses.ctkd import ctkd_lambda, global_temperature
from aidkd.losses.decomposition import kd_decomposition
from aidkd.losses.kd import kd_loss
from aidkd.losses.mlkd import batch_correlation_loss, class_correlation_loss, multi_level_terms
from aidkd.methods import METHODS, Batch, MethodContext, build_method
from aidkd.methods.mlkd import cutout_, strong_view
from aidkd.models import create_model

NUM_CLASSES, HW, N_TRAIN = 4, 16, 128
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
ALL = ["kd", "dkd", "dist", "ctkd", "mlkd", "mse", "reviewkd", "fitnet", "at", "crd"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is faster, and much faster on a shared, busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_ctx(**kw) -> MethodContext:
    d = dict(num_classes=NUM_CLASSES, input_size=(3, HW, HW), num_train=N_TRAIN, epochs=30, mean=MEAN, std=STD)
    d.update(kw)
    return MethodContext(**d)


def model(name="cnn_tiny"):
    return create_model(name, num_classes=NUM_CLASSES, in_chans=3, input_hw=HW)


@pytest.fixture(scope="module")
def data():
    """A learnable synthetic problem: one random colour pattern per class plus noise, normalised by MEAN/STD."""
    g = torch.Generator().manual_seed(0)
    templates = torch.rand(NUM_CLASSES, 3, HW, HW, generator=g)
    y = torch.arange(N_TRAIN) % NUM_CLASSES
    raw = (0.6 * templates[y] + 0.4 * torch.rand(N_TRAIN, 3, HW, HW, generator=g)).clamp(0, 1)
    x = (raw - 0.5) / 0.25
    return x, y


@pytest.fixture(scope="module")
def teacher(data):
    torch.manual_seed(0)
    x, y = data
    t = model("cnn_small")
    opt = torch.optim.SGD(t.parameters(), lr=0.05, momentum=0.9)
    for step in range(40):
        i = torch.arange(step * 32, step * 32 + 32) % N_TRAIN
        loss = F.cross_entropy(t(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    t.eval()
    for p in t.parameters():
        p.grad = None
    return t


def batch_at(data, step, size=32):
    x, y = data
    i = torch.arange(step * size, step * size + size) % N_TRAIN
    return Batch(x[i], y[i], i)


def total(losses: dict) -> torch.Tensor:
    return sum(losses.values())


# ---------------------------------------------------------------- registry and params


def test_all_methods_registered():
    assert set(ALL) <= set(METHODS.names())


@pytest.mark.parametrize("name", ALL)
def test_unknown_param_rejected(name, teacher):
    with pytest.raises(UserError, match="not_a_param"):
        build_method(name, model(), teacher, {"not_a_param": 1}, make_ctx())


@pytest.mark.parametrize("name,params", [("kd", {"temperature": -1}), ("ctkd", {"base": "dist"}),
                                         ("mlkd", {"variant": "x"}), ("crd", {"negatives": "all"})])
def test_bad_param_value_rejected(name, params, teacher):
    with pytest.raises(UserError, match=name):
        build_method(name, model(), teacher, params, make_ctx())


@pytest.mark.parametrize("name", ["reviewkd", "fitnet", "at"])
def test_feature_method_on_mlp_is_a_user_error(name, teacher):
    mlp = create_model("mlp", num_classes=NUM_CLASSES, in_chans=3, input_hw=HW)
    with pytest.raises(UserError, match=f"'{name}'.*MLP"):
        build_method(name, mlp, teacher, {}, make_ctx())
    with pytest.raises(UserError, match=f"'{name}'"):
        build_method(name, model(), mlp, {}, make_ctx())


def test_other_unmet_needs_are_user_errors(teacher, data):
    with pytest.raises(UserError, match="hint_layer|stage"):
        build_method("fitnet", model(), teacher, {"hint_layer": 4}, make_ctx())
    with pytest.raises(UserError, match="num_train"):
        build_method("crd", model(), teacher, {"nce_k": 8}, make_ctx(num_train=0))
    crd = build_method("crd", model(), teacher, {"nce_k": 8}, make_ctx())
    b = batch_at(data, 0)
    with pytest.raises(UserError, match="index"):
        crd(Batch(b.images, b.labels, None), epoch=0)
    with pytest.raises(UserError, match="mlkd"):
        build_method("mlkd", model(), teacher, {}, make_ctx(mean=(), std=()))
    with pytest.raises(UserError, match="teacher"):
        build_method("kd", model(), None, {}, make_ctx())


class IndexedTeacher(TableTeacher):
    """A teacher that serves fixed per-sample logits (like a views file or AID's projection)."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("rows", logits)

    @property
    def table(self):
        return self.rows

    def logits_at(self, index):
        return self.rows[index]


def test_indexed_teacher(data):
    table = torch.randn(N_TRAIN, NUM_CLASSES)
    teacher = IndexedTeacher(table)
    b = batch_at(data, 1)
    m = build_method("kd", model(), teacher, {}, make_ctx()).eval()
    with torch.no_grad():
        zs = m.student(b.images)
        assert m(b, epoch=0)[1]["kd"].item() == pytest.approx(0.9 * kd_loss(zs, table[b.index], 4.0).item(), rel=1e-5)
    for name in ("reviewkd", "fitnet", "at", "crd", "mlkd", "aid_online"):  # features, other views, training
        with pytest.raises(UserError, match=f"'{name}'.*per-sample"):
            build_method(name, model(), teacher, {}, make_ctx())
        assert METHODS.get(name).teacher_model_needed()
    assert all(METHODS.get(n).teacher_model_needed() is None for n in ("kd", "dkd", "dist", "ctkd"))


# ---------------------------------------------------------------- KD and its options


def test_kd_component_ablation(teacher, data):
    b = batch_at(data, 0)
    student = model()
    student.eval()
    with torch.no_grad():
        zs, zt = student(b.images), teacher(b.images)
    ce = F.cross_entropy(zs, b.labels)
    parts = kd_decomposition(student_logits=zs, teacher_logits=zt, labels=b.labels, temperature=4.0)

    def run(params):
        m = build_method("kd", student, teacher, params, make_ctx()).eval()
        with torch.no_grad():
            return m(b, epoch=0)[1]

    plain = run({})
    assert set(plain) == {"ce", "kd"}
    assert total(plain).item() == pytest.approx((0.1 * ce + 0.9 * kd_loss(zs, zt, 4.0)).item(), rel=1e-5)
    assert total(plain).item() == pytest.approx((0.1 * ce + 0.9 * (parts.cs + parts.ic)).item(), rel=1e-4)
    cs_only = run({"cs_weight": 1.0, "ic_weight": 0.0})
    assert total(cs_only).item() == pytest.approx((0.1 * ce + 0.9 * parts.cs).item(), rel=1e-5)
    ic_only = run({"cs_weight": 0.0, "ic_weight": 2.0})
    assert total(ic_only).item() == pytest.approx((0.1 * ce + 1.8 * parts.ic).item(), rel=1e-5)
    takd = run({"kl_reduction": "elementwise_mean"})
    assert takd["kd"].item() == pytest.approx(plain["kd"].item() / NUM_CLASSES, rel=1e-6)
    ls = run({"logit_standardization": True, "temperature": 2.0, "kd_weight": 9.0})
    z = lambda v: (v - v.mean(1, keepdim=True)) / (v.std(1, keepdim=True) + 1e-7)  # noqa: E731
    assert ls["kd"].item() == pytest.approx(9.0 * kd_loss(z(zs), z(zt), 2.0).item(), rel=1e-5)


# ---------------------------------------------------------------- warm-ups


def test_dkd_warmup_scales_as_published(teacher, data):
    b = batch_at(data, 0)
    m = build_method("dkd", model(), teacher, {}, make_ctx()).eval()
    with torch.no_grad():
        kd = {e: (lambda losses: (losses["tckd"] + losses["nckd"]).item())(m(b, epoch=e)[1]) for e in (0, 9, 19, 40)}
    assert kd[0] == pytest.approx(kd[19] / 20, rel=1e-5)  # epoch 1 of 20 in DKD's 1-indexed count
    assert kd[9] == pytest.approx(kd[19] / 2, rel=1e-5)
    assert kd[40] == pytest.approx(kd[19], rel=1e-6) and kd[19] > 0


def test_reviewkd_warmup_scales_as_published(teacher, data):
    b = batch_at(data, 0)
    m = build_method("reviewkd", model(), teacher, {"review_weight": 5.0}, make_ctx()).eval()
    with torch.no_grad():
        r = {e: m(b, epoch=e)[1]["reviewkd"].item() for e in (0, 5, 20, 100)}
    assert r[0] == 0.0  # the official loop counts from 0: no KD at the first epoch
    assert r[5] == pytest.approx(r[20] / 4, rel=1e-5)
    assert r[100] == pytest.approx(r[20], rel=1e-6) and r[20] > 0


def test_reviewkd_official_teacher_bn_quirk(data):
    own_teacher = model("cnn_small")
    bn = own_teacher.stages[0]["bn"]
    m = build_method("reviewkd", model(), own_teacher, {"teacher_bn_train": True}, make_ctx()).train()
    before = bn.running_mean.clone()
    m(batch_at(data, 0), epoch=30)
    assert not torch.equal(bn.running_mean, before)  # the official loop leaves the teacher's BN in train mode
    assert not own_teacher.training and all(p.grad is None for p in own_teacher.parameters())
    m_eval = build_method("reviewkd", model(), own_teacher, {}, make_ctx()).train()
    before = bn.running_mean.clone()
    m_eval(batch_at(data, 0), epoch=30)
    assert torch.equal(bn.running_mean, before)


# ---------------------------------------------------------------- CTKD


def test_ctkd_theta_gets_reversed_curriculum_gradient(teacher, data):
    b = batch_at(data, 0)
    student = model()
    m = build_method("ctkd", student, teacher, {}, make_ctx()).eval()
    assert any(p is m.theta for p in m.parameters())
    assert m.temperature == pytest.approx(1 + 20 / (1 + math.exp(-1)), rel=1e-6)

    # the plain gradient of the weighted KD term with respect to theta (what minimisation would follow)
    with torch.no_grad():
        zs, zt = student(b.images), teacher(b.images)
    theta = torch.tensor(1.0, requires_grad=True)
    (0.9 * kd_loss(zs, zt, global_temperature(theta))).backward()
    plain = theta.grad.item()
    assert plain != 0

    grads = {}
    for epoch in (0, 9):
        m.zero_grad()
        total(m(b, epoch=epoch)[1]).backward()
        grads[epoch] = m.theta.grad.item()
    assert grads[0] == pytest.approx(-ctkd_lambda(0) * plain, rel=1e-4)
    assert grads[9] == pytest.approx(-plain, rel=1e-4)
    assert math.copysign(1, grads[9]) == -math.copysign(1, plain)
    assert abs(grads[0]) == pytest.approx(abs(grads[9]) * 0.02447, rel=1e-3)


def test_ctkd_dkd_base_uses_published_weights(teacher, data):
    m = build_method("ctkd", model(), teacher, {"base": "dkd"}, make_ctx()).eval()
    assert (m.ce_weight, m.kd_weight, m.params.dkd_alpha, m.params.dkd_beta) == (1.0, 1.0, 1.0, 2.0)
    with torch.no_grad():
        l0, l30 = m(batch_at(data, 0), epoch=0)[1], m(batch_at(data, 0), epoch=30)[1]
    assert set(l0) == {"ce", "tckd", "nckd"}
    assert l0["nckd"].item() == pytest.approx(l30["nckd"].item(), rel=1e-6)  # no DKD warm-up in CTKD's copy


# ---------------------------------------------------------------- MLKD


def test_strong_view_and_cutout():
    torch.manual_seed(0)
    x = torch.rand(6, 3, HW, HW) * 2 - 1
    s = strong_view(x, MEAN, STD)
    assert s.shape == x.shape and s.dtype == x.dtype and not torch.allclose(s, x)
    assert s.min() >= (0 - 0.5) / 0.25 - 1e-6 and s.max() <= (1 - 0.5) / 0.25 + 1e-6
    img = torch.ones(64, 1, 8, 8)
    cutout_(img, 0.5, torch.zeros(1))
    holes = img[:, 0] == 0
    assert holes.any() and holes.sum(dim=(1, 2)).max() <= 16  # side at most half the image
    for h in holes:  # each hole is one axis-aligned rectangle
        rows, cols = h.any(1).nonzero().flatten(), h.any(0).nonzero().flatten()
        if len(rows):
            assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
            assert h.sum() == len(rows) * len(cols)


def test_mlkd_paper_and_official_losses(teacher, data, monkeypatch):
    b = batch_at(data, 0)
    student = model()
    with torch.no_grad():
        zs, zt = student.eval()(b.images), teacher(b.images)
    temps = (4.0, 3.0, 5.0, 2.0, 6.0)
    terms = multi_level_terms(zs, zt, temps)

    def run(params):
        m = build_method("mlkd", student, teacher, params, make_ctx()).eval()
        monkeypatch.setattr(m, "make_strong_view", lambda images: images)  # strong view = weak view
        with torch.no_grad():
            return m(b, epoch=0)[1]

    paper = run({})
    assert paper["ce"].item() == pytest.approx(0.2 * F.cross_entropy(zs, b.labels).item(), rel=1e-5)
    for key in ("kd", "cc", "bc"):
        assert paper[key].item() == pytest.approx(2 * 0.9 * terms[key].item(), rel=1e-5)
    official = run({"variant": "official"})
    prob = F.softmax(zt, 1)
    conf = prob.max(1).values
    frac = float(np.mean(conf.numpy() <= np.percentile(conf.numpy(), 50)))  # the official numpy median mask
    cconf = prob.sum(0).numpy()
    cfrac = float(np.mean(cconf <= np.percentile(cconf, 50)))
    kd_sum = sum(kd_loss(zs, zt, t).item() for t in temps)
    assert official["kd"].item() == pytest.approx(0.9 * (frac * kd_sum + kd_sum), rel=1e-5)
    cc = sum(class_correlation_loss(zs, zt, t).item() for t in temps)
    bc = sum(batch_correlation_loss(zs, zt, t).item() for t in temps)
    assert official["cc"].item() == pytest.approx(0.9 * cfrac * cc, rel=1e-5)
    assert official["bc"].item() == pytest.approx(0.9 * frac * bc, rel=1e-5)
    assert 0 < frac < 1 and 0 < cfrac < 1



def test_mlkd_official_mask_in_the_inputs_dtype(teacher):
    """The official confidence mask is computed in the logits' dtype: float64 logits whose top probabilities differ
    below float32 resolution keep half the samples (the official median), not all of them."""
    m = build_method("mlkd", model(), teacher, {"variant": "official"}, make_ctx())
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(8, 10, generator=g, dtype=torch.float64)
    zt = torch.zeros(8, 10, dtype=torch.float64)
    zt[:, 3] = 10.0 + torch.arange(8, dtype=torch.float64) * 1e-9  # distinct in float64, equal in float32
    terms = m._official_terms(zs, zt, zs, zt)
    temps = m.params.temperatures
    kd_sum = sum(kd_loss(zs, zt, t).item() for t in temps)
    assert terms["kd"].dtype == torch.float64
    assert terms["kd"].item() == pytest.approx(0.9 * (0.5 * kd_sum + kd_sum), rel=1e-9)

# ---------------------------------------------------------------- every method trains, the teacher stays frozen


# (method, params, epoch passed to forward, lr). MLKD's class-correlation term grows like B^2 / C, which makes it
# stiff with 4 classes and a batch of 32: it needs the smaller step.
CASES = [
    ("kd", {}, 30, 0.05),
    ("kd", {"cs_weight": 1.0, "ic_weight": 0.0}, 30, 0.05),
    ("dkd", {"beta": 2.0}, 30, 0.05),
    ("dist", {}, 30, 0.05),
    ("ctkd", {}, 0, 0.05),
    ("ctkd", {"base": "dkd", "logit_standardization": True}, 9, 0.05),
    ("mlkd", {}, 30, 0.01),
    ("mlkd", {"variant": "official", "logit_standardization": True}, 30, 0.01),
    ("mse", {}, 30, 0.05),
    ("mse", {"ce_weight": 0.5, "mse_weight": 0.5, "reduction": "batchmean"}, 30, 0.01),
    ("reviewkd", {}, 30, 0.05),
    ("fitnet", {}, 30, 0.05),
    ("at", {}, 30, 0.05),
    ("crd", {"nce_k": 64, "feat_dim": 16}, 30, 0.05),
]


@pytest.mark.parametrize("name,params,epoch,lr", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_short_training_lowers_loss_and_leaves_teacher_untouched(name, params, epoch, lr, teacher, data):
    torch.manual_seed(1)
    t_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    m = build_method(name, model(), teacher, params, make_ctx())
    assert not any(k.startswith("teacher.") for k in m.state_dict())
    m.train()
    assert not teacher.training
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    history = []
    for step in range(30):
        logits, losses = m(batch_at(data, step), epoch=epoch)
        assert "ce" in losses and logits.shape == (32, NUM_CLASSES)
        loss = total(losses)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
        assert all(p.grad is None for p in teacher.parameters())
    assert all(math.isfinite(h) for h in history)
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < 0.9 * first, f"{name}: loss {first:.4f} -> {last:.4f}"
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t_state.items())
