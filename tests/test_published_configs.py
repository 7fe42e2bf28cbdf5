"""The shipped configs carry the settings of the code behind each published number."""
import pytest
import yaml

from aidkd.bench.suites import CONFIG_DIR, MLKD_LS_PUBLISHED, all_entries
from aidkd.config import load_config
from aidkd.methods import MethodContext, build_method
from aidkd.models import create_model


def test_shipped_files_are_the_generated_table():
    for rel, d in all_entries().items():
        assert yaml.safe_load((CONFIG_DIR / rel).read_text()) == d, f"{rel}: rerun python -m aidkd.bench.suites"


def test_imagenet_reviewkd_uses_pre_relu_student_features_and_official_mid_channels():
    for pair, mid in (("res34_res18", 512), ("res50_mv1", 256)):
        p = load_config(f"imagenet/reviewkd/{pair}").method.params
        assert p["student_preact"] is True and p["max_mid_channels"] == mid and p["warmup_epochs"] == 0
    cfg = load_config("imagenet/reviewkd/res50_mv1")
    hw = 64
    ctx = MethodContext(num_classes=10, input_size=(3, hw, hw), num_train=8, epochs=1, mean=(0.5,) * 3, std=(0.25,) * 3)
    student = create_model(cfg.model.name, num_classes=10, input_hw=hw)
    teacher = create_model(cfg.teacher.name, num_classes=10, input_hw=hw).eval()
    m = build_method("reviewkd", student, teacher, cfg.method.params, ctx)
    mids = {abf.conv1[0].out_channels for abf in m.connector.abfs}
    assert mids == {256}  # MobileNetV1's pooled feature has 1024 channels: 512 without the official cap
    assert [abf.conv1[0].in_channels for abf in m.connector.abfs] == [1024, 1024, 512, 256, 128]


@pytest.mark.parametrize("pair", sorted(MLKD_LS_PUBLISHED))
def test_mlkd_ls_configs_follow_lskd(pair):
    cfg = load_config(f"cifar100/mlkd_ls/{pair}")
    p = cfg.method.params
    assert cfg.method.name == "mlkd" and p["logit_standardization"] is True
    assert list(p["temperatures"]) == [2, 3, 5, 2, 6] and p["kd_weight"] == 9
    assert cfg.train.epochs == 480 and cfg.meta["published"] == MLKD_LS_PUBLISHED[pair]
