"""The model zoo: published parameter counts, the feature contract, checkpoint loading, ImageNet wrappers."""
from __future__ import annotations

import copy
import hashlib
import os
import sys
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aidkd.errors import UserError
from aidkd.models import (
    HookedModel,
    count_macs,
    create_model,
    list_models,
    load_weights,
    model_table,
    num_params,
)

# parameter counts with 100 classes, as the published code (RepDistiller / mdistiller) builds them
# (the published RepDistiller/mdistiller counts; ResNet34, not in that table, is its CIFAR variant of the same code)
PARAMS = {
    "resnet8": 83_892, "resnet14": 181_108, "resnet20": 278_324, "resnet32": 472_756, "resnet44": 667_188,
    "resnet56": 861_620, "resnet110": 1_736_564, "resnet8x4": 1_233_540, "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916, "wrn_16_2": 703_284, "wrn_40_1": 569_780, "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028, "vgg11": 9_277_284, "vgg13": 9_462_180, "vgg16": 14_774_436, "vgg19": 20_086_692,
    "ResNet18": 11_220_132, "ResNet34": 21_328_292, "ResNet50": 23_705_252, "MobileNetV2": 812_836,
    "ShuffleV1": 949_258, "ShuffleV2": 1_355_528,
}
# state-dict layout (every key with its shape, in order), as a digest, taken from the published constructors
# (RepDistiller / mdistiller models/cifar) with 100 classes: checkpoints saved by that code load unchanged
LAYOUT = {
    "resnet8": "0ff8f3084cf4", "resnet14": "b70474380c91", "resnet20": "3bb10320e0da", "resnet32": "b4886fe3fcc4",
    "resnet44": "527260a048fb", "resnet56": "f6e9de549358", "resnet110": "8e491d68832b",
    "resnet8x4": "9a8535931781", "resnet32x4": "d1d8b6aff2c7", "ResNet18": "a720d9751ba4",
    "ResNet34": "b64ac45c1655", "ResNet50": "da1ff7b829fd", "wrn_16_1": "e3ab7b794b67", "wrn_16_2": "e6e4da8c5899",
    "wrn_40_1": "cbe18fe3b882", "wrn_40_2": "8f538306a8b5", "vgg8": "a47167a2b875", "vgg11": "2bc169736f5b",
    "vgg13": "e9483c6db3bf", "vgg16": "ff5903876fff", "vgg19": "132631c7263d", "MobileNetV2": "f78e7a5418c3",
    "ShuffleV1": "4da47ba32623", "ShuffleV2": "b1ea13395819",
}
CIFAR_MODELS = list(PARAMS)
HEAVY = {"ResNet34", "ResNet50", "vgg16", "vgg19", "resnet32x4", "resnet110"}
# models whose feats[i] == relu(preact_feats[i]) (WRN is pre-activation; MobileNetV2 ends stages linearly)
RELU_OF_PREACT = [n for n in CIFAR_MODELS if not n.startswith("wrn_") and n != "MobileNetV2"]


@pytest.fixture(autouse=True, scope="module")
def _honour_omp_num_threads():
    """Run this module with OMP_NUM_THREADS threads when it is set (conftest asks for 2, which is several times
    slower for these small convolutions on a shared 2-core machine); restore the setting afterwards."""
    n, before = int(os.environ.get("OMP_NUM_THREADS") or 0), torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    yield
    torch.set_num_threads(before)


