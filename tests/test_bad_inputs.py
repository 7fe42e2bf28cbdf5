"""The bad-input catalogue: every row is something a careless or hostile user can type or point aidkd at.

Each row runs the CLI in-process (``aidkd.cli.main``) inside a sandbox folder prepared once (configs, a finished
run, an unfinished run, a folder of user data, damaged and crafted datasets and checkpoints) and asserts: exit code
2, exactly one stderr line that names the key or file at fault, no traceback, and a byte-identical sandbox (every
path and the sha256 of every file) before and after. Rows that need a real process are at the end.
"""
import hashlib
import gzip
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from aidkd.cli import main
from aidkd.config import config_from_dict
from aidkd.engine import train
from aidkd.files import rundir

BASE = {
    "data": {"name": "digits", "batch_size": 64, "augment": False, "workers": 0},
    "model": {"name": "cnn_tiny"},
    "method": {"name": "vanilla"},
    "optim": {"lr": 0.05},
    "sched": {"name": "cosine"},
    "train": {"epochs": 1, "seed": 0, "device": "cpu", "progress": False, "tensorboard": False},
    "output": {"dir": "runs"},
}


class _Stop(Exception):
    pass


class _Harmless:
    """Pickles to a call of ``os.getcwd``: a global no weights-only or CIFAR reader may accept (harmless if run)."""

    def __reduce__(self):
        return (os.getcwd, ())


def _cifar_dir(root: Path, mutate=None) -> None:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rec = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        blob = pickle.dumps(rec, protocol=2)
        if mutate and name == "data_batch_1":
            blob = mutate(rec)
        (d / name).write_bytes(blob)


def _idx(arr: np.ndarray) -> bytes:
    head = (0x0800 | arr.ndim).to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _fmnist_dir(root: Path, broken: str, content: bytes) -> None:
    root.mkdir(parents=True)
    files = {"train-images-idx3-ubyte": _idx(np.zeros((20, 28, 28))), "train-labels-idx1-ubyte": _idx(np.zeros(20)),
             "t10k-images-idx3-ubyte": _idx(np.zeros((10, 28, 28))), "t10k-labels-idx1-ubyte": _idx(np.zeros(10))}
    files[broken] = content
    for name, blob in files.items():
        (root / name).write_bytes(blob)


