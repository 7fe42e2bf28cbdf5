"""A model's stored logits on every view of every training image: the file format (``views.pt``) and the teacher
that serves it (:class:`ViewsTeacher`). It is the one form in which aidkd stores a model's outputs for students:
the engine's ``teacher.cache`` builds and reads it (:mod:`aidkd.teachers.cache`), and a plan's logits stage
(:func:`aidkd.stages.logits_stage`) writes it as the file that ``teacher.kind: logits`` serves.

The small-image augmentation (random crop with zero padding ``p`` + horizontal flip) has ``(2p+1)^2 x 2``
views per image (162 for CIFAR's ``p = 4``; one view without augmentation). The training loader records which
view of each sample a batch holds (``Batch.view``); the file serves the teacher's logits for exactly that view,
so training is the same as running the teacher, up to the storage rounding (fp16). Two modes:

* ``views``: every view is stored. Building it costs ``(2p+1)^2 x 2`` teacher passes over the split.
* ``sampled``: ``K`` views per image are drawn once (FKD style) and the loader replays only those. This is a
  change of recipe (the student sees ``K`` views of each image, not all of them); it is the practical mode
  where the full set is too costly to build.

Logits are stored in fp16 (``precision: float32`` keeps them exact), or as the top-``k`` logits (fp16 values,
int16 classes) plus the mean of the others (an approximation; the rest of the classes are served at that mean).
:func:`fingerprint` is a content hash of everything the stored logits depend on: the teacher's weights, the
training split's images and labels, the normalisation, the augmentation, the mode and storage format, and the
autocast dtype of the teacher's forward.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from ..data.augment import TensorAugment, apply_views, encode_views, to_float_normalized, uint8_affine
from ..data.base import Batch
from ..engine.precision import autocast
from ..errors import UserError
from ..files.checkpoint import load_checkpoint, save_checkpoint
from ..models import num_params
from ..progress import progress_enabled, track_images
from .base import IMAGES, SPLIT, Teacher

FORMAT = "aidkd-view-cache-v1"
SAMPLED_SEED = 0  # the draw of the stored views in sampled mode (part of the fingerprint)


@dataclass(frozen=True)
class CacheSpec:
    """What a cache stores: which views (``mode``, the augmentation's ``padding`` / ``flip``, ``views_per_image``
    in sampled mode) and in which form (``topk`` classes or all of them in ``precision``; ``dtype``: the autocast
    dtype of the teacher's forward, ``"float32"`` for none)."""

    mode: Literal["views", "sampled"]
    padding: int
    flip: bool
    views_per_image: int = 0  # sampled mode: K
    topk: int | None = None
    dtype: str = "float32"
    precision: Literal["float16", "float32"] = "float16"  # storage of the full logits (top-k values: fp16)

    @property
    def augment(self) -> TensorAugment:
        return TensorAugment(self.padding, self.flip)

    @property
    def stored_views(self) -> int:
        total = self.augment.num_views
        return total if self.mode == "views" else min(self.views_per_image, total)


# ------------------------------------------------------------------------------------------------- pure parts
def stored_view_table(num_samples: int, spec: CacheSpec) -> Tensor:
    """``(N, S)`` int64: the view ids stored for each sample. ``views``: all of them, in id order (so the slot of
    a view is its id); ``sampled``: ``S = K`` distinct views per sample, drawn with a fixed seed."""
    total = spec.augment.num_views
    if spec.mode == "views":
        return torch.arange(total).expand(num_samples, total).contiguous()
    g = torch.Generator().manual_seed(SAMPLED_SEED)
    return torch.rand(num_samples, total, generator=g).argsort(dim=1)[:, : spec.stored_views].contiguous()


def storage_bytes(num_samples: int, stored_views: int, num_classes: int, topk: int | None,
                  precision: str = "float16") -> int:
    """Bytes of a cache: fp16 (or fp32) logits, or top-k fp16 values + int16 classes + one fp16 mean of the rest."""
    per_view = (2 if precision == "float16" else 4) * num_classes if topk is None else 4 * topk + 2
    return num_samples * stored_views * per_view


def fingerprint(teacher: nn.Module, images: Tensor, labels: Tensor, mean, std, spec: CacheSpec) -> str:
    """A content hash of everything the cached logits depend on."""
    h = hashlib.sha256(FORMAT.encode())
    h.update(type(teacher).__name__.encode())
    for name, t in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    for t in (images, labels):
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps({"mean": list(mean), "std": list(std), **asdict(spec)}, sort_keys=True).encode())
    return h.hexdigest()[:24]


