"""Published pretrained weights of torchvision and timm models, found on local disk only: never a download.

``pretrained`` is ``True`` (the default cache: torch hub's ``<TORCH_HOME>/hub/checkpoints`` for torchvision,
the Hugging Face hub cache for timm) or a directory (a torch hub ``checkpoints`` folder or the folder above it, a
Hugging Face cache folder, or a folder holding the file itself). The file looked for is the one the library would
download: torchvision's ``DEFAULT`` weights (e.g. ``resnet18-f37072fd.pth``), timm's default pretrained tag
(``model.safetensors`` or ``pytorch_model.bin`` of its Hugging Face repository). When it is not there the error
says which file to put where; aidkd does not fetch it.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from ..errors import UserError

TIMM_FILES = ("model.safetensors", "pytorch_model.bin")


def _search_dirs(where: bool | str | Path, default: Path) -> list[Path]:
    if where is True:
        return [default]
    d = Path(where).expanduser()
    if not d.is_dir():
        raise UserError(f"pretrained: {str(d)!r} is not a directory; give a cache directory, or the weights file "
                        "as the model's checkpoint")
    return [d, d / "checkpoints", d / "hub" / "checkpoints"]


def torchvision_weights_file(name: str, where: bool | str | Path = True) -> Path:
    """The local file of torchvision ``name``'s DEFAULT weights."""
    import torch
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise UserError(f"torchvision {name!r} has no published pretrained weights") from None
    filename = Path(urlparse(weights.url).path).name
    dirs = _search_dirs(where, Path(torch.hub.get_dir()) / "checkpoints")
    for d in dirs:
        if (d / filename).is_file():
            return d / filename
    raise UserError(f"pretrained weights of torchvision {name!r} ({filename}) are not in {dirs[0]}; aidkd never "
                    f"downloads them: fetch {weights.url} into that folder, or set pretrained to a folder that has it")


def timm_weights_file(name: str, where: bool | str | Path = True) -> Path:
    """The local file of timm ``name``'s default pretrained weights."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise UserError(f"timm {name!r} has no published pretrained weights on the Hugging Face hub")
    if where is True:
        dirs: list[Path | None] = [None]  # the hub's default cache
    else:
        dirs = list(_search_dirs(where, Path()))[:1]
        for f in TIMM_FILES:  # a folder holding the file itself
            if (dirs[0] / f).is_file():  # type: ignore[operator]
                return dirs[0] / f  # type: ignore[operator]
    for d in dirs:
        for f in TIMM_FILES:
            hit = try_to_load_from_cache(repo, f, cache_dir=str(d) if d is not None else None)
            if isinstance(hit, str):
                return Path(hit)
    where_txt = "the Hugging Face cache" if where is True else str(where)
    raise UserError(f"pretrained weights of timm {name!r} (hub repository {repo}) are not in {where_txt}; aidkd "
                    f"never downloads them: fetch {TIMM_FILES[0]} of {repo} into that cache once (e.g. "
                    "huggingface-cli download), or set pretrained to a folder that holds it")


__all__ = ["TIMM_FILES", "timm_weights_file", "torchvision_weights_file"]
