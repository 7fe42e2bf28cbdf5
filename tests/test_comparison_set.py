"""The AID paper's comparison set: SimKD, SemCKD and DGKD against float64 references written from the official code
(SimKD, SemCKD: DefangChen/SimKD ``models/util.py``, ``distiller_zoo/SemCKD.py``, ``helper/loops.py``) and from the
paper's equation (DGKD); the deployed SimKD student through checkpoints and export; the DGKD ladder as stages;
the Oxford-IIIT Pet loader on files in the dataset's own layout."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from aidkd.config import config_from_dict
from aidkd.data import build_data
from aidkd.data.base import DATASETS
from aidkd.errors import UserError
from aidkd.losses.dgkd import dense_guidance_loss, kept_guides
from aidkd.methods import Batch, MethodContext, build_method
from aidkd.models import create_model
from aidkd.models.reused_head import ReusedHeadStudent

C, HW, B = 5, 16, 12


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ctx(batch_size: int = B) -> MethodContext:
    return MethodContext(num_classes=C, input_size=(3, HW, HW), num_train=64, batch_size=batch_size)


def net(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(hash(name) % 1000)
    return create_model(name, num_classes=C, in_chans=3, input_hw=HW, **kw).double()


def batch(seed: int = 0, n: int = B) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, 3, HW, HW, generator=g, dtype=torch.float64), torch.arange(n) % C, torch.arange(n))


# ------------------------------------------------------------------------------------- float64 references
def ref_bn(x, bn):
    """Batch norm in training mode: batch statistics, biased variance."""
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)


def convs_and_bns(seq):
    return ([m for m in seq if isinstance(m, torch.nn.Conv2d)], [m for m in seq if isinstance(m, torch.nn.BatchNorm2d)])


def ref_simkd_projector(x, seq, s_c, t_c, factor):
    """SimKD's ``transfer``: conv1x1(s, t/f) BN ReLU conv3x3(t/f, t/f) BN ReLU conv1x1(t/f, t) BN ReLU."""
    (c1, c2, c3), (b1, b2, b3) = convs_and_bns(seq)
    mid = t_c // factor
    assert c1.weight.shape == (mid, s_c, 1, 1) and c2.weight.shape == (mid, mid, 3, 3)
    assert c3.weight.shape == (t_c, mid, 1, 1) and all(c.bias is None for c in (c1, c2, c3))
    x = ref_bn(F.conv2d(x, c1.weight), b1).clamp_min(0)
    x = ref_bn(F.conv2d(x, c2.weight, padding=1), b2).clamp_min(0)
    return ref_bn(F.conv2d(x, c3.weight), b3).clamp_min(0)


def ref_pool_to(x, side):
    """Average pooling of a square map to ``side`` (an exact divisor here)."""
    k = x.shape[2] // side
    return x.reshape(x.shape[0], x.shape[1], side, k, side, k).mean((3, 5))


def ref_kd(s, t, tau):
    """tau^2 * mean_b sum_c p_t (log p_t - log p_s)."""
    pt = torch.softmax(t / tau, 1)
    return tau**2 * (pt * (torch.log_softmax(t / tau, 1) - torch.log_softmax(s / tau, 1))).sum(1).mean()


# ------------------------------------------------------------------------------------------------- SimKD
@pytest.mark.parametrize("student,kwargs,teacher", [
    ("cnn_tiny", {}, "cnn_small"),            # equal sides (4x4)
    ("cnn", {"widths": [4, 8]}, "cnn_small"),  # the student's 8x8 map pooled to the teacher's 4x4
    ("cnn_small", {}, "cnn_deep"),            # the teacher's 2x2 map: the student's 4x4 pooled to it
    ("cnn_deep", {}, "cnn_small"),            # the student's 2x2 map: the teacher's 4x4 pooled to it
])
def test_simkd_matches_the_official_formula(student, kwargs, teacher):
    s_net, t_net = net(student, **kwargs), net(teacher)
    for factor in (2, 4):
        m = build_method("simkd", s_net, t_net, {"factor": factor}, ctx()).double().train()
        b = batch()
        logits, losses = m(b, epoch=0)
        assert set(losses) == {"simkd"}
        f_s = s_net.forward_with_features(b.images).feats[-1]
        with torch.no_grad():
            f_t = t_net.forward_with_features(b.images).feats[-1]
        if f_s.shape[2] > f_t.shape[2]:
            f_s = ref_pool_to(f_s, f_t.shape[2])
        elif f_s.shape[2] < f_t.shape[2]:
            f_t = ref_pool_to(f_t, f_s.shape[2])
        proj = ref_simkd_projector(f_s, m.student.projector, f_s.shape[1], f_t.shape[1], factor)
        ref_loss = ((proj - f_t) ** 2).sum() / proj.numel()
        ref_logits = proj.mean((2, 3)) @ t_net.fc.weight.t() + t_net.fc.bias  # the teacher's classifier
        torch.testing.assert_close(losses["simkd"], ref_loss, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-12, atol=1e-12)


