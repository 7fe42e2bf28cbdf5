"""Every shipped config of the reproduction suites loads, builds its models and method, and trains two steps."""
import json

import pytest
import torch
import yaml

from aidkd.bench.suites import CONFIG_DIR, all_entries, band, suite_configs, suite_pipeline_configs
from aidkd.config import load_config
from aidkd.methods import Batch, MethodContext, build_method
from aidkd.models import create_model


def calibrate_bn(model, input_size, n=8):
    """Give a randomly initialised model's batch norms the statistics of real forward passes (a cumulative
    average over one batch), as a trained model has; eval-mode outputs of a random model are otherwise huge."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(n, *input_size))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


PATHS = suite_configs("cifar100") + suite_configs("imagenet")
AID_PATHS = suite_pipeline_configs("cifar100")


def test_shipped_configs_match_the_generator():
    entries = all_entries()
    assert len(AID_PATHS) == 11
    assert {str(p.relative_to(CONFIG_DIR)) for p in PATHS + AID_PATHS} == set(entries)
    for rel, d in entries.items():  # the shipped files are what the published-settings table generates
        assert yaml.safe_load((CONFIG_DIR / rel).read_text()) == d, rel


def test_bands():
    assert band("cifar100", "res56_res20") == 0.5 and band("cifar100", "wrn40_2_wrn16_2") == 1.0
    assert band("cifar100", "res32x4_shv2") == 1.0 and band("imagenet", "res34_res18") == 0.3


@pytest.mark.parametrize("path", PATHS, ids=[str(p.relative_to(CONFIG_DIR)) for p in PATHS])
def test_suite_config_trains_two_steps(path):
    cfg = load_config(path)
    assert cfg.meta.get("published") is not None
    imagenet = cfg.data.name == "imagenet"
    ncls, hw = (1000, 224) if imagenet else (100, 32)
    torch.manual_seed(0)
    student = create_model(cfg.model.name, num_classes=ncls, in_chans=3, input_hw=hw, **cfg.model.kwargs)
    teacher = None
    if cfg.teacher.name:
        teacher = create_model(cfg.teacher.name, num_classes=ncls, in_chans=3, input_hw=hw)  # random weights
        calibrate_bn(teacher, (3, hw, hw), n=4)
    b = 4  # SemCKD's attention needs a batch of at least 4 (its embeddings are batch / 4 wide)
    ctx = MethodContext(num_classes=ncls, input_size=(3, hw, hw), num_train=64, epochs=cfg.train.epochs,
                        steps_per_epoch=10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), batch_size=b)
    method = build_method(cfg.method.name, student, teacher, cfg.method.params, ctx)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=cfg.optim.lr, momentum=0.9)
    for step in range(2):
        batch = Batch(torch.randn(b, 3, hw, hw), torch.randint(0, ncls, (b,)), torch.arange(b) + step * b)
        logits, losses = method(batch, epoch=30)
        assert logits.shape == (b, ncls)
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("path", AID_PATHS, ids=[p.stem for p in AID_PATHS])
def test_aid_suite_entry_adapts_two_steps_and_distils(path):
    """An AID entry is a pipeline config: it loads, its teacher takes two steps of the published AID towards the student, and
    each of its methods takes a step on the student from the adapted teacher."""
    from aidkd.aid.objective import AIDObjective
    from aidkd.aid.pipeline import load_pipeline_config

    cfg = load_pipeline_config(path)
    assert [m.name for m in cfg.methods] == ["kd", "dkd"] and cfg.aid.reference == "vanilla"
    assert cfg.aid.objective == "kd" and (cfg.aid.lambda_ce, cfg.aid.lambda_kd, cfg.aid.tau) == (0.1, 0.9, 4.0)
    torch.manual_seed(0)
    hw, ncls, b = 32, 100, 4
    student = create_model(cfg.student.name, num_classes=ncls, input_hw=hw)
    teacher = create_model(cfg.teacher.name, num_classes=ncls, input_hw=hw)
    t0 = create_model(cfg.teacher.name, num_classes=ncls, input_hw=hw)
    for m in (student, teacher):
        calibrate_bn(m, (3, hw, hw))
    t0.load_state_dict(teacher.state_dict())
    t0.eval(), student.eval()
    # a random deep network's gradients are ~100x a trained one's: a 10x smaller step than the config's keeps the
    # adapted random teacher's outputs in a realistic range for the distillation step below
    opt = torch.optim.SGD(teacher.parameters(), lr=cfg.aid.lr / 10, momentum=0.9)
    x, y = torch.randn(b, 3, hw, hw), torch.tensor([0, 0, 1, 1])
    for _ in range(2):
        with torch.no_grad():
            z0, zr = t0(x), student(x)
        loss = AIDObjective(cfg.aid.adaptation())(teacher(x), z0, zr, y).total
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in t0.parameters())
    ctx = MethodContext(num_classes=ncls, input_size=(3, hw, hw), num_train=64, epochs=240, steps_per_epoch=10)
    teacher.eval()
    teacher.zero_grad(set_to_none=True)
    for m in cfg.methods:  # one step of each method from the adapted teacher: finite loss and gradients
        method = build_method(m.name, student, teacher, m.params, ctx)
        logits, losses = method(Batch(x, y, torch.arange(b)), epoch=30)
        loss = sum(losses.values())
        assert torch.isfinite(loss) and set(losses) >= {"ce"}
        method.zero_grad()
        loss.backward()
        grads = [p.grad for p in student.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert all(p.grad is None for p in teacher.parameters())  # the frozen teacher gets no gradient


def test_run_suite_trains_teachers_first_and_reuses(tmp_path, monkeypatch):
    """The suite plan on a two-entry suite of digits configs: the teacher stage's checkpoint feeds the student,
    the report is written under the output folder, and a rerun trains nothing."""
    from aidkd.bench import suites

    base = {"data": {"name": "digits", "batch_size": 64, "augment": False}, "optim": {"lr": 0.05},
            "sched": {"name": "cosine"}, "train": {"epochs": 1, "device": "cpu", "progress": False,
                                                   "tensorboard": False}}
    teacher = {**base, "model": {"name": "cnn_small"}, "method": {"name": "vanilla"},
               "output": {"name": "cifar100-teacher-cnn_small"}, "meta": {"published": 90.0, "role": "teacher"}}
    student = {**base, "model": {"name": "cnn_tiny"}, "method": {"name": "kd"},
               "teacher": {"name": "cnn_small", "checkpoint": "runs/cifar100-teacher-cnn_small/checkpoints/best.pt"},
               "output": {"name": "cifar100-p-kd"}, "meta": {"published": 50.0, "role": "student"}}
    for rel, d in (("cifar100/teachers/cnn_small.yaml", teacher), ("cifar100/kd/p.yaml", student)):
        (tmp_path / "configs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "configs" / rel).write_text(yaml.safe_dump(d))
    monkeypatch.setattr(suites, "CONFIG_DIR", tmp_path / "configs")
    out = tmp_path / "runs"
    assert suites.run_suite("cifar100", seeds=1, out=str(out)) == 0
    t_dir, s_dir = out / "cifar100-teacher-cnn_small", out / "cifar100-p-kd-s0"
    rec = json.loads((s_dir / "stage.json").read_text())
    assert rec["files"]["teacher.checkpoint"]["path"] == str(t_dir / "checkpoints/best.pt")
    assert json.loads((t_dir / "stage.json").read_text())["result"]["summary"]["method"] == "vanilla"
    assert (out / "cifar100_suite.md").is_file()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".pt", ".json")}
    assert suites.run_suite("cifar100", seeds=1, out=str(out)) == 0
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