def _png(path: Path, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


def _imagefolder(root: Path, broken: bool) -> None:
    for split in ("train", "val"):
        for c in ("a", "b"):
            for i in range(2):
                _png(root / split / c / f"{i}.png", hash((split, c, i)) % 1000)
    if broken:
        (root / "train" / "a" / "broken.png").write_bytes(b"this is not a PNG")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The sandbox's contents, built once."""
    t = tmp_path_factory.mktemp("template")
    cwd = os.getcwd()
    os.chdir(t)
    try:
        (t / "base.yaml").write_text(yaml.safe_dump(BASE))
        (t / "empty.yaml").write_text("")
        (t / "bad.yaml").write_text("model:\n  name: [resnet8,\n")
        (t / "list.yaml").write_text("- model\n- data\n")
        (t / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01" * 16)
        (t / "nanlr.yaml").write_text(yaml.safe_dump({**BASE, "optim": {"lr": float("nan")}}))
        bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        for prev, cur in zip("abcdefgh", "bcdefghi"):
            bomb += f"{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        (t / "bomb.yaml").write_text(bomb)
        (t / "big.yaml").write_text("model:\n  name: cnn_tiny\n" + "# padding\n" * 120_000)
        (t / "afile.txt").write_text("a user's file\n")
        (t / "mydata").mkdir()
        (t / "mydata" / "notes.txt").write_text("precious\n")
        (t / "mydata" / "checkpoints").mkdir()
        (t / "empty").mkdir()

        base = config_from_dict({**BASE, "output": {"dir": "runs", "name": "done"}})
        train(base)
        ck = t / "runs/done/checkpoints/best.pt"
        shutil.copy(ck, t / "ck.pt")

        def stop(epoch, record):
            raise _Stop

        with pytest.raises(_Stop):
            train(config_from_dict({**BASE, "train": {**BASE["train"], "epochs": 3},
                                    "output": {"dir": "runs", "name": "unfinished"}}), on_epoch_end=stop)
        shutil.copytree(t / "runs/unfinished", t / "runs/ws2")
        last = torch.load(t / "runs/ws2/checkpoints/last.pt", weights_only=True)
        torch.save({**last, "world_size": 2}, t / "runs/ws2/checkpoints/last.pt")
        shutil.copytree(t / "runs/unfinished", t / "runs/corruptcfg")
        (t / "runs/corruptcfg/config.yaml").write_text("model: [\n")
        (t / "runs/link").symlink_to(t / "mydata")
        (t / "garbage.pt").write_bytes(b"definitely not a checkpoint")
        torch.save({"model": _Harmless()}, t / "evil.pt")
        shutil.copytree(t / "runs/unfinished", t / "runs/evilrun")
        shutil.copy(t / "evil.pt", t / "runs/evilrun/checkpoints/last.pt")

        _cifar_dir(t / "cifar_ok")
        _cifar_dir(t / "cifar_unsafe", lambda rec: pickle.dumps({**rec, "x": _Harmless()}, protocol=2))
        _cifar_dir(t / "cifar_garbage", lambda rec: b"\x80\x02garbage that is not a pickle")
        _cifar_dir(t / "cifar_keys", lambda rec: pickle.dumps({"pixels": rec["data"]}, protocol=2))
        _cifar_dir(t / "cifar_shape", lambda rec: pickle.dumps({**rec, "data": rec["data"][:, :100]}, protocol=2))
        _cifar_dir(t / "cifar_labels", lambda rec: pickle.dumps({**rec, "labels": [0, 1, 2, 99]}, protocol=2))
        _cifar_dir(t / "cifar_list", lambda rec: pickle.dumps([1, 2, 3], protocol=2))
        _cifar_dir(t / "cifar_i8", lambda rec: pickle.dumps({**rec, "data": rec["data"].astype(np.int64)}, protocol=2))

        _fmnist_dir(t / "fm_trunc", "train-images-idx3-ubyte", _idx(np.zeros((20, 28, 28)))[:-100])
        _fmnist_dir(t / "fm_magic", "train-labels-idx1-ubyte", b"\x00\x00\x0d\x01" + b"\x00" * 24)
        _fmnist_dir(t / "fm_header", "t10k-labels-idx1-ubyte", b"\x00\x00\x08\xff\x00\x00")
        _fmnist_dir(t / "fm_count", "t10k-labels-idx1-ubyte", _idx(np.zeros(7)))
        _fmnist_dir(t / "fm_size", "train-images-idx3-ubyte", _idx(np.zeros((20, 14, 14))))
        _fmnist_dir(t / "fm_gz", "train-images-idx3-ubyte", b"")
        (t / "fm_gz" / "train-images-idx3-ubyte").unlink()
        (t / "fm_gz" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
        _fmnist_dir(t / "fm_label", "train-labels-idx1-ubyte", _idx(np.full(20, 12)))
        _ = gzip  # (the real files may be gzipped; the corrupt .gz above covers that reader)

        _imagefolder(t / "imgf_broken", broken=True)
        _imagefolder(t / "imgf_noval", broken=False)
        shutil.rmtree(t / "imgf_noval" / "val")
        (t / "tiny" / "tiny-imagenet-200" / "train").mkdir(parents=True)
        (t / "tiny" / "tiny-imagenet-200" / "val").mkdir()
        (t / "tiny" / "tiny-imagenet-200" / "val" / "val_annotations.txt").write_bytes(b"\xff\xfe\x00bad")
        (t / "tiny" / "tiny-imagenet-200" / "wnids.txt").write_bytes(b"\xff\xfe\x00\x00")
        # folders and files a user made, named like aidkd's outputs (aidkd owns only what it marked)
        (t / "runs/myconf").mkdir()
        (t / "runs/myconf/config.yaml").write_text("# my notes\n" + yaml.safe_dump(BASE))
        (t / "runs/pre/checkpoints").mkdir(parents=True)
        shutil.copy(t / "ck.pt", t / "runs/pre/checkpoints/pretrained.pt")
        (t / "runs/res").mkdir()
        (t / "runs/res/results.md").write_text("my results\n")
        (t / "runs/res/report.json").write_text("{}\n")
        (t / "resdir").mkdir()
        (t / "resdir/results.md").write_text("my results\n")
        (t / "pngs").mkdir()
        (t / "pngs/components.png").write_bytes(b"my figure")
        (t / "notes.json").write_text('{"mine": 1}\n')
        (t / "dir.safetensors").mkdir()
        (t / "nul.yaml").write_bytes(b"\x00" * 64)
        (t / "pipe_bad.yaml").write_text("base:\n  model:\n    name: cnn_tiny\nnot_a_key: 1\n")
        (t / "pipe_dup.yaml").write_text("teacher:\n  name: cnn_small\n  name: cnn_large\nstudent:\n  name: cnn_tiny\n")
        pipe = "teacher:\n  name: cnn_small\n  checkpoint: {t}\nstudent:\n  name: cnn_tiny\naid:\n  reference: {r}\n"
        (t / "pipe_missing_teacher.yaml").write_text(pipe.format(t="gone.pt", r="distilled"))
        (t / "pipe_garbage_teacher.yaml").write_text(pipe.format(t="garbage.pt", r="distilled"))
        (t / "pipe_evil_reference.yaml").write_text(pipe.format(t="ck.pt", r="evil.pt"))
    finally:
        os.chdir(cwd)
    return t


def listing(root: Path) -> dict:
    """Every path under ``root`` with the sha256 of each file (links by target, folders as such)."""
    out = {}
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


T = ["train", "--config", "base.yaml"]
KD = [*T, "method.name=kd", "teacher.name=cnn_tiny", "teacher.checkpoint=ck.pt"]
CIFAR = ["data.name=cifar10", "data.download=false"]
FM = ["data.name=fashion_mnist", "data.download=false"]

#: (id, argv, what the one line must name, extra environment)
ROWS = [
    # --- the config file and the command line
    ("missing_config", ["train", "--config", "nope.yaml"], "nope.yaml", None),
    ("empty_yaml", ["train", "--config", "empty.yaml"], "model.name", None),
    ("bare_train", ["train"], "model.name", None),
    ("bare_distill", ["distill"], "model.name", None),
    ("yaml_syntax_line_col", ["train", "--config", "bad.yaml"], "line 3 column 1", None),
    ("yaml_not_mapping", ["train", "--config", "list.yaml"], "list.yaml", None),
    ("yaml_alias_bomb", ["train", "--config", "bomb.yaml"], "bomb.yaml", None),
    ("yaml_too_large", ["train", "--config", "big.yaml"], "big.yaml", None),
    ("yaml_not_text", ["train", "--config", "binary.yaml"], "binary.yaml", None),
    ("yaml_nan_value", ["train", "--config", "nanlr.yaml"], "optim.lr", None),
    ("override_bomb", [*T, "meta.x=[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
                       "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
                       "[*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]]"], "override", None),
    ("unknown_key_did_you_mean", [*T, "optim.lrr=1"], "did you mean 'lr'", None),
    ("unknown_section", [*T, "optimizer.lr=1"], "optimizer", None),
    ("override_without_equals", [*T, "optim.lr"], "optim.lr", None),
    ("override_value_as_section", [*T, "optim.lr.x=1"], "optim.lr", None),
    ("lr_negative", [*T, "optim.lr=-1"], "optim.lr", None),
    ("lr_inf", [*T, "optim.lr=.inf"], "optim.lr", None),
    ("lr_nan", [*T, "optim.lr=.nan"], "optim.lr", None),
    ("lr_overflow", [*T, "optim.lr=1e400"], "optim.lr", None),
    ("method_param_inf", [*T, "method.params.tau=-.inf"], "method.params.tau", None),
    ("meta_nan", [*T, "meta.paper=.nan"], "meta.paper", None),
    ("momentum_range", [*T, "optim.momentum=1.5"], "optim.momentum", None),
    ("weight_decay_negative", [*T, "optim.weight_decay=-0.1"], "optim.weight_decay", None),
    ("betas_short", [*T, "optim.betas=[0.9]"], "optim.betas", None),
    ("seed_2_63", [*T, "train.seed=9223372036854775808"], "train.seed", None),
    ("seed_negative", [*T, "train.seed=-1"], "train.seed", None),
    ("epochs_zero", [*T, "train.epochs=0"], "train.epochs", None),
    ("batch_zero", [*T, "data.batch_size=0"], "data.batch_size", None),
    ("val_split_one", [*T, "data.val_split=1.0"], "data.val_split", None),
    ("amp_unknown", [*T, "train.amp=fp8"], "train.amp", None),
    ("device_unknown", [*T, "train.device=tpu"], "train.device", None),
    ("sched_unknown", [*T, "sched.name=poly"], "sched.name", None),
    ("optim_unknown", [*T, "optim.name=lion"], "optim.name", None),
    ("in_memory_unknown", [*T, "data.in_memory=maybe"], "data.in_memory", None),
    ("balanced_short", [*T, "data.balanced=[3]"], "data.balanced", None),
    ("log_every_zero", [*T, "train.log_every=0"], "train.log_every", None),
    ("on_nonfinite_unknown", [*T, "train.on_nonfinite=ignore"], "train.on_nonfinite", None),
    ("dist_timeout_negative", [*T, "train.dist_timeout_s=-5"], "train.dist_timeout_s", None),
    ("unknown_model_did_you_mean", [*T, "model.name=resnet_8"], "did you mean 'resnet8'", None),
    ("unknown_method_did_you_mean", [*T, "method.name=dkdd"], "did you mean 'dkd'", None),
    ("unknown_dataset_did_you_mean", [*T, "data.name=cifar1000"], "cifar1000", None),
    ("method_param_unknown", [*KD, "method.params.tauu=1"], "tauu", None),
    ("select_on_val_without_split", [*T, "train.select_on=val"], "data.val_split", None),
    ("channel_mismatch", [*T, "model.in_chans=3"], "in_chans", None),
    ("teacher_checkpoint_without_name", [*T, "teacher.checkpoint=ck.pt"], "teacher.name", None),
    ("distill_without_method", ["distill", "--config", "base.yaml"], "method.name", None),
    ("kd_without_teacher", [*T, "method.name=kd"], "teacher", None),
    ("teacher_checkpoint_missing", [*T, "method.name=kd", "teacher.name=cnn_tiny", "teacher.checkpoint=gone.pt"],
     "gone.pt", None),
    ("teacher_checkpoint_garbage", [*T, "method.name=kd", "teacher.name=cnn_tiny", "teacher.checkpoint=garbage.pt"],
     "garbage.pt", None),
    ("teacher_checkpoint_unsafe", [*T, "method.name=kd", "teacher.name=cnn_tiny", "teacher.checkpoint=evil.pt"],
     "evil.pt", None),
    ("teacher_architecture_mismatch", [*T, "method.name=kd", "teacher.name=cnn_large", "teacher.checkpoint=ck.pt"],
     "ck.pt", None),
    ("model_checkpoint_garbage", [*T, "model.checkpoint=garbage.pt"], "garbage.pt", None),
    ("nonfinite_loss", [*T, "optim.lr=1e6", "optim.momentum=0.99", "output.name=diverge"], "optim.lr", None),
    ("nonfinite_skip_limit", [*T, "optim.lr=1e6", "optim.momentum=0.99", "train.on_nonfinite=skip",
                              "train.max_skipped_steps=2", "output.name=diverge"], "max_skipped_steps", None),
    # --- where results go
    ("name_dot", [*T, "output.name=.", "--overwrite"], "output.name", None),
    ("name_dotdot", [*T, "output.name=..", "--overwrite"], "output.name", None),
    ("name_slash", [*T, "output.name=a/b"], "output.name", None),
    ("name_backslash", [*T, "output.name=a\\b"], "output.name", None),
    ("name_absolute", [*T, "output.name=/tmp/aidkd-x", "--overwrite"], "output.name", None),
    ("name_root", [*T, "output.name=/", "--overwrite"], "output.name", None),
    ("name_tilde", [*T, "output.name=~user"], "output.name", None),
    ("dir_under_a_file", [*T, "output.dir=afile.txt/runs"], "output.dir", None),
    ("overwrite_user_folder", [*T, "output.dir=.", "output.name=mydata", "--overwrite"], "mydata", None),
    ("write_into_user_folder", [*T, "output.dir=.", "output.name=mydata"], "mydata", None),
    ("overwrite_symlink_folder", [*T, "output.name=link", "--overwrite"], "link", None),
    ("overwrite_a_file", [*T, "output.dir=.", "output.name=afile.txt", "--overwrite"], "output.name", None),
    ("finished_run_kept", [*T, "output.name=done"], "--overwrite", None),
    ("unfinished_different_config", [*T, "output.name=unfinished", "train.epochs=3", "optim.lr=0.01"],
     "--resume-with-changes", None),
    ("resume_with_changes_of_model", [*T, "output.name=unfinished", "train.epochs=3", "model.name=cnn_small",
                                      "--resume-with-changes"], "model.name", None),
    ("corrupt_run_config", [*T, "output.name=corruptcfg", "train.epochs=3"], "config.yaml", None),
    ("unsafe_resume_checkpoint", [*T, "output.name=evilrun", "train.epochs=3"], "unsafe", None),
    ("world_size_changed", [*T, "output.name=ws2", "train.epochs=3"], "--allow-world-size-change", None),
    # --- datasets
    ("cifar_unsafe_pickle", [*T, *CIFAR, "data.root=cifar_unsafe"], "unsafe", None),
    ("cifar_unsafe_names_file", [*T, *CIFAR, "data.root=cifar_unsafe"], "data_batch_1", None),
    ("cifar_int64_array", [*T, *CIFAR, "data.root=cifar_i8"], "unsafe", None),
    ("cifar_garbage", [*T, *CIFAR, "data.root=cifar_garbage"], "data_batch_1", None),
    ("cifar_wrong_keys", [*T, *CIFAR, "data.root=cifar_keys"], "'data'", None),
    ("cifar_wrong_shape", [*T, *CIFAR, "data.root=cifar_shape"], "data_batch_1", None),
    ("cifar_label_range", [*T, *CIFAR, "data.root=cifar_labels"], "data_batch_1", None),
    ("cifar_not_a_dict", [*T, *CIFAR, "data.root=cifar_list"], "data_batch_1", None),
    ("cifar_missing", [*T, *CIFAR, "data.root=empty"], "cifar-10-batches-py", None),
    ("fmnist_truncated", [*T, *FM, "data.root=fm_trunc"], "train-images-idx3-ubyte", None),
    ("fmnist_bad_magic", [*T, *FM, "data.root=fm_magic"], "train-labels-idx1-ubyte", None),
    ("fmnist_bad_header", [*T, *FM, "data.root=fm_header"], "t10k-labels-idx1-ubyte", None),
    ("fmnist_label_count", [*T, *FM, "data.root=fm_count"], "t10k-labels-idx1-ubyte", None),
    ("fmnist_image_size", [*T, *FM, "data.root=fm_size"], "train-images-idx3-ubyte", None),
    ("fmnist_bad_gzip", [*T, *FM, "data.root=fm_gz"], "train-images-idx3-ubyte.gz", None),
    ("fmnist_label_range", [*T, *FM, "data.root=fm_label"], "train-labels-idx1-ubyte", None),
    ("imagefolder_without_root", [*T, "data.name=imagefolder"], "data.root", None),
    ("imagefolder_broken_image", [*T, "data.name=imagefolder", "data.root=imgf_broken", "data.workers=1",
                                  "data.batch_size=2", "output.name=imgf"], "broken.png", None),
    ("imagefolder_without_val", [*T, "data.name=imagefolder", "data.root=imgf_noval"], "imgf_noval", None),
    ("tiny_imagenet_missing", [*T, "data.name=tiny_imagenet", "data.root=empty", "data.download=false"],
     "tiny_imagenet", None),
    ("tiny_imagenet_binary_text", [*T, "data.name=tiny_imagenet", "data.root=tiny", "data.download=false"],
     "tiny-imagenet-200", None),
    # --- the environment
    ("world_size_without_rank", T, "RANK", {"WORLD_SIZE": "2"}),
    ("world_size_without_rendezvous", T, "MASTER_ADDR", {"WORLD_SIZE": "2", "RANK": "1"}),
    ("rank_not_an_integer", T, "RANK", {"WORLD_SIZE": "2", "RANK": "one"}),
    ("rank_out_of_range", T, "RANK", {"WORLD_SIZE": "2", "RANK": "5"}),
    # --- other commands
    ("eval_missing_checkpoint", ["eval", "gone.pt"], "gone.pt", None),
    ("eval_garbage_checkpoint", ["eval", "garbage.pt", "--model", "cnn_tiny", "--data", "digits"], "garbage.pt", None),
    ("eval_unsafe_checkpoint", ["eval", "evil.pt", "--model", "cnn_tiny", "--data", "digits"], "evil.pt", None),
    ("eval_unsafe_is_called_unsafe", ["eval", "evil.pt"], "is unsafe", None),
    ("models_unknown_dataset", ["models", "--dataset", "mnist9"], "mnist9", None),
    ("bench_unknown_suite", ["bench", "nosuch"], "nosuch", None),
    ("pipeline_missing_config", ["pipeline", "--config", "nope.yaml"], "nope.yaml", None),
    ("pipeline_alias_bomb", ["pipeline", "--config", "bomb.yaml"], "bomb.yaml", None),
    ("pipeline_unknown_key", ["pipeline", "--config", "pipe_bad.yaml"], "not_a_key", None),
    ("pipeline_duplicate_key", ["pipeline", "--config", "pipe_dup.yaml"], "'name' appears twice", None),
    # the pipeline's given checkpoints are read before any stage runs
    ("pipeline_missing_teacher", ["pipeline", "--config", "pipe_missing_teacher.yaml"], "gone.pt", None),
    ("pipeline_garbage_teacher", ["pipeline", "--config", "pipe_garbage_teacher.yaml"], "garbage.pt", None),
    ("pipeline_unsafe_reference", ["pipeline", "--config", "pipe_evil_reference.yaml"], "unsafe", None),
    ("adapt_missing_config", ["adapt", "--config", "nope.yaml"], "nope.yaml", None),
    ("takd_without_assistants", ["takd", "--config", "base.yaml", "--assistants", ","], "assistants", None),
    ("analyze_without_teacher", ["analyze", "--student", "ck.pt"], "--teacher", None),
    ("analyze_out_is_user_folder", ["analyze", "--teacher", "ck.pt", "--student", "ck.pt", "--out", "mydata"],
     "--out", None),
    ("analyze_out_under_a_file", ["analyze", "--teacher", "ck.pt", "--student", "ck.pt", "--out", "afile.txt/an"],
     "--out", None),
    ("analyze_inner_class_out_of_range", ["analyze", "--teacher", "ck.pt", "--student", "ck.pt", "--out", "an",
                                          "--inner-classes", "10"], "--inner-classes 10", None),
    ("analyze_inner_class_not_a_number", ["analyze", "--teacher", "ck.pt", "--student", "ck.pt", "--out", "an",
                                          "--inner-classes", "x"], "--inner-classes", None),
    ("analyze_ladder_name_dotdot", ["analyze", "--ladder", "--teacher", "..=ck.pt", "--student", "ck.pt",
                                    "--out", "an"], "'..'", None),
    # --- aidkd owns only what it marked: a user's folder named like a run or an output is neither written nor deleted
    ("user_config_in_run_folder", ["train", "--config", "runs/myconf/config.yaml", "output.name=myconf"],
     "not a folder aidkd created", None),
    ("user_weights_in_run_folder", [*T, "output.name=pre", "model.checkpoint=runs/pre/checkpoints/pretrained.pt",
                                    "--overwrite"], "not a folder aidkd created", None),
    ("user_results_in_run_folder", [*T, "output.name=res", "--overwrite"], "not a folder aidkd created", None),
    ("demo_out_user_folder", ["demo", "--quick", "--out", "mydata"], "--out", None),
    ("demo_out_user_results", ["demo", "--quick", "--out", "resdir", "--overwrite"], "results.md", None),
    ("demo_out_symlink", ["demo", "--quick", "--out", "runs/link"], "not a folder", None),
    ("pipeline_out_user_folder", ["pipeline", "--config", "pipeline/digits_quick", "output.dir=mydata"],
     "output.dir", None),
    ("adapt_out_user_folder", ["adapt", "--config", "pipeline/digits_quick", "output.dir=resdir"], "output.dir", None),
    ("analyze_out_user_png", ["analyze", "--teacher", "ck.pt", "--student", "ck.pt", "--out", "pngs"],
     "components.png", None),
    ("export_user_sidecar", ["export", "ck.pt", "--out", "notes.safetensors", "--overwrite"], "notes.json", None),
    ("export_out_is_a_folder", ["export", "ck.pt", "--out", "dir.safetensors"], "not a file", None),
    ("export_out_under_a_file", ["export", "ck.pt", "--out", "afile.txt/x.safetensors"], "afile.txt", None),
    ("yaml_nul_bytes", ["train", "--config", "nul.yaml"], "nul.yaml", None),
    ("train_subset_below_classes", [*T, "data.train_subset=3"], "data.train_subset=3", None),
    ("fmnist_explicit_root_without_files", [*T, *FM, "data.root=empty"], "files not found in 'empty'", None),
    ("cache_root_is_a_file", [*T, "method.name=kd", "teacher.name=cnn_tiny", "teacher.checkpoint=ck.pt",
                              "teacher.cache=views", "output.name=c"], "AIDKD_CACHE", {"AIDKD_CACHE": "afile.txt"}),
    ("report_out_under_a_file", ["report", "runs/done", "--out", "afile.txt/r.md"], "afile.txt", None),
    ("report_overwrites_a_user_file", ["report", "runs/done", "--out", "base.yaml", "--overwrite"], "base.yaml", None),
    ("bench_report_over_a_user_file", ["bench", "throughput", "--report", "base.yaml"], "base.yaml", None),
    ("bench_report_is_a_folder", ["bench", "throughput", "--report", "mydata"], "is a folder", None),
    ("unknown_flag", [*T, "--bogus"], "--bogus", None),
    ("unknown_command", ["trian"], "trian", None),
]


@pytest.mark.parametrize("argv,expect,env", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_and_changes_nothing(template, tmp_path, monkeypatch, capsys, argv, expect, env):
    sb = tmp_path / "sb"
    shutil.copytree(template, sb, symlinks=True)
    os.unlink(sb / "runs/link")
    (sb / "runs/link").symlink_to(sb / "mydata")
    monkeypatch.chdir(sb)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    before = listing(sb)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aidkd: error: "), err
    assert "Traceback" not in err
    assert expect in lines[0], lines[0]
    assert listing(sb) == before


def test_catalogue_size():
    assert len(ROWS) >= 60 and len({r[0] for r in ROWS}) == len(ROWS)


def test_console_script_refuses_torchrun_variables_without_rendezvous(tmp_path):
    """A real process with WORLD_SIZE/RANK but no torchrun: refused at once, not a hang."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "OMP_NUM_THREADS": "1"}
    env.pop("MASTER_ADDR", None)
    r = subprocess.run([sys.executable, "-m", "aidkd.cli", "train", "--config", "base.yaml"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "MASTER_ADDR" in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.yaml"]


# ------------------------------------------------------------------------------------------- the run-folder rule
def test_check_name_accepts_plain_names_only():
    for ok in ("run", "a.b", "res8-s0", "x..y"):
        assert rundir.check_name(ok) == ok
    for bad in ("", ".", "..", "a/b", "/", "/abs", "a\\b", "~x", "a\x00b"):
        with pytest.raises(Exception, match="output.name"):
            rundir.check_name(bad)


def test_only_a_marked_folder_of_run_files_is_removed(tmp_path):
    run = rundir.mark_folder(tmp_path / "run", "run")
    (run / "checkpoints").mkdir(parents=True)
    (run / "tb").mkdir()
    for f in ("config.yaml", "metrics.jsonl", "summary.json", "stage.json", "checkpoints/last.pt",
              "checkpoints/.last.pt.x.tmp", "tb/events.out.tfevents.1"):
        (run / f).write_text("x")
    assert rundir.is_run_folder(run) and rundir.foreign_entries(run) == []
    unmarked = tmp_path / "unmarked"  # the same files without aidkd's mark: a user's folder
    shutil.copytree(run, unmarked)
    (unmarked / rundir.MARKER).unlink()
    assert not rundir.is_run_folder(unmarked)
    with pytest.raises(Exception, match="not a folder aidkd created"):
        rundir.remove_run_folder(unmarked)
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / rundir.MARKER).write_text('{"written_by": "someone else"}')
    with pytest.raises(Exception, match="not a folder aidkd created"):
        rundir.remove_run_folder(tmp_path / "fake")
    user = rundir.mark_folder(tmp_path / "user", "run")
    (user / "checkpoints" / "deep").mkdir(parents=True)
    (user / "config.yaml").write_text("x")
    assert rundir.foreign_entries(user) == ["checkpoints/deep"]
    with pytest.raises(Exception, match="checkpoints/deep"):
        rundir.remove_run_folder(user)
    assert (user / "config.yaml").exists() and (unmarked / "config.yaml").exists()
    (tmp_path / "link").symlink_to(run)
    assert not rundir.is_run_folder(tmp_path / "link")
    with pytest.raises(Exception, match="not a folder"):
        rundir.remove_run_folder(tmp_path / "link")
    rundir.remove_run_folder(run)
    assert not run.exists() and (tmp_path / "link").is_symlink()


def test_stale_temp_files_are_removed(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    stale = [tmp_path / "checkpoints/.last.pt.abc.tmp", tmp_path / ".summary.json.q.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    (tmp_path / "checkpoints/last.pt").write_bytes(b"keep")
    assert sorted(rundir.clean_stale_tmp(tmp_path)) == sorted(stale)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.pt"]


def test_a_run_that_fails_in_its_first_epoch_leaves_nothing_and_the_fix_runs(tmp_path, capsys, monkeypatch):
    """A non-finite loss in epoch 1 writes nothing; the corrected command then runs without --overwrite."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    assert main([*T, "optim.lr=1e6", "optim.momentum=0.99", "output.name=r"]) == 2
    assert not (tmp_path / "runs").exists()
    assert main([*T, "output.name=r"]) == 0
    assert json.loads((tmp_path / "runs/r/summary.json").read_text())["epochs"] == 1


def test_analysis_output_folder_rule(tmp_path):
    out = tmp_path / "an"
    assert rundir.claim_folder(out, "--out", rundir.ANALYSIS_FILES, (".png",)) == out and not out.exists()
    rundir.own_folder(out, "--out", "analysis", rundir.ANALYSIS_FILES, (".png",))
    (out / "analysis.json").write_text("{}")
    (out / "components.png").write_bytes(b"png")
    rundir.claim_folder(out, "--out", rundir.ANALYSIS_FILES, (".png",))  # a rerun may overwrite its own
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(Exception, match="thesis.tex"):
        rundir.claim_folder(out, "--out", rundir.ANALYSIS_FILES, (".png",))
    mine = tmp_path / "mine"  # the same names, but not marked: the user's
    mine.mkdir()
    (mine / "components.png").write_bytes(b"png")
    with pytest.raises(Exception, match="not a folder aidkd created"):
        rundir.claim_folder(mine, "--out", rundir.ANALYSIS_FILES, (".png",))


def test_overrides_may_follow_the_flags(template, tmp_path, monkeypatch):
    sb = tmp_path / "sb"
    shutil.copytree(template, sb, symlinks=True)
    monkeypatch.chdir(sb)
    assert main(["train", "--config", "base.yaml", "--overwrite", "output.name=after", "train.epochs=1"]) == 0
    assert (sb / "runs/after/summary.json").is_file()


def test_files_aidkd_writes_follow_the_umask(tmp_path):
    from aidkd.files.checkpoint import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


def test_overwrite_replaces_what_aidkd_wrote(template, tmp_path, monkeypatch, capsys):
    """The other side of the rule: what aidkd marked is replaced with --overwrite (a run, an export)."""
    sb = tmp_path / "sb"
    shutil.copytree(template, sb, symlinks=True)
    monkeypatch.chdir(sb)
    assert main(["export", "ck.pt", "--out", "w.safetensors"]) == 0
    assert main(["export", "ck.pt", "--out", "w.safetensors"]) == 2  # refused without --overwrite
    assert main(["export", "ck.pt", "--out", "w.safetensors", "--overwrite"]) == 0
    assert json.loads((sb / "w.json").read_text())["written_by"] == "aidkd"
    assert main([*T, "output.name=done", "--overwrite"]) == 0
    assert (sb / "runs/done" / rundir.MARKER).is_file()
