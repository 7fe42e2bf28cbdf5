"""Speed without changing the training: the view-recording augmentation draws what torchvision draws, the view
cache serves the teacher's logits for exactly the sampled view, and the lean teacher gives the same logits."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from aidkd.config import config_from_dict
from aidkd.data import TensorAugment, TensorLoader
from aidkd.data.augment import (
    apply_views,
    decode_views,
    draw_views,
    encode_views,
    normalize,
    num_views,
)
from aidkd.engine import train
from aidkd.files.checkpoint import load_checkpoint
from aidkd.teachers import ModelTeacher, fold_batchnorm
from aidkd.teachers.views import (
    CacheSpec,
    ViewStore,
    ViewsTeacher,
    build_view_logits,
    fingerprint,
    storage_bytes,
    stored_view_table,
)
from aidkd.errors import UserError
from aidkd.teachers.cache import cache_root, cached_views
from aidkd.methods import MethodContext, build_method
from aidkd.models import create_model


# ------------------------------------------------------------------------------------------ the augmentation
def chi2_sf(stat: float, df: int) -> float:
    """P(X >= stat) for X ~ chi-square(df): the regularised upper incomplete gamma function."""
    return torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                   torch.tensor(stat / 2, dtype=torch.float64)).item()


def homogeneity_p(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson's chi-square test that two histograms (same bins) come from one distribution."""
    a, b = a.double(), b.double()
    keep = (a + b) > 0
    a, b = a[keep], b[keep]
    col = a + b
    ea, eb = col * a.sum() / col.sum(), col * b.sum() / col.sum()
    stat = (((a - ea) ** 2) / ea + ((b - eb) ** 2) / eb).sum().item()
    return chi2_sf(stat, int(keep.sum()) - 1)


def torchvision_views(n: int, pad: int, hw: int, seed: int) -> torch.Tensor:
    """View ids of ``n`` draws of torchvision's RandomCrop(hw, padding=pad) + RandomHorizontalFlip(), read back
    from the output of a position-coded image (pixel (r, c) holds r * hw + c + 1; padding is 0)."""
    img = (torch.arange(hw * hw, dtype=torch.float32) + 1).view(1, hw, hw)
    tf = T.Compose([T.RandomCrop(hw, padding=pad), T.RandomHorizontalFlip()])
    torch.manual_seed(seed)
    ids = []
    c = hw // 2
    for _ in range(n):
        out = tf(img)[0]
        a, b = int(out[c, c]) - 1, int(out[c, c + 1]) - 1
        flipped = b < a
        r, col = divmod(a, hw)
        dy = r - c + pad
        dx = (col - (hw - 1 - c) + pad) if flipped else (col - c + pad)
        ids.append(int(encode_views(torch.tensor(dy), torch.tensor(dx), torch.tensor(flipped), pad, True)))
    return torch.tensor(ids)


def test_view_draw_matches_torchvision_distribution():
    pad, hw, n = 2, 8, 5000  # 50 views, 100 draws per view on average
    v = num_views(pad, True)
    tv = torch.bincount(torchvision_views(n, pad, hw, seed=0), minlength=v)
    ours = torch.bincount(draw_views(n, pad, True, torch.Generator().manual_seed(1)), minlength=v)
    assert (tv > 0).all()  # torchvision reaches every view
    assert homogeneity_p(tv, ours) > 1e-3
    # each marginal (dy, dx, flip) on its own
    for k in range(3):
        a = torch.bincount(decode_views(torch.arange(v).repeat_interleave(tv), pad, True)[k].long())
        b = torch.bincount(decode_views(torch.arange(v).repeat_interleave(ours), pad, True)[k].long())
        assert homogeneity_p(a, b) > 1e-3
    # the test has power: a draw that misses the last offset, or flips 30% of the time, is rejected
    off = torch.bincount(encode_views(torch.randint(0, 2 * pad, (n,)), torch.randint(0, 2 * pad + 1, (n,)),
                                      torch.rand(n) < 0.5, pad, True), minlength=v)
    biased = torch.bincount(encode_views(torch.randint(0, 2 * pad + 1, (n,)), torch.randint(0, 2 * pad + 1, (n,)),
                                         torch.rand(n) < 0.3, pad, True), minlength=v)
    assert homogeneity_p(tv, off) < 1e-6 and homogeneity_p(tv, biased) < 1e-6