def test_simkd_deploys_backbone_projector_and_frozen_teacher_head():
    s_net, t_net = net("cnn_tiny"), net("cnn_small")
    t_state = {k: v.clone() for k, v in t_net.state_dict().items()}
    m = build_method("simkd", s_net, t_net, {}, ctx()).double().train()
    deployed = m.student
    assert isinstance(deployed, ReusedHeadStudent) and deployed.backbone is s_net
    assert torch.equal(deployed.head.weight, t_net.fc.weight) and not deployed.head.weight.requires_grad
    head = deployed.head.weight.clone()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    history = []
    for step in range(25):
        _, losses = m(batch(step % 3), epoch=0)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append(sum(losses.values()).item())
    assert history[-1] < 0.7 * history[0]
    assert torch.equal(deployed.head.weight, head)  # the teacher's classifier is reused, never trained
    assert all(torch.equal(v, t_net.state_dict()[k]) for k, v in t_state.items())
    # inference needs no teacher: the deployed model alone gives the logits the method trains
    deployed.eval()
    m.eval()
    torch.testing.assert_close(deployed(batch().images), m(batch(), epoch=0)[0])
    parts = deployed.parameter_counts()
    assert parts["teacher_classifier"] == 32 * C + C and sum(parts.values()) == sum(p.numel() for p in deployed.parameters())


def test_simkd_refuses_a_teacher_whose_head_does_not_read_its_last_stage():
    with pytest.raises(UserError, match="simkd.*classifier"):
        build_method("simkd", net("cnn_tiny"), net("ShuffleV2"), {}, ctx())  # its head reads a 1x1 conv, not the stage


def test_simkd_run_checkpoint_evaluation_and_export(run_cfg, tmp_path):
    from aidkd.engine.trainer import train
    from aidkd.checkpoint_eval import evaluate_checkpoint
    from aidkd.export import export_safetensors
    from aidkd.files.checkpoint import read_safetensors

    t = train(config_from_dict(run_cfg(model={"name": "cnn_small"}, train={"epochs": 1, "amp": "off"},
                                       output={"name": "t"}), "t"))
    cfg = run_cfg(teacher={"name": "cnn_small", "checkpoint": f"{t['run_dir']}/checkpoints/best.pt"},
                  method={"name": "simkd"}, train={"epochs": 2, "amp": "off"}, output={"name": "s"})
    s = train(config_from_dict(cfg, "s"))
    assert s["arch"] == "simkd_student"
    assert s["student_params"] == sum(s["student_parts"].values())
    assert s["student_parts"]["teacher_classifier"] == 32 * 10 + 10
    best = f"{s['run_dir']}/checkpoints/best.pt"
    res = evaluate_checkpoint(best, device="cpu")  # no teacher needed: the checkpoint holds the deployed model
    assert res["model"] == "simkd_student" and res["top1"] == pytest.approx(s["last_test_acc"], abs=1e-9)
    weights, _ = export_safetensors(best, tmp_path / "simkd.safetensors")
    exported = read_safetensors(weights)
    assert exported["arch"] == "simkd_student" and exported["model_kwargs"]["backbone"] == "cnn_tiny"
    assert any(k.startswith("projector.") for k in exported["model"]) and "head.weight" in exported["model"]
    assert evaluate_checkpoint(str(weights), device="cpu")["top1"] == pytest.approx(res["top1"], abs=1e-9)


