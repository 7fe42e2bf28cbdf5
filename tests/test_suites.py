"""Every shipped config of the reproduction suites loads, builds its models and method, and trains two steps."""
import pytest
import torch

from aidkd.bench.suites import CONFIG_DIR, all_entries, band, suite_configs
from aidkd.config import load_config
from aidkd.methods import Batch, MethodContext, build_method
from aidkd.models import create_model

PATHS = suite_configs("cifar100") + suite_configs("imagenet")


def test_shipped_configs_match_the_generator():
    entries = all_entries()
    assert len(PATHS) == len(entries)
    for rel, d in entries.items():
        assert (CONFIG_DIR / rel).exists(), rel


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
        with torch.no_grad():  # give the random teacher's batch norms real statistics, as a trained one has
            teacher.train()
            teacher(torch.randn(4, 3, hw, hw))
    ctx = MethodContext(num_classes=ncls, input_size=(3, hw, hw), num_train=64, epochs=cfg.train.epochs,
                        steps_per_epoch=10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    method = build_method(cfg.method.name, student, teacher, cfg.method.params, ctx)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=cfg.optim.lr, momentum=0.9)
    b = 2
    for step in range(2):
        batch = Batch(torch.randn(b, 3, hw, hw), torch.randint(0, ncls, (b,)), torch.arange(b) + step * b)
        logits, losses = method(batch, epoch=30)
        assert logits.shape == (b, ncls)
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
