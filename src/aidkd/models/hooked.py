"""Any classifier as a :class:`KDModel`: features taken by forward hooks at module paths.

``HookedModel(module, stage_paths=[...])`` wraps an unmodified third-party network (a torchvision or timm
classifier) and speaks the feature contract: ``feats[i]`` is the output of the module at ``stage_paths[i]``
(``stage_paths[0]`` is the stem), ``preact_feats[i]`` the *input* of the module at ``preact_paths[i]`` (e.g. the
last ReLU of a stage, whose input is the stage's pre-activation) or ``feats[i]`` where no such path is given,
and ``pooled`` the input of the classifier module. A module called several times in one forward pass (a ReLU
shared inside a block) yields its last call. Inputs of in-place modules (``ReLU(inplace=True)``) are copied
before the module overwrites them; outputs are not copied, so a stage path must name a module whose output the
network does not later modify in place (true of block and stage outputs in torchvision and timm models).

Hooks are registered for the duration of one :meth:`HookedModel.forward_with_features` call only, so a plain
``model(x)`` costs nothing extra and a ``copy.deepcopy`` of the wrapper (an EMA teacher) works. The wrapped
module is ``self.model``, so the wrapper's state dict keys carry a ``model.`` prefix;
:func:`aidkd.models.load_weights` accepts state dicts with or without it.

:func:`auto_stage_paths` finds stage paths for a network that has none declared: it runs one forward pass and
takes, for every spatial resolution, the outermost module that finishes last at that resolution.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import UserError
from .base import Features, KDModel, probe_input

CLASSIFIER_ATTRS = ("fc", "classifier", "head", "heads", "linear")


def find_classifier(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The (path, module) of a network's classifier: timm's ``get_classifier()`` or a conventional attribute."""
    get = getattr(model, "get_classifier", None)
    if callable(get):
        try:
            clf = get()
        except Exception:  # noqa: BLE001 - a foreign method; fall back to attribute names
            clf = None
        if isinstance(clf, nn.Module):
            for path, m in model.named_modules():
                if m is clf and path:
                    return path, m
    for attr in CLASSIFIER_ATTRS:
        m = getattr(model, attr, None)
        if isinstance(m, nn.Module):
            return attr, m
    return None


def _first_tensor(out) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    return None


def _logits(out) -> Tensor:
    """Logits from a model's output: a tensor, or the main output of a namedtuple/tuple (GoogLeNet, Inception)."""
    if hasattr(out, "logits"):
        return out.logits
    t = _first_tensor(out)
    if t is None:
        raise TypeError(f"cannot find logits in a model output of type {type(out).__name__}")
    return t


def _as_vector(x: Tensor) -> Tensor:
    if x.dim() == 4:
        return x.flatten(1) if x.shape[2] * x.shape[3] == 1 else x.mean((2, 3))
    return x.flatten(1) if x.dim() > 2 else x