# ------------------------------------------------------------------------------------------------ SemCKD
def ref_embed(x, embed):
    """MLPEmbed: Linear(B, 2d) ReLU Linear(2d, d), L2-normalised rows."""
    lin1, lin2 = [m for m in embed if isinstance(m, torch.nn.Linear)]
    h = (x @ lin1.weight.t() + lin1.bias).clamp_min(0)
    h = h @ lin2.weight.t() + lin2.bias
    return h / h.pow(2).sum(1, keepdim=True).sqrt()


def ref_pair_projector(x, seq, s_c, t_c):
    """SemCKD's ``Proj``: conv1x1(s, 2t) BN ReLU conv3x3(2t, 2t) BN ReLU conv1x1(2t, t)."""
    (c1, c2, c3), (b1, b2) = convs_and_bns(seq)
    assert c1.weight.shape == (2 * t_c, s_c, 1, 1) and c2.weight.shape == (2 * t_c, 2 * t_c, 3, 3)
    assert c3.weight.shape == (t_c, 2 * t_c, 1, 1)
    x = ref_bn(F.conv2d(x, c1.weight), b1).clamp_min(0)
    x = ref_bn(F.conv2d(x, c2.weight, padding=1), b2).clamp_min(0)
    return F.conv2d(x, c3.weight)


def ref_semckd(feat_s, feat_t, att, soft):
    """SelfA + SemCKDLoss as the official code computes them, loops included."""
    bsz = feat_s[0].shape[0]
    q = torch.stack([ref_embed(f.reshape(bsz, -1) @ f.reshape(bsz, -1).t(), e) for f, e in zip(feat_s, att.queries)], 1)
    k = torch.stack([ref_embed(f.reshape(bsz, -1) @ f.reshape(bsz, -1).t(), e) for f, e in zip(feat_t, att.keys)], 2)
    weight = torch.softmax(torch.bmm(q, k) / soft, dim=-1)
    ind = torch.zeros(bsz, len(feat_s), len(feat_t), dtype=torch.float64)
    for i, fs in enumerate(feat_s):
        for j, ft in enumerate(feat_t):
            s_h, t_h = fs.shape[2], ft.shape[2]
            src, tgt = (ref_pool_to(fs, t_h), ft) if s_h > t_h else (fs, ref_pool_to(ft, s_h))
            v = ref_pair_projector(src, att.projectors[i][j], fs.shape[1], ft.shape[1])
            ind[:, i, j] = ((v - tgt) ** 2).reshape(bsz, -1).mean(-1)
    return (weight * ind).sum() / (bsz * len(feat_s)), weight