def _randomize_bn(model):
    """Non-trivial BatchNorm statistics and affine parameters, so that eval outputs depend on every buffer."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model


# --- the parameter table ------------------------------------------------------------------------------------


def _layout_digest(state_dict) -> str:
    text = ";".join(f"{k}:{tuple(v.shape)}" for k, v in state_dict.items())
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def test_parameter_table_and_state_dict_layout_match_the_published_code():
    got, layout = {}, {}
    for name in PARAMS:
        model = create_model(name, num_classes=100)
        got[name], layout[name] = num_params(model), _layout_digest(model.state_dict())
        del model
    assert got == PARAMS
    assert layout == LAYOUT
    # a few names spelled out, for whoever has to debug a digest mismatch
    keys = set(create_model("wrn_40_2").state_dict())
    assert {"block2.layer.0.convShortcut.weight", "block1.layer.0.bn1.running_var", "bn1.weight", "fc.weight"} <= keys
    keys = set(create_model("MobileNetV2").state_dict())
    assert {"conv1.0.weight", "blocks.6.0.conv.7.running_mean", "conv2.1.weight", "classifier.0.weight"} <= keys


def test_published_macs_at_32x32():
    # published per-image MACs in millions (rounded as published)
    for name, mmacs in {"resnet20": 41, "wrn_40_1": 83, "vgg8": 96, "MobileNetV2": 6.5, "ShuffleV2": 45}.items():
        got = count_macs(create_model(name), (3, 32, 32)) / 1e6
        assert abs(got - mmacs) <= 0.5, (name, got)


def test_cifar_zoo_and_aliases_are_registered():
    names = set(list_models())
    assert set(CIFAR_MODELS) <= names and "mobile_half" in names
    imagenet = set(list_models("imagenet"))
    assert {"tv_resnet18", "tv_resnet34", "tv_resnet50", "tv_mobilenet_v2", "MobileNetV1"} <= imagenet
    assert not set(CIFAR_MODELS) & imagenet
    m = create_model("mobile_half")
    assert num_params(m) == PARAMS["MobileNetV2"] and m.arch == "MobileNetV2"
    assert num_params(create_model("MobileNetV2", width_mult=1.0)) > 2 * PARAMS["MobileNetV2"]


# --- the feature contract -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_forward_backward_and_features(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=100)
    assert model.input_size == (3, 32, 32)
    x = torch.randn(1 if name in HEAVY else 2, 3, 32, 32)
    out = model.forward_with_features(x)
    n = x.shape[0]
    assert out.logits.shape == (n, 100)
    assert [f.shape for f in out.preact_feats] == [f.shape for f in out.feats]
    assert out.pooled.shape == (n, model.get_classifier().in_features)

    loss = F.cross_entropy(out.logits, torch.zeros(n, dtype=torch.long)) + sum(f.pow(2).mean() for f in out.feats)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    info = model.feature_info()  # one eval-mode pass at the model's input size
    assert info["feats"] == [tuple(f.shape[1:]) for f in out.feats]
    assert info["preact_feats"] == [tuple(f.shape[1:]) for f in out.preact_feats]
    assert info["pooled"] == tuple(out.pooled.shape[1:]) and info["logits"] == (100,)
    assert model.training  # feature_info restores the mode

    if name in RELU_OF_PREACT:
        for f, p in zip(out.feats[1:], out.preact_feats[1:]):
            assert torch.allclose(F.relu(p), f)
            assert (p < 0).any()  # a genuine pre-activation
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), model.forward_with_features(x).logits)


@pytest.mark.parametrize("name", ["resnet8", "resnet8x4", "wrn_16_1", "vgg8", "ResNet18", "MobileNetV2",
                                  "ShuffleV1", "ShuffleV2"])
def test_one_channel_28x28(name):
    model = create_model(name, num_classes=10, in_chans=1, input_hw=28)
    assert model.input_size == (1, 28, 28)
    out = model.forward_with_features(torch.randn(2, 1, 28, 28))
    assert out.logits.shape == (2, 10)
    rgb = create_model(name, num_classes=10).feature_info()["feats"]  # the channels do not depend on the input
    assert [f.shape[1] for f in out.feats] == [s[0] for s in rgb]
    out.logits.sum().backward()
    assert model.feature_info()["logits"] == (10,)


def test_reviewkd_feature_shapes():
    # ReviewKD's published stage features (feats[1:]) and pooled feature, channels @ sizes at 32x32
    expected = {
        "resnet20": ([16, 32, 64, 64], [32, 16, 8, 1]),
        "resnet8x4": ([64, 128, 256, 256], [32, 16, 8, 1]),
        "wrn_16_2": ([32, 64, 128, 128], [32, 16, 8, 1]),
        "wrn_40_1": ([16, 32, 64, 64], [32, 16, 8, 1]),
        "ShuffleV1": ([240, 480, 960, 960], [16, 8, 4, 1]),
        "ShuffleV2": ([116, 232, 464, 1024], [16, 8, 4, 1]),
        "vgg8": ([128, 256, 512, 512, 512], [16, 8, 4, 4, 1]),
        "MobileNetV2": ([12, 16, 48, 160, 1280], [16, 8, 4, 2, 1]),
    }
    for name, (chans, sizes) in expected.items():
        info = create_model(name).feature_info()
        got = [s[0] for s in info["feats"][1:]] + [info["pooled"][0]]
        got_hw = [s[1] for s in info["feats"][1:]] + [1]
        assert (got, got_hw) == (chans, sizes), name


def test_unknown_options_are_rejected():
    with pytest.raises(UserError, match="'widht'.*accepts: num_classes, in_chans, input_hw, width_mult"):
        create_model("MobileNetV2", widht=1.0)
    with pytest.raises(UserError, match="no published pretrained weights"):
        create_model("resnet8", pretrained=True)
    with pytest.raises(UserError, match="unknown model 'resnet9'"):
        create_model("resnet9")


def test_model_table_rows():
    rows = model_table(num_classes=10, in_chans=1, input_hw=28, names=["resnet8", "mobile_half"])
    assert [r["name"] for r in rows] == ["resnet8", "mobile_half"]
    r = rows[0]
    assert r["params"] == num_params(create_model("resnet8", num_classes=10, in_chans=1))
    assert r["input_size"] == [1, 28, 28] and r["feats"][0] == [16, 28, 28] and r["pooled"] == [64]
    assert r["macs"] > 0 and r["family"] == "cifar"
    state = torch.get_rng_state()
    model_table(names=["resnet8"])
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(UserError, match="family"):
        model_table(family="mnist")


# --- checkpoints --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(1)
    model = _randomize_bn(create_model("resnet8", num_classes=100)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
    return model, x, y


def _fresh_output(ckpt, x, name="resnet8", **kw):
    model = create_model(name, num_classes=100)
    report = load_weights(model, ckpt, **kw)
    model.eval()
    with torch.no_grad():
        return model(x), report


@pytest.mark.parametrize("layout", ["model", "net", "state_dict", "top"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_published_layouts_load(tmp_path, trained, layout, prefix):
    model, x, y = trained
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    obj = sd if layout == "top" else {layout: sd, "epoch": 240, "accuracy": torch.tensor(70.1)}
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save(obj, path)
    out, report = _fresh_output(str(path), x)
    assert torch.equal(out, y)
    assert not (report.missing or report.unexpected or report.mismatched)


def test_aidkd_checkpoint_dict_and_old_pytorch_layouts(tmp_path, trained):
    model, x, y = trained
    sd = model.state_dict()
    # an aidkd checkpoint, given as a loaded dict
    out, report = _fresh_output({"model": sd, "arch": "resnet8", "num_classes": 100, "epoch": 3}, x)
    assert torch.equal(out, y) and report.meta["arch"] == "resnet8"
    # numpy scalars in the metadata and no num_batches_tracked buffers (older PyTorch)
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    torch.save({"model": old, "best_acc": np.float64(70.5)}, tmp_path / "old.pth")
    out, _ = _fresh_output(tmp_path / "old.pth", x)
    assert torch.equal(out, y)
    # a whole (DataParallel) distiller saved by mdistiller: the student's part is taken
    distiller = {f"module.{part}.{k}": v for part in ("student", "teacher") for k, v in sd.items()}
    out, _ = _fresh_output({"model": distiller}, x)
    assert torch.equal(out, y)
    # pretrained=<path> in create_model
    torch.save({"net": sd}, tmp_path / "net.pth")
    m = create_model("resnet8", num_classes=100, pretrained=str(tmp_path / "net.pth")).eval()
    with torch.no_grad():
        assert torch.equal(m(x), y)


def test_mismatches_are_one_line_user_errors(tmp_path, trained):
    model, x, _ = trained
    path = tmp_path / "r8.pth"
    torch.save({"model": model.state_dict(), "arch": "resnet8", "num_classes": 100}, path)

    def err(name, num_classes=100, p=path):
        with pytest.raises(UserError) as e:
            load_weights(create_model(name, num_classes=num_classes), p)
        msg = str(e.value)
        assert "\n" not in msg and str(p) in msg
        return msg

    msg = err("resnet8", num_classes=10)
    assert "fc.weight: checkpoint (100, 64) vs model (10, 64)" in msg and "100 classes" in msg
    msg = err("resnet8x4")
    assert "conv1.weight: checkpoint (16, 3, 3, 3) vs model (32, 3, 3, 3)" in msg and "'resnet8'" in msg
    assert "missing key layer1.1.conv1.weight" in err("resnet14")
    assert "not found" in err("resnet8", p=tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"this is not a checkpoint")
    assert "cannot be read" in err("resnet8", p=tmp_path / "bad.pth")
    torch.save({"epoch": 3, "acc": 1.0}, tmp_path / "empty.pth")
    assert "holds no state dict" in err("resnet8", p=tmp_path / "empty.pth")


def test_non_strict_load_skips_the_classifier(trained):
    model, _, _ = trained
    fresh = create_model("resnet8", num_classes=10)
    report = load_weights(fresh, {"model": model.state_dict()}, strict=False)
    assert report.mismatched == ["fc.weight", "fc.bias"] and not report.missing
    assert torch.equal(fresh.conv1.weight, model.conv1.weight)


# --- ImageNet models ----------------------------------------------------------------------------------------


def test_torchvision_resnet18_features():
    torch.manual_seed(0)
    model = create_model("tv_resnet18", num_classes=10, input_hw=64)
    assert isinstance(model, HookedModel) and model.input_size == (3, 64, 64)
    x = torch.randn(2, 3, 64, 64)
    out = model.forward_with_features(x)
    assert [tuple(f.shape[1:]) for f in out.feats] == [(64, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4),
                                                      (512, 2, 2)]
    assert out.pooled.shape == (2, 512) and out.logits.shape == (2, 10)
    for f, p in zip(out.feats, out.preact_feats):  # mdistiller's ImageNet ResNet: preact = before the last ReLU
        assert torch.allclose(F.relu(p), f) and (p < 0).any()
    assert torch.allclose(model.get_classifier()(out.pooled), out.logits, atol=1e-5)
    out.logits.sum().backward()
    assert model.model.conv1.weight.grad is not None
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # hooks were removed
    model.eval()
    with torch.no_grad():
        copied = copy.deepcopy(model)  # an EMA-style copy has its own features
        assert torch.allclose(copied.forward_with_features(x).feats[3], model.forward_with_features(x).feats[3])
        assert torch.allclose(model(x), model.forward_with_features(x).logits)

    # a bare torchvision state dict (no wrapper prefix) loads into the wrapper
    import torchvision

    bare = _randomize_bn(torchvision.models.resnet18(num_classes=10)).eval()
    load_weights(model, bare.state_dict())
    with torch.no_grad():
        assert torch.allclose(model(x), bare(x), atol=1e-5)


def test_mobilenetv1_features():
    assert num_params(create_model("MobileNetV1", num_classes=1000)) == 4_231_976
    model = create_model("MobileNetV1", num_classes=10, input_hw=64)
    out = model.forward_with_features(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in out.feats] == [(32, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4),
                                                      (1024, 2, 2)]
    for f, p in zip(out.feats[1:], out.preact_feats[1:]):
        assert torch.allclose(F.relu(p), f)
    assert out.pooled.shape == (2, 1024) and out.logits.shape == (2, 10)


def test_generic_torchvision_and_timm_lookup():
    m = create_model("tv:mobilenet_v3_small", num_classes=10, in_chans=1, input_hw=64)
    out = m.forward_with_features(torch.randn(1, 1, 64, 64))
    assert [f.shape[-1] for f in out.feats] == [32, 16, 8, 4, 2] and out.logits.shape == (1, 10)
    with pytest.raises(UserError, match="unknown torchvision classifier"):
        create_model("tv:resnet19")
    pytest.importorskip("timm")
    m = create_model("timm:resnet18", num_classes=10, input_hw=64)
    assert m.stage_paths == ["act1", "layer1", "layer2", "layer3", "layer4"]
    out = m.forward_with_features(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in out.feats] == [64, 64, 128, 256, 512] and out.pooled.shape == (1, 512)


def test_pretrained_offline_and_missing_timm_are_user_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(UserError, match="pretrained weights of torchvision 'resnet18'.*never downloads"):
        create_model("tv_resnet18", num_classes=10, pretrained=True)
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(UserError, match=r"pip install aidkd\[timm\]"):
        create_model("timm:resnet18")


@pytest.mark.parametrize("name,widths", [("cnn_tiny", (4, 8, 16)), ("cnn_mini", (6, 12, 24)),
                                         ("cnn_small", (8, 16, 32)), ("cnn_medium", (16, 32, 64)),
                                         ("cnn_large", (32, 64, 128))])
def test_plain_cnn_parameter_counts(name, widths):
    # 3x3 stem conv + BN, one 3x3 conv + BN per stage, linear head (the Fashion-MNIST ladder: 1 channel, 10 classes)
    a, b, c = widths
    convs = 9 * (1 * a + a * a + a * b + b * c)
    bns = 2 * (a + a + b + c)
    expected = convs + bns + c * 10 + 10
    assert num_params(create_model(name, num_classes=10, in_chans=1, input_hw=28)) == expected
