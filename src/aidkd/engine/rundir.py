"""Run folders: what may be named, what counts as one, and the only way aidkd deletes one.

Every command that writes results (``train``/``distill``, ``takd``, ``pipeline`` stages, ``adapt``, benchmarks)
writes into ``<output.dir>/<output.name>``. This module is the single rule for those folders:

* :func:`check_name` -- a run name is one plain path component (no ``/``, ``\\``, ``.``, ``..``, absolute
  path, NUL or leading ``~``); anything else is a :class:`~aidkd.errors.UserError` before any file is touched.
* :func:`foreign_entries` / :func:`is_run_folder` -- a folder is a run folder when it holds nothing but run
  files: :data:`RUN_FILES` at its top level, and the folders :data:`RUN_SUBDIRS` holding only files
  (checkpoints, TensorBoard events, stage outputs). Symbolic links never count as run files.
* :func:`remove_run_folder` -- ``--overwrite`` deletes a folder only when it is a run folder; otherwise it
  refuses with one line naming the first foreign entry. Nothing else in aidkd calls ``shutil.rmtree`` on a
  user-named path.
* :func:`has_resumable_run` -- a folder without ``checkpoints/last.pt`` holds no run to resume (a run that failed
  before its first epoch leaves at most a config): callers treat it as empty and may reuse it.
* :func:`clean_stale_tmp` -- remove the ``checkpoints/.*.tmp`` files a killed checkpoint write leaves behind.
* :func:`check_output_folder` -- the same rule for a command's output folder that is not a run (``aidkd
  analyze --out``: only ``analysis.json``, ``ladder.json`` and plots may be there).
* :func:`check_creatable` -- refuse, before anything is written, an output path under a regular file or in a
  folder that cannot be written.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import UserError

#: files a run (or a pipeline stage) writes at the top of its folder
RUN_FILES = frozenset({
    "config.yaml", "config_history.jsonl", "metrics.jsonl", "summary.json", "curves.png", "stage.json", "report.json",
    "teacher.pt", "results.json", "results.md", "pipeline.json",
})
#: folders a run writes; they may hold files only (no further folders, no links)
RUN_SUBDIRS = frozenset({"checkpoints", "tb"})


def check_name(name: str, key: str = "output.name") -> str:
    """Return ``name`` if it is one plain path component, else raise a UserError naming ``key``."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{key} must be a non-empty folder name (got {name!r})")
    bad = None
    if name in (".", ".."):
        bad = "is not a folder name"
    elif "/" in name or "\\" in name:
        bad = "contains a path separator"
    elif "\x00" in name:
        bad = "contains a NUL character"
    elif name.startswith("~"):
        bad = "starts with '~'"
    elif os.path.isabs(name):
        bad = "is an absolute path"
    if bad:
        raise UserError(f"{key}={name!r} {bad}; give one plain folder name (e.g. {key}=my-run) and put the parent "
                        "folder in output.dir")
    return name


#: what ``aidkd analyze`` writes into its ``--out`` folder
ANALYSIS_FILES = frozenset({"analysis.json", "ladder.json"})


def foreign_entries(folder: str | Path, files: frozenset[str] = RUN_FILES, suffixes: tuple[str, ...] = ()) -> list[str]:
    """The entries of ``folder`` (relative paths, sorted) that are not run files; [] for a missing folder.

    ``files`` / ``suffixes``: the top-level file names (and name endings) that count as the command's own outputs
    (default: a run's; :data:`ANALYSIS_FILES` with ``(".png",)`` for ``aidkd analyze``)."""
    folder = Path(folder)
    if not folder.exists():
        return []
    if folder.is_symlink() or not folder.is_dir():
        return ["."]
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_symlink():
            out.append(p.name)
        elif p.is_file():
            if p.name not in files and not p.name.endswith(suffixes or ("\0",)) and not _is_tmp(p.name):
                out.append(p.name)
        elif p.is_dir() and p.name in RUN_SUBDIRS:
            out += [f"{p.name}/{q.name}" for q in sorted(p.iterdir()) if q.is_symlink() or not q.is_file()]
        else:
            out.append(p.name)
    return out


def check_output_folder(folder: str | Path, key: str, files: frozenset[str] = RUN_FILES,
                        suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse (one line naming ``key``) an output folder that cannot be created or that holds anything but the
    command's own outputs, which it is about to overwrite; return it as a Path. Nothing is written."""
    folder = Path(folder).expanduser()
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UserError(f"{key}: {str(folder)!r} exists and is not a folder; choose another {key}")
    check_creatable(folder, key)
    foreign = foreign_entries(folder, files, suffixes)
    if foreign:
        raise UserError(f"{key}: {str(folder)!r} holds {foreign[0]!r}, which this command did not write; aidkd "
                        f"does not write into such a folder: choose another {key}")
    return folder


def is_run_folder(folder: str | Path) -> bool:
    """True when ``folder`` exists and holds nothing but run files (an empty folder is one)."""
    folder = Path(folder)
    return folder.is_dir() and not folder.is_symlink() and not foreign_entries(folder)


def remove_run_folder(folder: str | Path, key: str = "output.name") -> None:
    """Delete ``folder`` for ``--overwrite``; refuse (UserError, nothing deleted) unless it is a run folder."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    foreign = foreign_entries(folder)
    if foreign:
        what = "is not a folder" if foreign == ["."] else f"holds {foreign[0]!r}, which is not a run file"
        raise UserError(f"--overwrite refused: {str(folder)!r} {what}; only a folder of run files is replaced "
                        f"(move that away or choose another {key})")
    shutil.rmtree(folder)


def has_resumable_run(folder: str | Path) -> bool:
    """True when ``folder`` holds a run that got through at least one epoch (``checkpoints/last.pt``)."""
    return (Path(folder) / "checkpoints" / "last.pt").is_file()


def clean_stale_tmp(folder: str | Path) -> list[Path]:
    """Remove temp files of interrupted atomic writes (``.NAME.*.tmp``) in ``folder`` and its ``checkpoints/``;
    return what was removed. Call it only on a folder no other process is writing."""
    removed = []
    for d in (Path(folder), Path(folder) / "checkpoints"):
        if d.is_dir() and not d.is_symlink():
            for p in d.iterdir():
                if _is_tmp(p.name) and p.is_file() and not p.is_symlink():
                    p.unlink()
                    removed.append(p)
    return removed


def nearest_dir(path: str | Path) -> Path:
    """The deepest existing ancestor of ``path`` (``path`` itself if it exists): where creating it would start.
    It may be a regular file, in which case ``path`` cannot be created."""
    p = Path(path).absolute()
    while not (p.exists() or p.is_symlink()) and p != p.parent:
        p = p.parent
    return p


def check_creatable(path: str | Path, key: str = "output.dir") -> None:
    """Raise one line naming ``key`` when the folder ``path`` cannot be created or written (nothing is created)."""
    base = nearest_dir(path)
    if not base.is_dir():
        raise UserError(f"{key}: cannot create {str(path)!r}: {str(base)!r} is a file, not a folder; choose "
                        "another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{key}: {str(base)!r} is not writable, so {str(path)!r} cannot be created; choose a "
                        "folder you can write")


def _is_tmp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


__all__ = ["ANALYSIS_FILES", "RUN_FILES", "RUN_SUBDIRS", "check_output_folder", "check_name", "foreign_entries", "is_run_folder", "remove_run_folder",
           "has_resumable_run", "clean_stale_tmp", "nearest_dir", "check_creatable"]
