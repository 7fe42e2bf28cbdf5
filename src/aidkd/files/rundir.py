"""Run folders: what may be named, what counts as one, and the only way aidkd deletes one.

Every command that writes results (``train``/``distill``, ``takd``, ``pipeline`` stages, ``adapt``, benchmarks)
writes into ``<output.dir>/<output.name>``. This module is the single rule for those folders:

* :data:`MARKER` -- the file aidkd writes first into every output folder it creates (or finds empty): the mark
  that the folder is aidkd's, naming its kind and the entries aidkd writes there. A folder is never judged aidkd's
  by the names of the files in it: one without the mark is the user's, and aidkd neither deletes it nor writes
  into it (:func:`claim_folder`); a run folder from a version of aidkd before the mark may be resumed, not deleted.
* :func:`check_name` -- a run name is one plain path component (no ``/``, ``\\``, ``.``, ``..``, absolute
  path, NUL or leading ``~``); anything else is a :class:`~aidkd.errors.UserError` before any file is touched.
* :func:`foreign_entries` / :func:`is_run_folder` -- what in a folder is not a run file: :data:`RUN_FILES` at its
  top level, and the folders :data:`RUN_SUBDIRS` holding only files (checkpoints, TensorBoard events, stage
  outputs). Symbolic links never count as run files.
* :func:`remove_run_folder` -- ``--overwrite`` deletes a folder only when it carries the mark and holds nothing
  but run files; otherwise it refuses with one line naming the reason. Nothing else in aidkd calls
  ``shutil.rmtree`` on a user-named path.
* :func:`has_resumable_run` -- a folder without ``checkpoints/last.pt`` holds no run to resume (a run that failed
  before its first epoch leaves at most a config): callers treat it as empty and may reuse it.
* :func:`clean_stale_tmp` -- remove the ``checkpoints/.*.tmp`` files a killed checkpoint write leaves behind.
* :func:`claim_folder` / :func:`mark_folder` -- the same rule for a command's output folder that is not a run
  (``aidkd analyze --out``, the pipeline's ``output.dir``, ``aidkd demo --out``): new, empty or marked by aidkd,
  and holding nothing but that command's outputs.
* :func:`write_report_text` / :func:`write_report_json` -- a report file (Markdown, or its JSON) is aidkd's only
  if it carries the mark aidkd writes into it (the Markdown's last line, the JSON's ``written_by``): a rerun
  replaces its own report, never a user's file of that name.
* :func:`check_creatable` -- refuse, before anything is written, an output path under a regular file or in a
  folder that cannot be written.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import UserError
from .checkpoint import atomic_write_text, read_json_object

#: files a run (or a pipeline stage) writes at the top of its folder
RUN_FILES = frozenset({
    "config.yaml", "config_history.jsonl", "metrics.jsonl", "summary.json", "curves.png", "stage.json", "report.json",
    "teacher.pt", "results.json", "results.md", "pipeline.json",
})
#: folders a run writes; they may hold files only (no further folders, no links)
RUN_SUBDIRS = frozenset({"checkpoints", "tb"})
#: the mark aidkd writes first into an output folder it creates: ``{"written_by": "aidkd", "kind": ..., "entries":
#: [...]}``
MARKER = ".aidkd-folder.json"


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


def _written_by_aidkd(obj: dict | None) -> bool:
    return obj is not None and obj.get("written_by") == "aidkd"


def folder_mark(folder: str | Path) -> dict | None:
    """The mark of a folder aidkd created (its :data:`MARKER`), or None: no mark, a link, or not aidkd's JSON."""
    mark = read_json_object(Path(folder) / MARKER)
    return mark if _written_by_aidkd(mark) else None