@pytest.mark.parametrize("student,teacher,soft", [("cnn_tiny", "cnn_small", 1.0), ("cnn_small", "cnn_deep", 0.5)])
def test_semckd_matches_the_official_formula(student, teacher, soft):
    s_net, t_net = net(student), net(teacher)
    m = build_method("semckd", s_net, t_net, {"soft": soft}, ctx()).double().train()
    b = batch(1)
    logits, losses = m(b, epoch=0)
    out = s_net.forward_with_features(b.images)
    with torch.no_grad():
        t_out = t_net.forward_with_features(b.images)
    ref, weight = ref_semckd(out.feats[1:], t_out.feats[1:], m.attention, soft)
    assert weight.shape == (B, len(out.feats) - 1, len(t_out.feats) - 1)
    torch.testing.assert_close(losses["semckd"], 400 * ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(losses["kd"], ref_kd(out.logits, t_out.logits, 4.0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losses["ce"], F.cross_entropy(out.logits, b.labels), rtol=1e-12, atol=1e-12)
    sum(losses.values()).backward()  # the attention learns through its weights, as in the official code
    assert all(p.grad is not None for p in m.attention.queries.parameters())


def test_semckd_short_batch_trains_on_ce_and_kd_alone():
    m = build_method("semckd", net("cnn_tiny"), net("cnn_small"), {}, ctx()).double().train()
    _, losses = m(batch(2, n=B - 4), epoch=0)
    assert losses["semckd"].item() == 0.0
    sum(losses.values()).backward()  # every parameter is reached, so DDP sees none unused
    assert all(p.grad is not None for p in m.attention.parameters())


# -------------------------------------------------------------------------------------------------- DGKD
def test_dense_guidance_sums_kd_over_the_guides():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(8, C, generator=g, dtype=torch.float64)
    guides = [torch.randn(8, C, generator=g, dtype=torch.float64) * k for k in (1.0, 2.0, 0.5)]
    for tau in (1.0, 4.0):
        want = sum(ref_kd(s, t, tau) for t in guides)
        torch.testing.assert_close(dense_guidance_loss(s, guides, tau), want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(dense_guidance_loss(s, guides, tau, "elementwise_mean"), want / C)


def test_guides_are_dropped_uniformly_and_one_always_remains():
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(3)
    for _ in range(3000):
        kept = kept_guides(3, 1, gen)
        assert len(kept) == 2 and kept == sorted(set(kept))
        counts[kept] += 1
    assert torch.allclose(counts / 3000, torch.full((3,), 2 / 3), atol=0.04)
    assert kept_guides(3, 0) == [0, 1, 2]
    assert len(kept_guides(3, 7)) == 1 and kept_guides(1, 1) == [0]


def test_dgkd_method_learns_from_the_kept_guides():
    s_net, t_net, a1, a2 = net("cnn_tiny"), net("cnn_medium"), net("cnn_small"), net("cnn_mini")
    m = build_method("dgkd", s_net, t_net, {}, ctx(), [a1, a2]).double().train()
    assert all(not p.requires_grad for a in (a1, a2) for p in a.parameters()) and not a1.training
    assert not any(k.startswith(("teacher", "assistants")) for k in m.state_dict())
    b = batch(4)
    for seed in range(4):
        torch.manual_seed(seed)
        kept = kept_guides(3, 1)
        torch.manual_seed(seed)
        logits, losses = m(b, epoch=0)
        with torch.no_grad():
            targets = [g(b.images) for g in (t_net, a1, a2)]
        want = 0.9 * sum(ref_kd(logits, targets[i], 4.0) for i in kept)
        torch.testing.assert_close(losses["kd"], want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(losses["ce"], 0.1 * F.cross_entropy(logits, b.labels))
    m.eval()  # evaluation keeps every guide (no randomness)
    _, losses = m(b, epoch=0)
    with torch.no_grad():
        want = 0.9 * sum(ref_kd(s_net(b.images), g(b.images), 4.0) for g in (t_net, a1, a2))
    torch.testing.assert_close(losses["kd"], want, rtol=1e-12, atol=1e-12)


def test_assistants_are_refused_by_one_teacher_methods():
    with pytest.raises(UserError, match="'kd' learns from one teacher.*dgkd"):
        build_method("kd", net("cnn_tiny"), net("cnn_small"), {}, ctx(), [net("cnn_mini")])


def test_dgkd_ladder_runs_as_stages_and_reuses_them(run_cfg, tmp_path):
    from aidkd.engine.trainer import train
    from aidkd.takd import run_dgkd

    t = train(config_from_dict(run_cfg(model={"name": "cnn_medium"}, train={"epochs": 1}, output={"name": "t"}), "t"))
    d = run_cfg(teacher={"name": "cnn_medium", "checkpoint": f"{t['run_dir']}/checkpoints/best.pt"},
                method={"name": "dgkd"}, train={"epochs": 1}, output={"name": "d"})
    cfg = config_from_dict(d, "d")
    first = run_dgkd(cfg, ["cnn_small", "cnn_mini"])
    assert [s["arch"] for s in first] == ["cnn_small", "cnn_mini", "cnn_tiny"]
    from aidkd.files.checkpoint import checkpoint_config
    last = checkpoint_config(f"{first[-1]['run_dir']}/checkpoints/best.pt")
    assert [a["name"] for a in last["assistants"]] == ["cnn_small", "cnn_mini"]
    assert last["assistants"][0]["checkpoint"] == f"{first[0]['run_dir']}/checkpoints/best.pt"
    again = run_dgkd(cfg, ["cnn_small", "cnn_mini"])
    assert [a["wall_time_s"] for a in again] == [a["wall_time_s"] for a in first]  # reused, not retrained
    with pytest.raises(UserError, match="method dgkd"):
        run_dgkd(config_from_dict({**d, "method": {"name": "kd"}}, "d"), ["cnn_small"])


# ---------------------------------------------------------------------------------------- Oxford-IIIT Pet
BREEDS = ["Abyssinian", "american_bulldog", "Bengal", "great_pyrenees"]  # class ids 1-4; the rest up to 37 too


def write_pet(root, per_class=(2, 1), broken: str | None = None):
    """The dataset's layout: images/<Breed>_<n>.jpg, annotations/trainval.txt and test.txt."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    names = BREEDS + [f"breed{i}" for i in range(len(BREEDS), 37)]
    lines = {"trainval": [], "test": []}
    for cid, name in enumerate(names, 1):
        for split, n in zip(("trainval", "test"), per_class):
            for k in range(n):
                image_id = f"{name}_{split}{k}"
                mode = "L" if cid == 2 and k == 0 else "RGB"  # the real set has a few grey images
                Image.new(mode, (40 + cid, 30), color=cid * 5).save(root / "images" / f"{image_id}.jpg")
                lines[split].append(f"{image_id} {cid} {1 + cid % 2} {cid}")
    if broken == "line":
        lines["trainval"].insert(1, "Abyssinian_x one 1 1")
    if broken == "image":
        lines["test"].append("Missing_1 3 1 3")
    for split, rows in lines.items():
        (root / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")


def pet_cfg(root, **data):
    return {"name": "oxford_pet", "root": str(root), "batch_size": 8, "eval_batch_size": 16, "workers": 0,
            "augment": True, **data}


def test_pet_reads_its_own_layout(tmp_path):
    from aidkd.config import DataConfig

    write_pet(tmp_path / "oxford-iiit-pet")
    src = DATASETS.get("oxford_pet")(DataConfig(**pet_cfg(tmp_path)), tmp_path)
    assert src.num_classes == 37 and len(src.train_samples) == 74 and len(src.test_samples) == 37
    assert src.classes[:4] == BREEDS and src.input_size == (3, 224, 224)
    assert sorted({y for _, y in src.train_samples}) == list(range(37))
    data = build_data(DataConfig(**pet_cfg(tmp_path, val_split=0.5)), seed=0)
    assert data.spec.num_classes == 37 and data.spec.num_train == 37
    b = next(iter(data.train))
    assert b.images.shape == (8, 3, 224, 224) and b.images.dtype == torch.float32
    assert math.isfinite(b.images.abs().max().item())


@pytest.mark.parametrize("broken,match", [("line", r"trainval.txt:2 is not"), ("image", "names Missing_1.jpg")])
def test_pet_bad_annotations_are_one_line_errors(tmp_path, broken, match):
    from aidkd.config import DataConfig

    write_pet(tmp_path, broken=broken)
    with pytest.raises(UserError, match=match):
        build_data(DataConfig(**pet_cfg(tmp_path)), seed=0)


def test_pet_missing_is_a_one_line_error_and_nothing_downloads(tmp_path):
    from aidkd.config import DataConfig

    with pytest.raises(UserError, match="oxford_pet.*not downloaded here"):
        build_data(DataConfig(**pet_cfg(tmp_path / "nowhere")), seed=0)


def test_pet_trains_a_student(tmp_path, run_cfg):
    from aidkd.engine.trainer import train

    write_pet(tmp_path / "pet")
    cfg = run_cfg(data=pet_cfg(tmp_path / "pet"), train={"epochs": 1, "max_steps_per_epoch": 2})
    s = train(config_from_dict(cfg, "pet"))
    assert s["dataset"] == "oxford_pet" and 0.0 <= s["last_test_acc"] <= 100.0


@pytest.mark.parametrize("config", ["pipeline/pet_res34_res18", "pipeline/pet_res50_mv2"])
def test_pet_pipeline_configs_run_on_pet_files(tmp_path, config):
    """The shipped Pet pipelines on files in Pet's layout, with small CNNs in place of the ImageNet pair (which
    need their ImageNet weights): the data path, the pretrained flags and every stage."""
    from aidkd.aid.pipeline import load_pipeline_config, run_pipeline

    write_pet(tmp_path / "pet")
    small = [f"base.data.root={tmp_path / 'pet'}", "base.data.workers=0", "base.data.batch_size=16",
             "base.train.epochs=1", "base.train.max_steps_per_epoch=2", "base.train.progress=false",
             "base.train.tensorboard=false", "base.train.device=cpu", "teacher.name=cnn_small", "teacher.epochs=1",
             "student.name=cnn_tiny", "student.pretrained=false", "seeds=[0]", "methods=[kd]",
             f"output.dir={tmp_path / 'out'}"]
    cfg = load_pipeline_config(config, small)
    assert cfg.teacher.pretrained is True and cfg.base.data.name == "oxford_pet"
    with pytest.raises(UserError, match="cnn_small.*no published pretrained weights"):  # the flag reaches the run
        run_pipeline(cfg, verbose=False)
    out = run_pipeline(load_pipeline_config(config, [*small, "teacher.pretrained=false"]), verbose=False)
    assert out["results"]["dataset"] == "oxford_pet" and out["results"]["methods"][0]["aid"]["last"][0] is not None


def test_distill_runs_the_comparison_set_on_cifar100_files(tmp_path, monkeypatch):
    """``aidkd distill`` with the shipped CIFAR-100 configs (SimKD, SemCKD) and DGKD / MSE on the same pair, on
    files in CIFAR-100's pickle layout; a teacher of one step stands in for the trained ResNet-32x4."""
    from aidkd.cli import main
    from aidkd.engine.trainer import read_summary
    from tests.test_data import write_cifar100

    write_cifar100(tmp_path / "data", n_train=16, n_test=8)
    monkeypatch.chdir(tmp_path)
    small = ["data.batch_size=8", "data.eval_batch_size=8", f"data.root={tmp_path / 'data'}", "data.workers=0",
             "train.epochs=1", "train.max_steps_per_epoch=1", "train.progress=false", "train.tensorboard=false",
             "train.device=cpu", "output.dir=runs"]
    assert main(["train", "--config", "cifar100/teachers/resnet32x4", *small]) == 0
    teacher = "teacher.checkpoint=runs/cifar100-teacher-resnet32x4/checkpoints/best.pt"
    runs = {"simkd": ["--config", "cifar100/simkd/res32x4_res8x4"],
            "semckd": ["--config", "cifar100/semckd/res32x4_vgg8"],
            "dgkd": ["--config", "cifar100/kd/res32x4_res8x4", "method.name=dgkd", "output.name=dgkd",
                     "assistants=[{name: resnet32x4, checkpoint: runs/cifar100-teacher-resnet32x4/checkpoints/best.pt}]"],
            "mse": ["--config", "cifar100/kd/res32x4_res8x4", "method.name=mse", "method.params={}", "output.name=mse"]}
    for method, args in runs.items():
        assert main(["distill", *args, *small, teacher]) == 0, method
    for name, arch in (("cifar100-res32x4_res8x4-simkd", "simkd_student"), ("cifar100-res32x4_vgg8-semckd", "vgg8"),
                       ("dgkd", "resnet8x4"), ("mse", "resnet8x4")):
        s = read_summary(tmp_path / "runs" / name)
        assert s["arch"] == arch and s["dataset"] == "cifar100" and 0 <= s["last_test_acc"] <= 100


def test_distill_runs_the_comparison_set_on_fashion_mnist(tmp_path, monkeypatch):
    """``aidkd distill`` with each new method on Fashion-MNIST (the installed idx files), a small slice of it."""
    from aidkd.cli import main
    from aidkd.engine.trainer import read_summary

    monkeypatch.chdir(tmp_path)
    small = ["data.name=fashion_mnist", "data.train_subset=1000", "data.val_split=0.1", "data.batch_size=32",
             "data.download=false", "train.epochs=2", "train.progress=false", "train.tensorboard=false",
             "train.device=cpu", "optim.lr=0.01", "sched.name=cosine", "output.dir=runs"]  # SemCKD: docs/methods.md
    assert main(["train", "model.name=cnn_small", "output.name=t", *small]) == 0
    teacher = ["teacher.name=cnn_small", "teacher.checkpoint=runs/t/checkpoints/best.pt"]
    assert main(["train", "model.name=cnn_mini", "output.name=a", *small, *teacher, "method.name=kd"]) == 0
    for method, extra in (("simkd", []), ("semckd", []), ("mse", []),
                          ("dgkd", ["assistants=[{name: cnn_mini, checkpoint: runs/a/checkpoints/best.pt}]"])):
        assert main(["distill", "model.name=cnn_tiny", f"method.name={method}", f"output.name={method}", *small,
                     *teacher, *extra]) == 0, method
        s = read_summary(tmp_path / "runs" / method)
        assert s["dataset"] == "fashion_mnist" and s["last_test_acc"] > 10, method  # above chance after two epochs
