"""The data layer: real on-disk formats (written here, or the installed Fashion-MNIST), splits, sharding,
balanced batches, augmentation and determinism."""
from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from aidkd.config import DataConfig
from aidkd.data import (
    DATASETS, TensorAugment, TensorLoader, build_data, class_balanced_batches, denormalize, normalize,
    random_crop, random_flip, stratified_split, stratified_subset, to_float_normalized,
)
from aidkd.data import cifar as cifar_mod
from aidkd.data import fashion_mnist as fmnist_mod
from aidkd.errors import UserError


def cfg(**kw) -> DataConfig:
    kw.setdefault("download", False)
    kw.setdefault("workers", 0)
    return DataConfig(**kw)


def all_batches(loader, epoch=0):
    loader.set_epoch(epoch)
    return list(loader)


def test_registry_lists_every_dataset():
    assert set(DATASETS.names()) >= {"digits", "fashion_mnist", "cifar10", "cifar100", "imagenet", "imagefolder",
                                      "tiny_imagenet", "synthetic"}
    with pytest.raises(UserError, match="unknown dataset 'nope'.*cifar100"):
        build_data(cfg(name="nope"))


# ------------------------------------------------------------------------------------------------ Fashion-MNIST
FMNIST_DIR = fmnist_mod.SYSTEM_DIR


@pytest.mark.skipif(fmnist_mod.find_files(FMNIST_DIR) is None, reason="Fashion-MNIST idx files not installed")
def test_fashion_mnist_reads_the_installed_idx_files(tmp_path, monkeypatch):
    monkeypatch.setenv("AIDKD_DATA", str(tmp_path))  # nothing there: the system copy is found (no data.root given)
    data = build_data(cfg(name="fashion_mnist", batch_size=500, eval_batch_size=1000))
    s = data.spec
    assert (s.num_train, s.num_test, s.num_classes, s.input_size) == (60000, 10000, 10, (1, 28, 28))
    assert s.classes[0] == "T-shirt/top" and s.classes[9] == "Ankle boot"
    tr, te = data.train, data.test
    assert torch.equal(tr.labels.bincount(), torch.full((10,), 6000))
    assert torch.equal(te.labels.bincount(), torch.full((10,), 1000))
    raw = tr.images.float() / 255
    assert abs(raw.mean().item() - 0.286) < 0.005 and abs(raw.std().item() - 0.353) < 0.005
    assert tr.images.amax().item() == 255 and tr.images.amin().item() == 0
    # the test split, normalised, is roughly standardised
    x = torch.cat([b.images for b in te])
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    b = next(iter(tr))
    assert b.images.shape == (500, 1, 28, 28) and b.labels.dtype == torch.long and b.index.max() < 60000
    assert len(tr) == 120 and len(te) == 10


def test_an_explicit_fashion_mnist_root_is_not_replaced_by_the_system_copy(tmp_path):
    with pytest.raises(UserError, match="files not found in") as e:
        build_data(cfg(name="fashion_mnist", root=str(tmp_path), download=False))
    assert "/usr/share" not in str(e.value)


def test_fashion_mnist_gz_and_raw_idx_in_torchvision_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist_mod, "SYSTEM_DIR", tmp_path / "nowhere")
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def write_idx(name, arr, gz):
        header = (0x0800 | arr.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        data = header + arr.astype(np.uint8).tobytes()
        if gz:
            import gzip

            with gzip.open(raw / (name + ".gz"), "wb") as f:
                f.write(data)
        else:
            (raw / name).write_bytes(data)

    xtr, ytr = rng.integers(0, 256, (30, 28, 28)), np.arange(30) % 10
    xte, yte = rng.integers(0, 256, (10, 28, 28)), np.arange(10)
    write_idx("train-images-idx3-ubyte", xtr, True)
    write_idx("train-labels-idx1-ubyte", ytr, False)
    write_idx("t10k-images-idx3-ubyte", xte, False)
    write_idx("t10k-labels-idx1-ubyte", yte, True)
    data = build_data(cfg(name="fashion_mnist", root=str(tmp_path)))
    assert torch.equal(data.train.images[:, 0], torch.from_numpy(xtr.astype(np.uint8)))
    assert torch.equal(data.test.labels, torch.from_numpy(yte))


def test_fashion_mnist_missing_names_directory_and_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist_mod, "SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(UserError) as e:
        build_data(cfg(name="fashion_mnist", root=str(tmp_path)))
    msg = str(e.value)
    assert str(tmp_path) in msg and "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "\n" not in msg


# ------------------------------------------------------------------------------------------------ CIFAR
def _cifar_arrays(n, num_classes, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, num_classes, n)]