def test_every_view_equals_torchvision_functional_crop_and_flip():
    pad, h, w = 4, 32, 30
    x = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    v = num_views(pad, True)
    assert v == 162 * 1 * (2 * pad + 1) ** 2 // 81
    views = torch.arange(v)
    got = apply_views(x.expand(v, -1, -1, -1), views, pad, True)
    dy, dx, f = decode_views(views, pad, True)
    padded = TF.pad(x, [pad])
    for i in range(v):
        ref = TF.crop(padded, int(dy[i]), int(dx[i]), h, w)
        if f[i]:
            ref = TF.hflip(ref)
        assert torch.equal(got[i], ref), i
    assert torch.equal(encode_views(dy, dx, f, pad, True), views)
    assert len({tuple(g.flatten().tolist()) for g in got[:20]}) == 20  # distinct views are distinct images


PAD2_FLIP = TensorAugment(2, True)


def _loader(n=40, c=1, hw=8, augment=PAD2_FLIP, batch=16, seed=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, c, hw, hw), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 4
    return TensorLoader(x, y, batch_size=batch, mean=(0.5,) * c, std=(0.25,) * c, augment=augment, seed=seed)


def test_training_batches_record_the_view_they_hold():
    ld = _loader()
    seen = 0
    for b in ld:
        raw = ld.images[b.index]
        ref = normalize(apply_views(raw, b.view, 2, True).float() / 255, ld.mean, ld.std)
        assert torch.allclose(b.images, ref, atol=1e-6)
        seen += len(b.index)
    assert seen == 40
    plain = _loader(augment=None)
    assert all(torch.equal(b.view, torch.zeros_like(b.index)) for b in plain)
    assert all(b.view is None for b in plain.as_eval())


def test_replayed_views_come_only_from_the_table():
    ld = _loader()
    table = stored_view_table(40, CacheSpec("sampled", 2, True, views_per_image=3))
    assert table.shape == (40, 3) and all(len(set(r.tolist())) == 3 for r in table)
    ld.replay_views(table)
    for epoch in range(3):
        ld.set_epoch(epoch)
        for b in ld:
            assert (table[b.index] == b.view.view(-1, 1)).any(1).all()


# ----------------------------------------------------------------------------------------------- the cache
def _teacher(name="cnn_tiny", c=1, seed=0):
    torch.manual_seed(seed)
    m = create_model(name, num_classes=4, in_chans=c, input_hw=8).eval()
    for mod in m.modules():  # non-trivial batch-norm statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return m


def _kd(teacher):
    ctx = MethodContext(num_classes=4, input_size=(1, 8, 8), mean=(0.5,), std=(0.25,))
    torch.manual_seed(1)
    return build_method("kd", create_model("cnn_tiny", num_classes=4, in_chans=1, input_hw=8), teacher, {}, ctx)


@pytest.mark.parametrize("mode", ["views", "sampled"])
def test_cached_and_uncached_kd_give_the_same_loss(mode):
    ld = _loader()
    teacher = _teacher()
    spec = CacheSpec(mode, 2, True, views_per_image=4 if mode == "sampled" else 0)
    table = stored_view_table(40, spec)
    if mode == "sampled":
        ld.replay_views(table)
    store = ViewStore(build_view_logits(teacher, ld.images, ld.mean, ld.std, table, spec, torch.device("cpu"),
                                        batch_size=64), table, spec, 4)
    cached = ViewsTeacher(store, teacher)
    batch = next(iter(ld))
    real, fast = _kd(teacher), _kd(cached)
    _, l_real = real(batch, 0)
    _, l_fast = fast(batch, 0)
    assert torch.allclose(l_real["kd"], l_fast["kd"], rtol=2e-3, atol=1e-5)
    assert torch.equal(l_real["ce"], l_fast["ce"])
    zt = teacher(batch.images)
    assert torch.allclose(cached.logits(batch), zt, atol=2e-3 * zt.abs().max().item())
    # the view matters: the logits of another view differ, and a batch without a view runs the teacher
    if mode == "views":
        other = cached.logits(dataclasses.replace(batch, view=(batch.view + 1) % num_views(2, True)))
        assert not torch.allclose(other, zt, atol=1e-2)
    assert torch.equal(cached.logits(dataclasses.replace(batch, view=None)), teacher(batch.images))