def mark_folder(folder: str | Path, kind: str, entries: frozenset[str] | tuple[str, ...] = ()) -> Path:
    """Create ``folder`` (and its parents) and write the mark into it, before anything else; return it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {str(folder)!r} ({e.strerror}); choose another folder") from None
    if folder_mark(folder) is None:
        tmp = folder / f".{MARKER}.tmp"
        tmp.write_text(json.dumps({"written_by": "aidkd", "kind": kind, "entries": sorted(entries)}))
        os.replace(tmp, folder / MARKER)
    return folder


def claim_folder(folder: str | Path, key: str, files: frozenset[str] = frozenset(), suffixes: tuple[str, ...] = (),
                 subdirs: bool = False) -> Path:
    """Refuse (one line naming ``key``) an output folder aidkd may not write into: a file or a link, one that cannot
    be created, a non-empty folder without aidkd's mark, or a marked one holding anything but the command's own
    outputs (``files``, names ending in ``suffixes``, and with ``subdirs`` any folder: a pipeline's stages).
    Nothing is written; return the folder as a Path."""
    folder = Path(folder).expanduser()
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UserError(f"{key}: {str(folder)!r} exists and is not a folder; choose another {key}")
    check_creatable(folder, key)
    if not folder.exists() or not any(folder.iterdir()):
        return folder
    if folder_mark(folder) is None:
        first = sorted(p.name for p in folder.iterdir())[0]
        raise UserError(f"{key}: {str(folder)!r} holds {first!r} and is not a folder aidkd created (it has no "
                        f"{MARKER}); aidkd does not write into it: choose another {key}")
    foreign = [e for e in foreign_entries(folder, files, suffixes, file_dirs=frozenset())
               if not (subdirs and (folder / e).is_dir() and not (folder / e).is_symlink())]
    if foreign:
        raise UserError(f"{key}: {str(folder)!r} holds {foreign[0]!r}, which this command did not write; aidkd "
                        f"does not write into such a folder: choose another {key}")
    return folder


#: the last line of every Markdown report aidkd writes: the mark that lets a rerun replace it (and nothing else)
REPORT_MARK = "<!-- written by aidkd -->"


def report_marked(path: str | Path) -> bool:
    """Whether an existing report file carries aidkd's mark: a JSON object with ``written_by: aidkd``, any other
    file :data:`REPORT_MARK` at its end."""
    p = Path(path)
    if p.suffix == ".json":
        return _written_by_aidkd(read_json_object(p))
    try:
        with open(p, "rb") as f:
            f.seek(max(0, p.stat().st_size - 256))
            return REPORT_MARK.encode() in f.read()
    except OSError:
        return False


def check_report_file(path: str | Path, key: str = "--report") -> Path:
    """Refuse, before any work, a report path aidkd may not write: a folder, a path under a file, a link, or an
    existing file without aidkd's mark (:func:`report_marked`)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{key}: {p} is a folder; {key} takes a file name")
    check_creatable(p.parent, key)
    if p.is_symlink() or (p.exists() and not report_marked(p)):
        raise UserError(f"{key}: {p} exists and was not written by aidkd (it carries no aidkd mark); move it away "
                        f"or choose another {key}")
    return p


def write_report_text(path: str | Path, text: str, key: str = "--report") -> Path:
    """Write a Markdown report atomically, ending in :data:`REPORT_MARK`, after :func:`check_report_file`."""
    p = check_report_file(path, key)
    atomic_write_text(p, text.rstrip("\n") + "\n\n" + REPORT_MARK + "\n")
    return p


def write_report_json(path: str | Path, obj: dict, key: str = "--report") -> Path:
    """Write a report's JSON atomically with ``written_by: aidkd``; refuse as :func:`write_report_text` does."""
    p = check_report_file(path, key)
    atomic_write_text(p, json.dumps({**obj, "written_by": "aidkd"}, indent=1, default=str) + "\n")
    return p


def own_folder(folder: str | Path, key: str, kind: str, files: frozenset[str] = frozenset(),
              suffixes: tuple[str, ...] = (), subdirs: bool = False) -> Path:
    """:func:`claim_folder`, then :func:`mark_folder`: the one call before a command writes its first output."""
    return mark_folder(claim_folder(folder, key, files, suffixes, subdirs), kind, files)


def foreign_entries(folder: str | Path, files: frozenset[str] = RUN_FILES, suffixes: tuple[str, ...] = (),
                    file_dirs: frozenset[str] = RUN_SUBDIRS) -> list[str]:
    """The entries of ``folder`` (relative paths, sorted) that are not run files; [] for a missing folder.

    ``files`` / ``suffixes``: the top-level file names (and name endings) that count as the command's own outputs
    (default: a run's; :data:`ANALYSIS_FILES` with ``(".png",)`` for ``aidkd analyze``); ``file_dirs``: the
    folders that may hold files only (a run's ``checkpoints/`` and ``tb/``)."""
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
            own = p.name in files or p.name == MARKER or _is_tmp(p.name) or p.name.endswith(suffixes or ("\0",))
            if not own:
                out.append(p.name)
        elif p.is_dir() and p.name in file_dirs:
            out += [f"{p.name}/{q.name}" for q in sorted(p.iterdir()) if q.is_symlink() or not q.is_file()]
        else:
            out.append(p.name)
    return out


def is_run_folder(folder: str | Path) -> bool:
    """True when ``folder`` is empty, or carries aidkd's mark and holds nothing but run files."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return False
    return not any(folder.iterdir()) or (folder_mark(folder) is not None and not foreign_entries(folder))


def remove_run_folder(folder: str | Path, key: str = "output.name") -> None:
    """Delete ``folder`` for ``--overwrite``; refuse (UserError, nothing deleted) unless aidkd marked it as a run
    folder and it holds nothing but run files."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_dir() and not folder.is_symlink() and folder_mark(folder) is None:
        raise UserError(f"--overwrite refused: {str(folder)!r} is not a folder aidkd created (it has no {MARKER}: "
                        f"a user's folder, or a run of an older aidkd); delete it yourself or choose another {key}")
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


__all__ = ["ANALYSIS_FILES", "MARKER", "REPORT_MARK", "RUN_FILES", "RUN_SUBDIRS", "check_creatable", "check_name", "claim_folder",
           "clean_stale_tmp", "folder_mark", "foreign_entries", "has_resumable_run", "is_run_folder", "mark_folder",
           "check_report_file", "nearest_dir", "own_folder", "remove_run_folder", "report_marked", "write_report_json", "write_report_text"]