def write_cifar100(root: Path, n_train=20, n_test=10):
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    out = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        data, fine = _cifar_arrays(n, 100, seed)
        coarse = [f // 5 for f in fine]
        rec = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{split} batch",
               "fine_labels": fine, "coarse_labels": coarse, "data": data}
        with open(d / split, "wb") as f:
            pickle.dump(rec, f, protocol=2)
        out[split] = (data, fine, coarse)
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]}
    with open(d / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return out


def test_cifar100_reads_the_pickle_layout_with_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    data = build_data(cfg(name="cifar100", root=str(tmp_path), batch_size=4, augment=False))
    s = data.spec
    assert (s.num_classes, s.input_size, s.num_train, s.num_test) == (100, (3, 32, 32), 20, 10)
    assert s.mean == (0.5071, 0.4867, 0.4408) and s.classes[7] == "fine7"
    x, fine, coarse = written["train"]
    assert torch.equal(data.train.images, torch.from_numpy(x).view(-1, 3, 32, 32))
    assert data.train.labels.tolist() == fine and fine != coarse  # fine, not coarse, labels
    # row layout: the first 1024 bytes are the red plane
    assert torch.equal(data.train.images[3, 0].flatten(), torch.from_numpy(x[3, :1024]))
    te = torch.cat([b.images for b in data.test])
    ref = normalize(torch.from_numpy(written["test"][0]).view(-1, 3, 32, 32).float() / 255, s.mean, s.std)
    assert torch.allclose(te, ref, atol=1e-5)


def test_cifar10_reads_five_batches_and_bytes_keys(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    xs, ys = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = _cifar_arrays(6, 10, 10 + i)
        # keys as bytes: how the Python-2 pickles load with encoding="bytes"
        with open(d / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * 6}, f, protocol=2)
        xs.append(data)
        ys.append(labels)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_vis": 3072, "num_cases_per_batch": 10000}, f, protocol=2)
    data = build_data(cfg(name="cifar10", root=str(tmp_path), batch_size=8))
    s = data.spec
    assert (s.num_classes, s.num_train, s.num_test, s.classes[-1]) == (10, 30, 6, "truck")
    assert s.mean == (0.4914, 0.4822, 0.4465)
    assert torch.equal(data.train.images, torch.from_numpy(np.concatenate(xs[:5])).view(-1, 3, 32, 32))
    assert data.train.labels.tolist() == sum(ys[:5], [])
    assert data.test.labels.tolist() == ys[5]


def test_cifar_offline_error_names_directory_and_expected_files(tmp_path, monkeypatch):
    with pytest.raises(UserError) as e:
        build_data(cfg(name="cifar100", root=str(tmp_path)))
    msg = str(e.value)
    assert str(tmp_path) in msg and "cifar-100-python/{train,test,meta}" in msg and "\n" not in msg

    def offline(name, root):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(cifar_mod, "download", offline)
    with pytest.raises(UserError) as e:
        build_data(cfg(name="cifar10", root=str(tmp_path), download=True))
    msg = str(e.value)
    assert str(tmp_path) in msg and "cifar-10-batches-py" in msg and "data_batch_1" in msg and "test_batch" in msg
    assert "download failed" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------------------ file datasets
def _png(path: Path, value: int, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def test_imagefolder_tree_of_pngs(tmp_path):
    classes = ["cat", "dog", "eel"]
    for ci, c in enumerate(classes):
        for i in range(4):
            _png(tmp_path / "train" / c / f"{i}.png", 40 * ci + 10)
        for i in range(2):
            _png(tmp_path / "val" / c / f"{i}.png", 40 * ci + 10)
    data = build_data(cfg(name="imagefolder", root=str(tmp_path), batch_size=4, eval_batch_size=6, val_split=0.25))
    s = data.spec
    assert (s.num_classes, s.classes, s.input_size) == (3, classes, (3, 224, 224))
    assert (s.num_train, s.num_val, s.num_test) == (9, 3, 6)
    assert sorted(data.val.labels.tolist()) == [0, 1, 2]  # stratified
    batches = all_batches(data.train)
    assert len(batches) == len(data.train) == 3
    assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(9))
    b = batches[0]
    assert b.images.shape == (4, 3, 224, 224) and b.images.dtype == torch.float32
    te = list(data.test)
    assert [t.labels.tolist() for t in te] == [[0, 0, 1, 1, 2, 2]]
    # each image is one flat colour: its class's value, normalised with the ImageNet statistics
    px = denormalize(te[0].images, s.mean, s.std)[:, 0, 112, 112] * 255
    assert torch.allclose(px, torch.tensor([10.0, 10, 50, 50, 90, 90]), atol=1)


def test_imagefolder_missing_layout_error(tmp_path):
    with pytest.raises(UserError, match=r"train/<class>/\*\.jpg and val/<class>/\*\.jpg") as e:
        build_data(cfg(name="imagefolder", root=str(tmp_path)))
    assert str(tmp_path) in str(e.value)
    with pytest.raises(UserError, match="imagenet.*train/<class>"):
        build_data(cfg(name="imagenet", root=str(tmp_path)))


def write_tiny_imagenet(root: Path) -> list[str]:
    d = root / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # sorted order defines labels: n01 -> 0, n02 -> 1, n03 -> 2
    (d / "wnids.txt").parent.mkdir(parents=True)
    (d / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (d / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tsalamander\nn03\tbullfrog\n")
    value = {"n01": 20, "n02": 120, "n03": 220}
    for w in wnids:
        for i in range(4):
            _png(d / "train" / w / "images" / f"{w}_{i}.JPEG", value[w], size=(64, 64))
    lines = []
    for i, w in enumerate(["n03", "n01", "n02", "n01", "n03", "n02"]):
        _png(d / "val" / "images" / f"val_{i}.JPEG", value[w], size=(64, 64))
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (d / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return wnids


@pytest.mark.parametrize("in_memory", ["auto", "on"])
def test_tiny_imagenet_layout(tmp_path, in_memory):
    write_tiny_imagenet(tmp_path)
    data = build_data(cfg(name="tiny_imagenet", root=str(tmp_path), batch_size=4, eval_batch_size=6,
                          in_memory=in_memory))
    s = data.spec
    assert (s.num_classes, s.input_size, s.num_train, s.num_test) == (3, (3, 64, 64), 12, 6)
    assert s.classes == ["goldfish", "salamander", "bullfrog"]
    assert isinstance(data.train, TensorLoader) == (in_memory == "on")
    (te,) = list(data.test)
    assert te.labels.tolist() == [2, 0, 1, 0, 2, 1]
    px = denormalize(te.images, s.mean, s.std)[:, :, 32, 32].mean(1) * 255
    assert torch.allclose(px, torch.tensor([220.0, 20, 120, 20, 220, 120]), atol=3)
    b = next(iter(data.train))
    assert b.images.shape == (4, 3, 64, 64)


# ------------------------------------------------------------------------------------------------ small datasets
def test_digits_and_synthetic_shapes():
    d = build_data(cfg(name="digits", batch_size=100))
    assert (d.spec.num_classes, d.spec.input_size, d.spec.num_train, d.spec.num_test) == (10, (1, 8, 8), 1437, 360)
    assert d.val is None and d.test.labels.bincount().min() >= 35  # stratified test split
    b = next(iter(d.train))
    assert b.images.shape == (100, 1, 8, 8) and b.labels.shape == (100,) and b.index.dtype == torch.long
    s = build_data(cfg(name="synthetic")).spec
    assert (s.num_classes, s.input_size, s.num_train, s.num_test) == (10, (3, 32, 32), 1024, 256)
    assert torch.equal(build_data(cfg(name="synthetic")).train.images, build_data(cfg(name="synthetic")).train.images)


def test_val_split_is_stratified_disjoint_and_independent_of_the_run_seed():
    a = build_data(cfg(name="digits", val_split=0.2), seed=0)
    b = build_data(cfg(name="digits", val_split=0.2), seed=7)
    assert (a.spec.num_train, a.spec.num_val) == (1437 - 287, 287)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.images, b.train.images)
    full = build_data(cfg(name="digits"))
    keep, held = stratified_split(full.train.labels, 0.2)
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == 1437
    assert torch.equal(full.train.images[torch.from_numpy(held)], a.val.images)
    assert torch.equal(full.train.images[torch.from_numpy(keep)], a.train.images)
    counts, vcounts = full.train.labels.bincount(), a.val.labels.bincount()
    assert ((vcounts.double() - 0.2 * counts.double()).abs() <= 1).all()
    # the val loader is not augmented and not shuffled
    v = torch.cat([x.images for x in all_batches(a.val, 3)])
    assert torch.equal(v, to_float_normalized(a.val.images, a.spec.mean, a.spec.std))


def test_train_subset_is_stratified_first_n():
    d = build_data(cfg(name="digits", train_subset=100))
    assert d.spec.num_train == 100 and d.train.labels.bincount().tolist() == [10] * 10
    full = build_data(cfg(name="digits"))
    pos = stratified_subset(full.train.labels, 100)
    assert torch.equal(d.train.images, full.train.images[torch.from_numpy(pos)])
    assert pos[:3].tolist() == sorted(pos[:3].tolist()) and pos.max() < 200  # the first samples of each class


# ------------------------------------------------------------------------------------------------ sharding
def _loader(n, batch, rank=0, world=1, seed=5, train=True, augment=None, balanced=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 7
    return TensorLoader(x, y, batch_size=batch, mean=(0.5,), std=(0.25,), train=train, augment=augment, seed=seed,
                        rank=rank, world_size=world, balanced=balanced)


@pytest.mark.parametrize("n", [96, 103])
@pytest.mark.parametrize("world", [2, 4])
def test_sharding_union_equals_the_single_process_batch(n, world):
    B = 16
    single = _loader(n, B)
    ranks = [_loader(n, B // world, r, world) for r in range(world)]
    for epoch in (0, 3):
        one = [b.index for b in all_batches(single, epoch)]
        many = [all_batches(r, epoch) for r in ranks]
        assert all(len(m) == len(one) == len(single) for m in many)
        for s, ref in enumerate(one):
            union = torch.cat([m[s].index for m in many])
            if s < len(one) - 1 or n % world == 0:
                assert sorted(union.tolist()) == sorted(ref.tolist())
            else:  # the last step adds DistributedSampler's padding: repeats of the epoch's first samples
                extra = Counter(union.tolist()) - Counter(ref.tolist())
                assert sum(extra.values()) == world - n % world
                assert set(extra) <= set(one[0].tolist())
                assert not Counter(ref.tolist()) - Counter(union.tolist())
        # exactly DistributedSampler's order
        for r, rl in enumerate(ranks):
            ds = DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=True, seed=5)
            ds.set_epoch(epoch)
            assert torch.cat([b.index for b in all_batches(rl, epoch)]).tolist() == list(ds)


def test_batches_hold_the_indexed_samples_and_eval_shards_partition():
    tl = _loader(50, 8, rank=1, world=3)
    for b in tl:
        assert torch.equal(b.images, to_float_normalized(tl.images[b.index], (0.5,), (0.25,)))
        assert torch.equal(b.labels, tl.labels[b.index])
    shards = [_loader(50, 8, r, 3, train=False) for r in range(3)]
    seen = torch.cat([b.index for s in shards for b in s])
    assert sorted(seen.tolist()) == list(range(50))
    assert sum(s.num_samples for s in shards) == 50 and [len(s) for s in shards] == [3, 3, 2]


def test_global_batch_must_divide_over_processes():
    with pytest.raises(UserError, match="divisible"):
        build_data(cfg(name="synthetic", batch_size=30), world_size=4)
    d = build_data(cfg(name="synthetic", batch_size=32, eval_batch_size=100), rank=1, world_size=4)
    assert d.train.batch_size == 8 and d.test.batch_size == 25 and len(d.train) == 32


# ------------------------------------------------------------------------------------------------ balanced
def test_class_balanced_batches():
    labels = torch.tensor([0] * 30 + [1] * 17 + [2] * 9 + [3] * 2 + [4] * 25)
    g = torch.Generator().manual_seed(0)
    P, K = 3, 4
    batches = class_balanced_batches(labels, P, K, g)
    seen = set()
    for b in batches:
        assert b.shape == (P * K,)
        blocks = labels[b].view(P, K)
        assert (blocks == blocks[:, :1]).all() and len(set(blocks[:, 0].tolist())) == P
        seen |= set(b.tolist())
    assert seen == set(range(len(labels)))  # every sample at least once per epoch
    chunks = sum(-(-n // K) for n in labels.bincount().tolist())
    assert len(batches) == -(-chunks // P)  # one epoch, tightly packed
    with pytest.raises(UserError):
        class_balanced_batches(labels, 6, 2, g)


def test_balanced_loader_from_config_and_its_shards():
    d = build_data(cfg(name="digits", balanced=[5, 4]))
    assert d.train.batch_size == 20 and len(d.train) >= 1437 // 20
    for b in all_batches(d.train, 2)[:10]:
        c = Counter(b.labels.tolist())
        assert len(c) == 5 and set(c.values()) == {4}
    halves = [build_data(cfg(name="digits", balanced=[5, 4]), rank=r, world_size=2).train for r in range(2)]
    one, two = all_batches(d.train, 1), [all_batches(h, 1) for h in halves]
    assert len(two[0]) == len(one)
    for s in (0, len(one) - 1):
        assert torch.equal(torch.cat([two[0][s].index, two[1][s].index]), one[s].index)


# ------------------------------------------------------------------------------------------------ augmentation
def test_augmentation_keeps_shape_dtype_and_changes_images():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 12, 12), dtype=torch.uint8, generator=g)
    aug = TensorAugment(crop_pad=2, flip=True)
    y = aug(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert (y != x).flatten(1).any(1).float().mean() > 0.8
    # every output is a flip of a zero-padded shift of its input
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(64):
        views = [xp[i, :, a : a + 12, b : b + 12] for a in range(5) for b in range(5)]
        assert any(torch.equal(y[i], v) or torch.equal(y[i], v.flip(-1)) for v in views)
    f = random_crop(x.float() / 255, 3, torch.Generator().manual_seed(2), fill=0.5)
    assert f.dtype == torch.float32 and f.shape == x.shape and (f == 0.5).any()
    assert torch.equal(random_crop(x, 0), x)
    fl = random_flip(x, torch.Generator().manual_seed(3))
    assert all(torch.equal(fl[i], x[i]) or torch.equal(fl[i], x[i].flip(-1)) for i in range(64))


def test_loader_augments_training_batches_only():
    aug = build_data(cfg(name="synthetic", batch_size=64))
    plain = build_data(cfg(name="synthetic", batch_size=64, augment=False))
    a, p = next(iter(aug.train)), next(iter(plain.train))
    assert torch.equal(a.index, p.index) and torch.equal(a.labels, p.labels)
    assert a.images.shape == p.images.shape and not torch.equal(a.images, p.images)
    assert torch.equal(next(iter(aug.test)).images, next(iter(plain.test)).images)


def test_normalize_roundtrip():
    x = torch.rand(4, 3, 5, 5)
    mean, std = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
    assert torch.allclose(denormalize(normalize(x, mean, std), mean, std), x, atol=1e-6)
    u = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    assert torch.allclose(to_float_normalized(u, mean, std), normalize(u.float() / 255, mean, std), atol=1e-5)


# ------------------------------------------------------------------------------------------------ determinism
def _epoch(data, epoch):
    bs = all_batches(data.train, epoch)
    return torch.cat([b.images for b in bs]), torch.cat([b.index for b in bs])


def test_same_seed_and_epoch_give_the_same_batches():
    a = build_data(cfg(name="synthetic", batch_size=32), seed=3)
    b = build_data(cfg(name="synthetic", batch_size=32), seed=3)
    xa, ia = _epoch(a, 2)
    xb, ib = _epoch(b, 2)
    assert torch.equal(ia, ib) and torch.equal(xa, xb)
    x0, i0 = _epoch(a, 0)
    assert not torch.equal(i0, ia)  # a new order each epoch
    xa2, ia2 = _epoch(a, 2)
    assert torch.equal(ia2, ia) and torch.equal(xa2, xa)  # re-iterating an epoch repeats it
    c = build_data(cfg(name="synthetic", batch_size=32), seed=4)
    assert not torch.equal(_epoch(c, 1)[1], _epoch(a, 2)[1])  # seeds do not share shifted epoch orders


def test_in_memory_off_keeps_data_on_the_host_with_the_same_batches(tmp_path):
    on = build_data(cfg(name="digits", in_memory="on"), seed=1)
    off = build_data(cfg(name="digits", in_memory="off"), seed=1)
    assert off.train.images.device.type == "cpu"
    xa, ia = _epoch(on, 1)
    xb, ib = _epoch(off, 1)
    assert torch.equal(ia, ib) and torch.equal(xa, xb)
    for split in ("train", "val"):
        _png(tmp_path / split / "a" / "0.png", 0)
    with pytest.raises(UserError, match="in_memory=on"):
        build_data(cfg(name="imagefolder", root=str(tmp_path), in_memory="on"))