@torch.no_grad()
def build_view_logits(teacher: nn.Module, images: Tensor, mean, std, table: Tensor, spec: CacheSpec,
                      device: torch.device, batch_size: int = 512) -> dict[str, Tensor]:
    """Run ``teacher`` on view ``table[i, j]`` of every image ``i`` for every slot ``j``; return the stored
    tensors: ``logits`` ``(N, S, C)`` in ``spec.precision``, or ``topk_values`` / ``topk_classes`` ``(N, S, k)`` and
    ``rest_mean`` ``(N, S)``. A progress bar (:mod:`aidkd.progress`) shows the build where bars are on."""
    n, s = table.shape
    dtype = None if spec.dtype == "float32" else getattr(torch, spec.dtype)
    affine = uint8_affine(mean, std, device)
    pairs = n * s
    out: dict[str, Tensor] = {}
    chunks = [(p // s, p % s) for p in torch.arange(pairs).split(batch_size)]
    for i, j in track_images(chunks, "teacher view cache", progress_enabled()):
        x = images[i.to(images.device)].to(device)
        x = to_float_normalized(apply_views(x, table[i, j].to(device), spec.padding, spec.flip), affine=affine)
        with autocast(device, dtype):
            z = teacher(x).float().cpu()
        if not out:
            c = z.shape[1]
            if spec.topk is None:
                out["logits"] = torch.empty(n, s, c, dtype=getattr(torch, spec.precision))
            else:
                k = min(spec.topk, c)
                out["topk_values"] = torch.empty(n, s, k, dtype=torch.float16)
                out["topk_classes"] = torch.empty(n, s, k, dtype=torch.int16)
                out["rest_mean"] = torch.empty(n, s, dtype=torch.float16)
        if spec.topk is None:
            out["logits"][i, j] = z.to(out["logits"].dtype)
        else:
            v, c_idx = z.topk(out["topk_values"].shape[2], dim=1)
            rest = (z.sum(1) - v.sum(1)) / max(z.shape[1] - v.shape[1], 1)
            out["topk_values"][i, j], out["topk_classes"][i, j] = v.half(), c_idx.to(torch.int16)
            out["rest_mean"][i, j] = rest.half()
    return out


class ViewStore:
    """The stored logits and view table of one cache, on one device; :meth:`gather` serves ``(B, C)`` float32
    logits for samples ``index`` seen in views ``view``."""

    def __init__(self, tensors: dict[str, Tensor], table: Tensor | None, spec: CacheSpec, num_classes: int,
                 device: torch.device | str = "cpu"):
        self.spec, self.num_classes = spec, num_classes
        self.tensors = {k: v.to(device) for k, v in tensors.items()}
        self.table = table.to(device) if spec.mode == "sampled" else None  # views mode: the slot is the view id
        self.device = torch.device(device)

    def slots(self, index: Tensor, view: Tensor) -> Tensor:
        if self.spec.mode == "views":
            return view
        # sampled: the slot whose stored view is the one drawn (the loader draws only stored views)
        return (self.table[index] == view.view(-1, 1)).to(torch.uint8).argmax(dim=1)

    def gather(self, index: Tensor, view: Tensor) -> Tensor:
        index, view = index.to(self.device).long(), view.to(self.device).long()
        j = self.slots(index, view)
        if "logits" in self.tensors:
            return self.tensors["logits"][index, j].float()
        rest = self.tensors["rest_mean"][index, j].float()
        z = rest.view(-1, 1).expand(-1, self.num_classes).clone()
        return z.scatter_(1, self.tensors["topk_classes"][index, j].long(), self.tensors["topk_values"][index, j].float())


class ViewsTeacher(Teacher):
    """A teacher served from a :class:`ViewStore`: :meth:`logits` gathers the stored logits of a batch's samples in
    the views it holds. Images that are no view of the training split (``batch.view`` None, e.g. MLKD's strong
    view) go through the teacher model itself, when there is one (a file served as ``teacher.kind: logits`` has
    none: it serves the split only). It has no features."""

    def __init__(self, store: ViewStore, model: nn.Module | None, source: str = "teacher"):
        super().__init__()
        self.store = store
        object.__setattr__(self, "model", model)  # the frozen teacher, for images outside the file
        self.source = source
        self.serves = frozenset({SPLIT, IMAGES} if model is not None else {SPLIT})

    def forward(self, images: Tensor) -> Tensor:
        if self.model is None:
            return super().forward(images)
        return self.model(images)

    def logits(self, batch: Batch) -> Tensor:
        if batch.view is None:
            return self(batch.images)
        if batch.index is None:
            raise UserError(f"the teacher serves per-view outputs ({self.source}) and needs sample indices")
        return self.store.gather(batch.index, batch.view).to(batch.images.device)


# ------------------------------------------------------------------------------------------------ the file
def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return ""  # unreachable


def describe_cost(num_samples: int, spec: CacheSpec, num_classes: int) -> str:
    s = spec.stored_views
    size = human_bytes(storage_bytes(num_samples, s, num_classes, spec.topk, spec.precision))
    form = f"{'fp16' if spec.precision == 'float16' else 'fp32'} logits" if spec.topk is None else f"top-{spec.topk} logits"
    return (f"{num_samples} images x {s} views x {num_classes} classes as {form} = {size}; building it costs "
            f"{s} teacher passes over the split ({s} epochs' worth of teacher forwards)")


def spec_of_loader(loader, mode: str = "views", views_per_image: int = 0, topk: int | None = None,
                   dtype: str = "float32", precision: str = "float16") -> CacheSpec:
    """The cache spec of ``loader``'s training augmentation (one view without augmentation)."""
    aug = loader.augment
    return CacheSpec(mode=mode, padding=aug.crop_pad if aug else 0, flip=bool(aug and aug.flip),
                     views_per_image=views_per_image, topk=topk, dtype=dtype, precision=precision)


def write_views(teacher: nn.Module, weights: nn.Module, loader, spec: CacheSpec, num_classes: int,
                device: torch.device, path: Path, log=print) -> dict:
    """Run ``teacher`` over every stored view of ``loader``'s training split and write ``path`` (``views.pt``,
    atomically). ``weights`` is the module whose weights identify the teacher (the original model when
    ``teacher`` is a lean wrapper of it). Returns what the build measured: its time and speed, the teacher's
    parameter count and its accuracy on the stored views."""
    images, labels = loader.images, loader.labels
    table = stored_view_table(images.shape[0], spec)
    t0 = time.perf_counter()
    # on a CPU small batches are faster (resnet32x4, 2 threads, channels_last: 72 images/s at 64, 52 at 128, 43
    # at 512; docs/results/throughput.md)
    tensors = build_view_logits(teacher, images, loader.mean, loader.std, table, spec, device,
                                batch_size=4096 if device.type == "cuda" else 64)
    took = time.perf_counter() - t0
    save_checkpoint({"format": FORMAT, "spec": asdict(spec), "num_classes": num_classes,
                     "table": table if spec.mode == "sampled" else None, "tensors": tensors}, path)
    rate = table.numel() / max(took, 1e-9)
    store = ViewStore(tensors, table, spec, num_classes)
    hits = sum(int((store.gather(torch.arange(images.shape[0]), table[:, j]).argmax(1) == labels.cpu()).sum())
               for j in range(table.shape[1]))
    log(f"teacher views: built in {took:.1f} s ({rate:.0f} teacher images/s), in {path.parent}")
    return {"build_s": took, "build_img_per_s": rate, "num_params": num_params(weights),
            "train_view_acc": 100.0 * hits / table.numel(), "shape": [images.shape[0], table.shape[1], num_classes]}


def load_views(path: str | Path) -> dict:
    """The content of a ``views.pt`` file; anything else is a one-line error naming it."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{str(path)!r} is not an aidkd teacher-views file (written by a teacher-views stage); check "
                        "teacher.checkpoint and teacher.kind, or delete a damaged cache folder to rebuild it")
    damaged = f"{str(path)!r} is damaged ({{}}); delete its cache folder to rebuild it"
    try:
        spec = CacheSpec(**state["spec"])
        tensors, classes = state["tensors"], int(state["num_classes"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(damaged.format(f"its header: {type(e).__name__}")) from None
    if not isinstance(tensors, dict) or not tensors or not all(isinstance(v, Tensor) and v.dim() >= 2
                                                                 for v in tensors.values()):
        raise UserError(damaged.format("no stored outputs"))
    n = next(iter(tensors.values())).shape[0]
    for name, v in tensors.items():
        if tuple(v.shape[:2]) != (n, spec.stored_views):
            raise UserError(damaged.format(f"{name} holds {tuple(v.shape[:2])} samples x views, its header "
                                           f"{spec.stored_views} views per sample"))
        if name == "logits" and (v.dim() != 3 or v.shape[2] != classes):
            raise UserError(damaged.format(f"logits of shape {tuple(v.shape)} for {classes} classes"))
    table = state.get("table")
    if spec.mode == "sampled" and (not isinstance(table, Tensor) or table.shape != (n, spec.stored_views)):
        raise UserError(damaged.format("its view table does not match its outputs"))
    return state


def serve_views(path: str | Path, loader, model: nn.Module | None = None, source: str | None = None,
                num_classes: int | None = None) -> ViewsTeacher:
    """A :class:`ViewsTeacher` from the teacher-views file ``path`` for ``loader``'s training split (of
    ``num_classes`` classes, when given). The file's views must be those of the loader's augmentation; in sampled
    mode the loader is told to replay the stored views. ``model`` serves images that are no view of the split
    (None: such images are refused)."""
    state = load_views(path)
    spec = CacheSpec(**state["spec"])
    aug = spec_of_loader(loader)
    if (spec.padding, spec.flip) != (aug.padding, aug.flip):
        raise UserError(f"{str(path)!r} holds the views of crop padding {spec.padding}, flip {spec.flip}, but the "
                        f"training data augments with padding {aug.padding}, flip {aug.flip}; build the outputs "
                        "with the same data config")
    n, c = next(iter(state["tensors"].values())).shape[0], state["num_classes"]
    if n != loader.images.shape[0] or c != (num_classes or c):
        raise UserError(f"{str(path)!r} holds outputs for {n} samples x {c} classes, but the training split has "
                        f"{loader.images.shape[0]} samples x {num_classes or c} classes; build it from the same data "
                        "config")
    if spec.mode == "sampled":
        loader.replay_views(state["table"])
    store = ViewStore(state["tensors"], state.get("table"), spec, c, loader.images.device)
    return ViewsTeacher(store, model, source=source or str(path))


def identity_logits(path: str | Path) -> Tensor:
    """``(N, C)`` float32: the stored logits of every sample's unaugmented view (the centre crop, not mirrored)
    in the teacher-views file ``path``, for analyses of the model's outputs on the split itself."""
    state = load_views(path)
    spec = CacheSpec(**state["spec"])
    n = next(iter(state["tensors"].values())).shape[0]
    p = torch.full((n,), spec.padding)
    view = encode_views(p, p, torch.zeros(n, dtype=torch.bool), spec.padding, spec.flip)
    table = state.get("table")
    if spec.mode == "sampled" and not bool((table == view.view(-1, 1)).any(1).all()):
        raise UserError(f"{str(path)!r} stores sampled views, not every sample's unaugmented one")
    return ViewStore(state["tensors"], table, spec, state["num_classes"]).gather(torch.arange(n), view)