@pytest.mark.parametrize("method,params", [("kd", {"logit_standardization": True}), ("dkd", {}), ("dist", {}),
                                           ("ctkd", {}), ("mlkd", {"randaug_ops": 1})])
def test_every_logit_method_gives_the_same_losses_from_the_cache(method, params):
    ld = _loader()
    teacher = _teacher()
    spec = CacheSpec("views", 2, True)
    table = stored_view_table(40, spec)
    cached = ViewsTeacher(ViewStore(build_view_logits(teacher, ld.images, ld.mean, ld.std, table, spec,
                                                           torch.device("cpu")), table, spec, 4), teacher)
    batch = next(iter(ld))
    ctx = MethodContext(num_classes=4, input_size=(1, 8, 8), mean=(0.5,), std=(0.25,), epochs=2, steps_per_epoch=3)
    out = []
    for t in (teacher, cached):
        torch.manual_seed(1)
        m = build_method(method, create_model("cnn_tiny", num_classes=4, in_chans=1, input_hw=8), t, params, ctx)
        torch.manual_seed(2)  # MLKD's strong view is random: the same draw for both
        out.append(m(batch, 1)[1])
    assert out[0].keys() == out[1].keys()
    for k in out[0]:
        assert torch.allclose(out[0][k], out[1][k], rtol=3e-3, atol=1e-5), k


def test_topk_storage_keeps_the_top_logits_and_serves_the_rest_at_their_mean():
    ld = _loader()
    teacher = _teacher()
    spec = CacheSpec("views", 2, True, topk=2)
    table = stored_view_table(40, spec)
    t = build_view_logits(teacher, ld.images, ld.mean, ld.std, table, spec, torch.device("cpu"))
    assert set(t) == {"topk_values", "topk_classes", "rest_mean"} and t["topk_values"].shape == (40, 50, 2)
    store = ViewStore(t, table, spec, 4)
    batch = next(iter(ld))
    z = teacher(batch.images)
    got = store.gather(batch.index, batch.view)
    top = z.topk(2, dim=1)
    assert torch.equal(got.topk(2, dim=1).indices.sort(1).values, top.indices.sort(1).values)
    rest = (z.sum(1) - top.values.sum(1)) / 2
    mask = torch.ones_like(z, dtype=torch.bool).scatter_(1, top.indices, False)
    assert torch.allclose(got[mask].view(-1, 2), rest.view(-1, 1).expand(-1, 2), atol=1e-2)
    assert storage_bytes(40, 50, 4, 2) == 40 * 50 * 10 and storage_bytes(40, 50, 4, None) == 40 * 50 * 8


def test_fingerprint_follows_weights_data_and_augmentation():
    ld = _loader()
    a, b = _teacher(seed=0), _teacher(seed=1)
    spec = CacheSpec("views", 2, True)
    fp = fingerprint(a, ld.images, ld.labels, ld.mean, ld.std, spec)
    assert fp == fingerprint(_teacher(seed=0), ld.images, ld.labels, ld.mean, ld.std, spec)
    assert fp != fingerprint(b, ld.images, ld.labels, ld.mean, ld.std, spec)
    assert fp != fingerprint(a, ld.images, ld.labels, ld.mean, ld.std, CacheSpec("views", 1, True))
    assert fp != fingerprint(a, ld.images[:-1], ld.labels[:-1], ld.mean, ld.std, spec)
    assert fp != fingerprint(a, ld.images, ld.labels, ld.mean, ld.std, CacheSpec("views", 2, True, dtype="bfloat16"))


# ------------------------------------------------------------------------------------- through the engine
@pytest.fixture
def teacher_ckpt(run_cfg, tmp_path):
    t = train(config_from_dict(run_cfg(model={"name": "cnn_small"}, train={"epochs": 3},
                                       output={"dir": str(tmp_path), "name": "t"})))
    return str(Path(t["run_dir"], "checkpoints/last.pt"))