class HookedModel(KDModel):
    """A classifier whose features are read by forward hooks at module paths (see the module docstring)."""

    def __init__(self, model: nn.Module, stage_paths: Sequence[str], preact_paths: Sequence[str | None] | None = None,
                 classifier: str | None = None, input_size: tuple[int, int, int] = (3, 224, 224)):
        super().__init__()
        self.model = model
        self.input_size = tuple(input_size)
        self.stage_paths = list(stage_paths)
        self.preact_paths = list(preact_paths) if preact_paths is not None else [None] * len(self.stage_paths)
        if len(self.preact_paths) != len(self.stage_paths):
            raise UserError(f"preact_paths has {len(self.preact_paths)} entries but stage_paths has "
                            f"{len(self.stage_paths)}")
        for p in [*self.stage_paths, *(q for q in self.preact_paths if q)]:
            self._module(p)  # fail early on a bad path
        if classifier is None:
            found = find_classifier(model)
            if found is None:
                raise UserError(f"cannot find the classifier of {type(model).__name__}; "
                                "pass classifier='<module path>'")
            classifier = found[0]
        self.classifier_path = classifier
        self._module(classifier)

    def _module(self, path: str) -> nn.Module:
        try:
            return self.model.get_submodule(path)
        except AttributeError:
            top = ", ".join(n for n, _ in self.model.named_children())
            raise UserError(f"{type(self.model).__name__} has no module {path!r}; its top-level modules are: {top}") \
                from None

    def forward(self, x: Tensor) -> Tensor:
        return _logits(self.model(x))

    def forward_with_features(self, x: Tensor) -> Features:
        store: dict = {}
        handles = []

        def out_hook(key):
            def hook(_m, _inp, out):
                store[key] = _first_tensor(out)
            return hook

        def in_hook(key, clone: bool):
            def hook(_m, inp):
                t = _first_tensor(inp)
                store[key] = t.clone() if clone and t is not None else t  # an in-place op will overwrite its input
            return hook

        try:
            for i, path in enumerate(self.stage_paths):
                handles.append(self._module(path).register_forward_hook(out_hook(("f", i))))
            for i, path in enumerate(self.preact_paths):
                if path:
                    m = self._module(path)
                    handles.append(m.register_forward_pre_hook(in_hook(("p", i), bool(getattr(m, "inplace", False)))))
            handles.append(self._module(self.classifier_path).register_forward_pre_hook(in_hook("pooled", False)))
            logits = _logits(self.model(x))
        finally:
            for h in handles:
                h.remove()
        missing = [p for i, p in enumerate(self.stage_paths) if store.get(("f", i)) is None]
        if missing or "pooled" not in store:
            raise RuntimeError(f"no output was seen at {missing or [self.classifier_path]} during the forward pass")
        feats = [store[("f", i)] for i in range(len(self.stage_paths))]
        pre = [store.get(("p", i), feats[i]) if self.preact_paths[i] else feats[i] for i in range(len(feats))]
        return Features(logits, feats, pre, _as_vector(store["pooled"]))

    def get_classifier(self) -> nn.Module:
        return self._module(self.classifier_path)


_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d, nn.Flatten)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@torch.no_grad()
def auto_stage_paths(model: nn.Module, input_size: tuple[int, int, int], classifier: str | None = None) -> list[str]:
    """Stage paths found by one forward pass on zeros.

    Candidates are the top-level modules and the children of top-level containers (``features.3``,
    ``layer1.0``), leaving out the classifier, global pools and containers whose parts work at several
    resolutions (``features`` as a whole). For every spatial size of a candidate's 4-d output, the candidate
    that finishes last at that size is a stage. For a torchvision ResNet this gives ``relu, layer1, ...,
    layer4``; for EfficientNet/MobileNet the last block (or conv) of each resolution. It is a heuristic: pass
    ``stage_paths`` to choose the stages yourself.
    """
    skip = classifier or (find_classifier(model) or ("", None))[0]
    events: list[tuple[str, tuple[int, ...]]] = []
    handles = []

    def hook(name):
        def fn(m, _inp, out):
            t = _first_tensor(out)
            if t is not None and t.dim() == 4 and not isinstance(m, _POOLS):
                events.append((name, tuple(t.shape[2:])))
        return fn

    def candidate(name: str) -> bool:
        if not name or (skip and (name == skip or name.startswith(skip + "."))):
            return False
        parent, _, _ = name.rpartition(".")
        return not parent or ("." not in parent and isinstance(model.get_submodule(parent), _CONTAINERS))

    for name, m in model.named_modules():
        if candidate(name):
            handles.append(m.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        model(probe_input(model, input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    spanning = {a for a, hw_a in events for b, hw_b in events if b.startswith(a + ".") and hw_b != hw_a}
    last: dict[tuple[int, ...], tuple[int, str]] = {}
    for order, (name, hw) in enumerate(events):
        if name not in spanning:
            last[hw] = (order, name)
    return [name for _, name in sorted(last.values())]
