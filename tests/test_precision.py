"""``train.amp``: auto is bf16 exactly where the hardware does bf16 natively, and every part that runs a model
(training, evaluation, the teacher's forward, AID's fine-tuning) follows it; the losses stay in float32."""
import json

import pytest
import torch

import aidkd.engine.precision as precision
from aidkd.aid.objective import AIDParams, TeacherAdapter
from aidkd.config import config_from_dict
from aidkd.engine import train
from aidkd.engine.precision import resolve_precision
from aidkd.models import create_model


def test_auto_is_bf16_where_the_cpu_has_it_and_fp32_elsewhere(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("off", cpu).dtype is None and resolve_precision("off", cuda).dtype is None
    assert resolve_precision("bf16", cpu).dtype is torch.bfloat16  # forced, emulated where the CPU lacks it
    assert resolve_precision("auto", cuda).dtype is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: [])
    p = resolve_precision("auto", cpu)
    assert p.dtype is None and p.name == "fp32" and "without native bf16" in p.reason
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ["AMX"])
    p = resolve_precision("auto", cpu)
    assert p.dtype is torch.bfloat16 and p.name == "bf16" and "AMX" in p.reason


def test_cpu_features_come_from_torch():
    feats = precision.cpu_bf16_features()
    assert set(feats) <= {"AVX512-BF16", "AMX"}
    assert bool(feats) == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert "native bf16" in precision.cpu_capability()


@pytest.mark.parametrize("native", [True, False])
def test_a_run_follows_auto_and_records_its_precision(run_cfg, monkeypatch, native):
    """With native bf16 the student's convolutions run in bf16 under auto (fp32 without it), the loss stays
    float32, and the summary records the precision and why."""
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ["AVX512-BF16"] if native else [])
    seen = {}
    cfg = config_from_dict(run_cfg(train={"epochs": 1, "max_steps_per_epoch": 2}))
    orig_conv = torch.nn.Conv2d.forward

    def conv_forward(self, x):
        out = orig_conv(self, x)
        seen.setdefault("conv", set()).add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "forward", conv_forward)
    summary = train(cfg)
    assert summary["precision"] == ("bf16" if native else "fp32")
    assert ("with native bf16" in summary["precision_reason"]) == native
    assert seen["conv"] == ({torch.bfloat16} if native else {torch.float32})
    rec = json.loads(open(f"{summary['run_dir']}/summary.json").read())
    assert rec["precision"] == summary["precision"]


def test_the_aid_fine_tuning_runs_the_teacher_in_the_given_dtype_and_the_loss_in_float32():
    torch.manual_seed(0)
    teacher = create_model("cnn_tiny", num_classes=10, in_chans=1, input_hw=8)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    out_dtypes = []
    teacher.register_forward_hook(lambda m, i, o: out_dtypes.append(o.dtype))
    adapter = TeacherAdapter(teacher, AIDParams(lr=0.05), total_steps=2, dtype=torch.bfloat16)
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 10
    loss = adapter.step(x, y, torch.randn(32, 10))
    assert out_dtypes == [torch.bfloat16]
    assert all(v.dtype == torch.float32 for v in loss.terms.values())
    assert all(p.dtype == torch.float32 for p in teacher.parameters())  # the weights stay float32
    assert any(not torch.equal(before[k], v) for k, v in teacher.state_dict().items())