def test_training_with_the_view_cache_is_training_with_the_teacher(run_cfg, teacher_ckpt, tmp_path):
    def kd(cache, name):
        return config_from_dict(run_cfg(method={"name": "kd"}, data={"augment": True}, train={"epochs": 2},
                                        teacher={"name": "cnn_small", "checkpoint": teacher_ckpt, "cache": cache},
                                        output={"dir": str(tmp_path / "runs"), "name": name}))

    plain = train(kd("off", "plain"))
    cached = train(kd("views", "cached"))
    files = list(cache_root().glob("*/views.pt"))
    assert len(files) == 1 and str(cache_root()).startswith(str(tmp_path.parent))  # conftest's cache folder
    stored = load_checkpoint(files[0])
    assert stored["tensors"]["logits"].shape == (1437, 9, 10)  # digits' training split; crop padding 1, no flip
    assert stored["tensors"]["logits"].dtype == torch.float16
    record = json.loads((files[0].parent / "info.json").read_text())  # the cache's record, written last
    assert record["fingerprint"] == files[0].parent.name and record["build_img_per_s"] > 0
    def rec(s):
        return [json.loads(line) for line in Path(s["run_dir"], "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rec(plain), rec(cached), strict=True):
        assert abs(a["train.loss"] - b["train.loss"]) < 2e-3 * a["train.loss"]
    assert abs(plain["last_test_acc"] - cached["last_test_acc"]) <= 1.0
    assert cached["last_test_acc"] > 30  # chance is 10%
    # another seed reuses the file; nothing is rebuilt
    mtime = files[0].stat().st_mtime_ns
    d = kd("views", "seed1").model_dump()
    d["train"]["seed"] = 1
    train(config_from_dict(d))
    assert list(cache_root().glob("*/views.pt")) == files and files[0].stat().st_mtime_ns == mtime
    # a damaged cache file (fewer views than its header says) is named in one line, never an IndexError mid-run
    stored["tensors"]["logits"] = stored["tensors"]["logits"][:, :4].clone()
    torch.save(stored, files[0])
    with pytest.raises(UserError, match=r"views.pt' is damaged .*9 views per sample\); delete its cache folder"):
        train(config_from_dict({**d, "output": {**d["output"], "name": "damaged"}}))



def test_cache_refusals_are_one_line(run_cfg, teacher_ckpt):
    base = dict(data={"augment": True}, teacher={"name": "cnn_small", "checkpoint": teacher_ckpt, "cache": "views"})
    with pytest.raises(UserError, match="method 'fitnet' needs the teacher's features.*teacher.cache=off"):
        train(config_from_dict(run_cfg(method={"name": "fitnet"}, **base)))
    big = dict(base, teacher={**base["teacher"], "cache_budget_gb": 1e-6})
    with pytest.raises(UserError, match=r"needs 259 kB, over teacher.cache_budget_gb=1e-06"):
        train(config_from_dict(run_cfg(method={"name": "kd"}, **big)))
    assert list(cache_root().glob("*/views.pt")) == []
    with pytest.raises(UserError, match="data.augment is off"):
        train(config_from_dict(run_cfg(method={"name": "kd"}, data={"augment": False},
                                       teacher={**base["teacher"], "cache": "sampled"})))
    assert config_from_dict(run_cfg(teacher={"cache": True})).teacher.cache == "views"  # older configs
    assert list(cache_root().iterdir()) == []  # a refused budget made no lock file and no folder


def test_a_killed_cache_build_leaves_no_temp_file_for_good(run_cfg, teacher_ckpt):
    cfg = run_cfg(method={"name": "kd"}, data={"augment": True},
                  teacher={"name": "cnn_small", "checkpoint": teacher_ckpt, "cache": "views"})
    train(config_from_dict(cfg))
    folder = next(cache_root().glob("*/views.pt")).parent
    (folder / "info.json").unlink()  # as if the build had been killed before its record ...
    stale = folder / ".views.pt.abc123.tmp"  # ... while writing views.pt
    stale.write_bytes(b"x" * 1000)
    train(config_from_dict({**cfg, "output": {**cfg["output"], "name": "again"}}))
    assert not stale.exists() and (folder / "info.json").is_file()


# ------------------------------------------------------------------------------------------ the lean teacher
FAMILIES = ["resnet8", "resnet8x4", "wrn_16_1", "ResNet18", "MobileNetV2", "ShuffleV1", "ShuffleV2", "vgg8",
            "cnn_small", "mobile_half"]


@pytest.mark.parametrize("name", FAMILIES)
def test_folded_teacher_gives_the_same_logits(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=10, in_chans=3, input_hw=32).eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.normal_(0, 0.2)
    lean = ModelTeacher(m, lean=True)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
    got = lean(x)
    assert got.shape == ref.shape and not got.is_inference()
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    def bns(mod):
        return sum(isinstance(q, torch.nn.BatchNorm2d) for q in mod.modules())
    if name in ("ShuffleV2", "vgg8"):  # shape-dependent Python control flow: not traceable, served unfolded
        assert not lean.folded and lean.not_folded_reason
    else:
        assert lean.folded and bns(lean.fast) < bns(m)
        if not name.startswith("wrn"):  # pre-activation blocks keep their batch norms before a conv
            assert bns(lean.fast) == 0
    assert list(lean.state_dict()) == ["model." + k for k in m.state_dict()]
    folded, why = fold_batchnorm(m)
    assert (folded is not m) == lean.folded


# ------------------------------------------------------------------------------------------- the benchmark
def test_throughput_benchmark_measures_every_variant_and_writes_its_report(tmp_path, monkeypatch):
    import aidkd.engine.precision as precision
    from aidkd.bench.throughput import (
        full_run_estimate,
        run_lean_choices,
        run_throughput,
    )

    report = tmp_path / "throughput.md"
    # a CPU with native bf16: the default precision's columns beside fp32's (on any CPU: bf16 runs, emulated)
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ["AVX512-BF16"])
    (r,) = run_throughput(rounds=3, steps=1, pairs=(("cnn_tiny", "cnn_tiny"),), num_train=128, cache_images=100,
                          report=report, log=lambda *a: None)
    med = {k: v[0] for k, v in r["img_per_s"].items()}
    assert set(med) == {"a", "b", "c", "d", "a16", "b16", "d16"} and min(med.values()) > 0
    assert r["auto"] == "bf16" and r["a16/a"][0] == pytest.approx(med["a16"] / med["a"])
    assert r["build_bf16_images"] == 100 * 162 and r["build_bf16_img_per_s"] > 0
    text = report.read_text()
    assert "At the default precision, bf16 autocast" in text and "| bf16 |" in text and "native bf16" in text
    # without it: fp32 only, and the report says why
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: [])
    (r,) = run_throughput(rounds=3, steps=1, pairs=(("cnn_tiny", "cnn_tiny"),), num_train=128, cache_images=100,
                          report=report, log=lambda *a: None)
    med = {k: v[0] for k, v in r["img_per_s"].items()}
    assert set(med) == {"a", "b", "c", "d"} and min(med.values()) > 0 and r["auto"] == "fp32"
    assert "without native bf16: fp32" in report.read_text()
    assert r["a/c"][0] == pytest.approx(med["a"] / med["c"]) and r["a/c"][1] <= r["a/c"][2]
    assert r["build_images"] == 100 * 162 and r["build_img_per_s"] > 0
    assert set(r["options"]) >= {"teacher no_grad", "teacher folded", "student channels_last"}
    text = report.read_text()
    assert "Command: `aidkd bench throughput" in text and "| cnn_tiny -> cnn_tiny | cpu |" in text
    with pytest.raises(UserError, match="at least 3 rounds"):
        run_throughput(rounds=2)
    lean = run_lean_choices(rounds=3, steps=1, pairs=(("cnn_tiny", "cnn_tiny"),), report=tmp_path / "lean.md",
                            log=lambda *a: None)["cnn_tiny -> cnn_tiny"]
    assert lean["teacher no_grad"][1][0] == 1.0 and lean["teacher folded"][0][0] > 0
    assert "| cnn_tiny -> cnn_tiny |" in (tmp_path / "lean.md").read_text()
    rows = full_run_estimate("cnn_tiny", "cnn_tiny", device="cpu", measured_epochs=1, total_epochs=240,
                             num_train=128, num_test=64, caches=("off",), log=lambda *a: None)
    assert rows[0]["estimate_s"] == pytest.approx(rows[0]["setup_s"] + 240 * rows[0]["epoch_s"])


