"""Feature methods build on float64 and bf16 models: the shape probes run in the model's own dtype."""
import pytest
import torch

from aidkd.methods import Batch, MethodContext, build_method
from aidkd.models import auto_stage_paths, count_macs, create_model

HW, C = 16, 4


def ctx():
    return MethodContext(num_classes=C, input_size=(3, HW, HW), num_train=32, epochs=2, mean=(0.5,) * 3,
                         std=(0.25,) * 3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_feature_info_probes_in_the_models_dtype(dtype):
    m32 = create_model("resnet8", num_classes=C, input_hw=HW)
    m = create_model("resnet8", num_classes=C, input_hw=HW).to(dtype)
    assert m.feature_info((3, HW, HW)) == m32.feature_info((3, HW, HW))
    assert next(m.parameters()).dtype == dtype  # the probe did not convert the model
    assert count_macs(m, (3, HW, HW)) == count_macs(m32, (3, HW, HW))
    tv = create_model("tv:mobilenet_v3_small", num_classes=C, input_hw=64)
    assert auto_stage_paths(tv.model.to(dtype), (3, 64, 64)) == auto_stage_paths(tv.model.float(), (3, 64, 64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", ["fitnet", "at", "crd", "reviewkd"])
def test_feature_methods_build_and_step_in_float64_and_bf16(name, dtype):
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=C, input_hw=HW).to(dtype)
    teacher = create_model("resnet20", num_classes=C, input_hw=HW).to(dtype).eval()
    params = {"nce_k": 8} if name == "crd" else {}
    method = build_method(name, student, teacher, params, ctx()).to(dtype)
    x = torch.randn(8, 3, HW, HW, dtype=dtype)
    logits, losses = method(Batch(x, torch.arange(8) % C, torch.arange(8)), epoch=1)
    assert logits.dtype == dtype
    loss = sum(losses.values())
    assert torch.isfinite(loss.float()) and len(losses) >= 2
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad.float()).all() for p in method.parameters())
