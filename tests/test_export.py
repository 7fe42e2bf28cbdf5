"""Checkpoints to share: ``aidkd export`` to safetensors, every reader accepting .safetensors, and published
torchvision / timm weights read from local files only."""
import json
import sys
import urllib.error

import pytest
import torch

from aidkd.cli import main
from aidkd.config import config_from_dict
from aidkd.engine import train
from aidkd.files.checkpoint import load_checkpoint
from aidkd.errors import UserError
from aidkd.files.checkpoint import read_safetensors
from aidkd.models import create_model, load_weights, read_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    d = {"data": {"name": "digits", "batch_size": 64, "augment": False}, "model": {"name": "cnn_tiny"},
         "optim": {"lr": 0.05}, "sched": {"name": "cosine"},
         "train": {"epochs": 1, "device": "cpu", "progress": False, "tensorboard": False},
         "output": {"dir": str(out), "name": "student"}}
    return train(config_from_dict(d))


def test_export_writes_weights_and_metadata_that_every_reader_accepts(run, tmp_path, capsys):
    run_dir = run["run_dir"]
    out = tmp_path / "student.safetensors"
    assert main(["export", run_dir, "--format", "safetensors", "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["arch"] == "cnn_tiny" and meta["num_classes"] == 10 and meta["in_chans"] == 1 and meta["input_hw"] == 8
    assert meta["classes"] == [str(i) for i in range(10)] and len(meta["mean"]) == len(meta["std"]) == 1
    assert meta["config"]["data"]["name"] == "digits"
    original = torch.load(f"{run_dir}/checkpoints/best.pt", weights_only=True)["model"]
    # the safetensors file alone is enough: both readers give an aidkd checkpoint with the same tensors
    for ck in (read_checkpoint(out), load_checkpoint(out), read_safetensors(out)):
        assert ck["arch"] == "cnn_tiny" and json.loads(ck["config"])["data"]["name"] == "digits"
        assert ck["model"].keys() == original.keys()
        assert all(torch.equal(ck["model"][k], original[k]) for k in original)
    m = create_model("cnn_tiny", num_classes=10, in_chans=1, input_hw=8, pretrained=str(out))
    assert all(torch.equal(v, original[k]) for k, v in m.state_dict().items())
    # aidkd eval on the .safetensors gives the .pt's numbers
    assert main(["eval", str(out), "--json"]) == 0
    a = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["eval", f"{run_dir}/checkpoints/best.pt", "--json"]) == 0
    b = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert a["top1"] == b["top1"] and a["loss"] == pytest.approx(b["loss"])
    # as a teacher in a config
    d = {"data": {"name": "digits", "augment": False}, "model": {"name": "cnn_tiny"}, "method": {"name": "kd"},
         "teacher": {"name": "cnn_tiny", "checkpoint": str(out)},
         "train": {"epochs": 1, "device": "cpu", "progress": False, "tensorboard": False, "max_steps_per_epoch": 2},
         "output": {"dir": str(tmp_path), "name": "from_st"}}
    assert train(config_from_dict(d))["last_test_acc"] is not None


def test_export_refuses_to_overwrite_and_bad_files(run, tmp_path, capsys):
    out = tmp_path / "s.safetensors"
    assert main(["export", run["run_dir"], "--out", str(out)]) == 0
    before = out.read_bytes()
    assert main(["export", run["run_dir"], "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["export", run["run_dir"], "--out", str(out), "--overwrite"]) == 0
    assert main(["export", run["run_dir"], "--format", "onnx"]) == 2
    assert main(["export", str(tmp_path / "nothing")]) == 2
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="cannot be read as safetensors"):
        read_checkpoint(bad)
    assert main(["eval", str(bad)]) == 2
    # a published safetensors file (no aidkd header) reads as a bare state dict
    from safetensors.torch import save_file

    m = create_model("cnn_tiny", num_classes=10, in_chans=1, input_hw=8)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, tmp_path / "plain.safetensors")
    m2 = create_model("cnn_tiny", num_classes=10, in_chans=1, input_hw=8)
    load_weights(m2, tmp_path / "plain.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


@pytest.fixture
def no_network(monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("a download was attempted")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    try:
        import huggingface_hub

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    except ImportError:
        pass


def test_torchvision_pretrained_from_cache_directory_never_downloads(tmp_path, monkeypatch, no_network):
    import torchvision

    name = "mobilenet_v3_small"
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    ref = torchvision.models.get_model(name, weights=None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError, match=r"never downloads.*" + url.rsplit("/", 1)[1].replace(".", r"\.")):
        create_model(f"tv:{name}", pretrained=True)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(ref.state_dict(), cache / url.rsplit("/", 1)[1])
    m = create_model(f"tv:{name}", num_classes=1000, pretrained=True)  # the default cache (TORCH_HOME)
    assert all(torch.equal(a, b) for a, b in zip(m.model.state_dict().values(), ref.state_dict().values()))
    m10 = create_model(f"tv:{name}", num_classes=10, pretrained=str(tmp_path / "torch" / "hub"))  # a given folder
    assert m10(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert torch.equal(m10.model.features[0][0].weight, ref.features[0][0].weight)
    with pytest.raises(UserError, match="never downloads"):
        create_model(f"tv:{name}", pretrained=str(tmp_path))  # a folder without the file
    # a teacher config naming the folder: teacher.pretrained: <dir>
    from types import SimpleNamespace

    from aidkd.models import build_model

    cfg = config_from_dict({"teacher": {"name": f"tv:{name}", "pretrained": str(tmp_path / "torch" / "hub")}})
    t = build_model(cfg.teacher, SimpleNamespace(num_classes=10, input_size=(3, 64, 64)))
    assert torch.equal(t.model.features[0][0].weight, ref.features[0][0].weight)


def test_timm_pretrained_from_hub_cache_layout_never_downloads(tmp_path, no_network):
    timm = pytest.importorskip("timm")
    name = "test_resnet"
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    ref = timm.create_model(name, pretrained=False)
    with pytest.raises(UserError, match="never downloads"):
        create_model(f"timm:{name}", pretrained=str(tmp_path))
    # the Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/model.safetensors}
    from safetensors.torch import save_file

    folder = tmp_path / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snap = folder / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, snap / "model.safetensors")
    m = create_model(f"timm:{name}", num_classes=1000, pretrained=str(tmp_path), input_hw=64)
    assert all(torch.equal(a, b) for a, b in zip(m.model.state_dict().values(), ref.state_dict().values()))
    m5 = create_model(f"timm:{name}", num_classes=5, pretrained=str(tmp_path), input_hw=64)
    assert m5(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_missing_timm_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(UserError, match=r"pip install aidkd\[timm\]"):
        create_model("timm:resnet18")