def test_throughput_command_refuses_bad_options_in_one_line(capsys):
    from aidkd.cli import main

    assert main(["bench", "throughput", "--rounds", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rounds 2" in err[0]
    if not torch.cuda.is_available():
        assert main(["bench", "throughput", "--full-run", "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_pipeline_reports_the_adaptation_as_a_fraction_of_a_distillation():
    from aidkd.aid.pipeline import pipeline_config_from_dict
    from aidkd.aid.pipeline.results import adaptation_cost
    from aidkd.stages import StageResult

    cfg = pipeline_config_from_dict({"base": {"data": {"name": "digits"}}, "teacher": {"name": "cnn_small"},
                                     "student": {"name": "cnn_tiny"}, "seeds": [0, 1],
                                     "methods": [{"name": "kd"}, {"name": "dkd"}]})
    def st(n, t):
        return StageResult(n, "train", None, "ran", "f", {}, t)
    stages = {"adapt": st("adapt", 6.0), "aid-kd-s0": st("aid-kd-s0", 50.0), "aid-kd-s1": st("aid-kd-s1", 70.0),
              "aid-dkd-s0": st("aid-dkd-s0", 60.0), "aid-dkd-s1": st("aid-dkd-s1", 60.0), "kd-s0": st("kd-s0", 999.0)}
    c = adaptation_cost(cfg, stages, {"fit_time_s": 4.0})
    # the distillations are the first KD method's (the mean over seeds); no S_p and no TAKD stage: no totals
    assert (c["method"], c["adapt_s"], c["distill_s"], c["fit_s"]) == ("kd", 6.0, 60.0, 4.0)
    assert c["fraction"] == pytest.approx(0.1) and c["aid_own_s"] == 66.0 and c["kd_s"] == 999.0
    assert c["aid_own_over_kd"] == pytest.approx(66.0 / 999.0)
    assert c["aid_total_s"] is None and c["takd_s"] is None and c["aid_total_over_takd"] is None
    c = adaptation_cost(cfg, {**stages, "reference": st("reference", 30.0)})
    assert c["aid_total_s"] == 96.0 and c["fit_s"] is None
    assert adaptation_cost(cfg, {"aid-kd-s0": st("aid-kd-s0", 50.0)})["fraction"] is None


class _SlowCountingTeacher(torch.nn.Module):
    """A teacher whose every forward takes a while and leaves a line in ``log``: builds that overlap in time."""

    def __init__(self, log: Path):
        super().__init__()
        self.inner, self.log = _teacher(), log

    def forward(self, x):
        import time

        with open(self.log, "a") as f:
            f.write("forward\n")
        time.sleep(0.3)
        return self.inner(x)


def _build_in_process(log: Path, root: Path, out) -> None:
    torch.set_num_threads(1)  # as DataLoader workers do: a forked child must not reuse the parent's thread pool
    t = _SlowCountingTeacher(log)
    path, status = cached_views(t, t.inner, _loader(), CacheSpec("views", 1, False), 4, torch.device("cpu"),
                                root=root, log=lambda *a: None)
    out.put((status, str(path)))


def test_two_processes_that_need_one_cache_build_it_once(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    out = ctx.Queue()
    log = tmp_path / "forwards.txt"
    procs = [ctx.Process(target=_build_in_process, args=(log, tmp_path / "cache", out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = sorted(out.get(timeout=5) for _ in procs)
    assert [s for s, _ in results] == ["built", "found"] and results[0][1] == results[1][1]
    # one build: 40 images x 9 views in batches of 64 (the CPU build's) is 6 teacher forwards, not 12
    assert log.read_text().count("forward") == 6
