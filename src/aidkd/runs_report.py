"""``aidkd report RUN...``: a comparison table of finished runs, printed and written as Markdown.

A RUN argument is a run directory (one holding ``summary.json``) or any folder above run directories (a
pipeline's output, a benchmark's, ``runs/``): every run below it is found. Runs that differ only in their seed
are one row: the table gives the mean +- std over the seeds of the test accuracy at the selected epoch
(``best``, the checkpoint ``best.pt`` holds), at the last epoch (``last``) and at the best test epoch (a selection
on the test set, the number published DKD-style tables report), and the wall time per run.
"""
from __future__ import annotations

import hashlib
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .config import safe_load_yaml
from .errors import UserError
from .files.rundir import write_report_text

SUMMARY = "summary.json"


@dataclass
class RunGroup:
    """Runs of one configuration (all but the seed equal)."""

    label: str
    key: str
    runs: list[dict] = field(default_factory=list)

    def values(self, name: str) -> list[float]:
        return [float(r[name]) for r in self.runs if isinstance(r.get(name), (int, float)) and r[name] >= 0]

    @property
    def seeds(self) -> list[int]:
        return sorted(r.get("seed", 0) for r in self.runs)


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Every run directory at or below ``paths`` (in order, each once)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{str(p)!r} not found: give run directories or folders that hold them")
        # regular files only: a FIFO or a folder of that name is not a run's summary (reading a FIFO would block)
        dirs = [p] if (p / SUMMARY).is_file() else sorted(s.parent for s in p.rglob(SUMMARY) if s.is_file())
        if not dirs:
            raise UserError(f"no finished run in {str(p)!r} (a run directory holds {SUMMARY})")
        found += [d.resolve() for d in dirs if d.resolve() not in found]
    return found


#: the summary fields the table reads, with the types a run writes them in (None is allowed for each)
SUMMARY_FIELDS = {"seed": int, "arch": str, "method": str, "teacher": str, "selection": str,
                  "best_test_acc": (int, float), "last_test_acc": (int, float), "best_test_epoch_acc": (int, float),
                  "wall_time_s": (int, float)}


def read_run(run_dir: Path) -> tuple[dict, dict]:
    """(summary, config) of a run folder. A summary that is not a JSON object of the fields a run writes, or a
    config.yaml that is not a YAML mapping, is refused in one line naming the file."""

    path = run_dir / SUMMARY
    fix = "rerun that run, or leave its folder out"
    try:
        s = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is unreadable ({type(e).__name__}); {fix}") from None
    if not isinstance(s, dict):
        raise UserError(f"{path} is not a run summary (a JSON {type(s).__name__}, not an object); {fix}")
    for key, kind in SUMMARY_FIELDS.items():
        v = s.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, kind)):
            raise UserError(f"{path}: {key} is {v!r}, which no run writes; {fix}")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        return s, {}
    try:
        config = safe_load_yaml(cfg_path.read_text(encoding="utf-8"), str(cfg_path))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_path} is unreadable ({type(e).__name__}); {fix}") from None
    if config is not None and not isinstance(config, dict):
        raise UserError(f"{cfg_path} is not a run config (a YAML mapping); {fix}")
    return s, config or {}


def group_key(config: dict, summary: dict) -> str:
    """A hash of the run's configuration without its seed and output folder."""
    cfg = {k: v for k, v in config.items() if k not in ("output", "meta")}
    if isinstance(cfg.get("train"), dict):
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k != "seed"}
    if not cfg:  # no config.yaml: the summary's identity
        cfg = {k: summary.get(k) for k in ("arch", "method", "teacher", "dataset", "epochs")}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _label(run_dir: Path, summary: dict) -> str:
    # pipeline stage folders: kd-s0-<fingerprint> -> kd, teacher-<fingerprint> -> teacher
    name = re.sub(r"-[0-9a-f]{10}$", "", run_dir.name)
    name = re.sub(rf"-s{summary.get('seed')}$", "", name)
    desc = f"{summary.get('arch')} {summary.get('method')}"
    if summary.get("teacher"):
        desc += f" <- {summary['teacher']}"
    return f"{name} ({desc})" if name not in desc else desc


def group_runs(run_dirs: list[Path]) -> list[RunGroup]:
    groups: dict[str, RunGroup] = {}
    for d in run_dirs:
        s, config = read_run(d)
        key = group_key(config, s)
        if key not in groups:
            groups[key] = RunGroup(_label(d, s), key)
        groups[key].runs.append({**s, "run_dir": str(d)})
    labels = [g.label for g in groups.values()]
    for g in groups.values():
        if labels.count(g.label) > 1:  # same name, other settings: tell them apart by the config hash
            g.label += f" [{g.key[:6]}]"
        seeds = [r.get("seed") for r in g.runs]
        if len(set(seeds)) != len(seeds):  # the same run copied twice would count twice
            raise UserError(f"{g.label}: two runs with the same seed and config ({', '.join(r['run_dir'] for r in g.runs)}); "
                            "give one of them")
    return list(groups.values())


def _pm(xs: list[float], digits: int = 2) -> str:
    if not xs:
        return "-"
    m = statistics.fmean(xs)
    return f"{m:.{digits}f}" if len(xs) == 1 else f"{m:.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


COLUMNS = ("run", "seeds", "best (selected)", "last", "best test epoch", "wall s / run")


def table_rows(groups: list[RunGroup]) -> list[list[str]]:
    rows = []
    for g in groups:
        sel = {r.get("selection") for r in g.runs}
        best = _pm(g.values("best_test_acc"))
        if sel and sel != {None}:
            best += f" ({'/'.join(sorted(str(s) for s in sel))})"
        rows.append([g.label, ",".join(map(str, g.seeds)), best, _pm(g.values("last_test_acc")),
                     _pm(g.values("best_test_epoch_acc")), _pm(g.values("wall_time_s"), 1)])
    return rows


def report_markdown(groups: list[RunGroup]) -> str:
    n = sum(len(g.runs) for g in groups)
    legend = ("Test top-1 (%), mean ± std over the seeds: at the selected epoch (the split that selected it in "
              "brackets), at the last epoch, and at the best test epoch (a selection on the test set).")
    lines = [f"# Runs compared ({n} run{'s' if n != 1 else ''})", "", legend, "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(groups)]
    lines += ["", "Runs:", ""] + [f"- {r['run_dir']}" for g in groups for r in g.runs] + [""]
    return "\n".join(lines)


def write_report(paths: list[str | Path], out: str | Path | None, overwrite: bool = False) -> tuple[list[RunGroup], Path | None]:
    """Group the runs found at ``paths``, write the Markdown table to ``out`` (refused when it exists, unless
    ``overwrite``) and return (groups, the written path)."""
    groups = group_runs(find_runs(paths))
    written = None
    if out is not None:
        written = Path(out)
        if written.is_dir():
            raise UserError(f"{written} is a folder; --out takes a Markdown file name")
        if written.exists() and not overwrite:
            raise UserError(f"{written} exists; pass --overwrite to replace it or --out for another file")
        write_report_text(written, report_markdown(groups), "--out")
    return groups, written


def print_report(groups: list[RunGroup]) -> None:

    t = Table(title="runs compared: test top-1 %, mean ± std over seeds")
    for c in COLUMNS:
        t.add_column(c, justify="left" if c in ("run", "seeds") else "right")
    for r in table_rows(groups):
        t.add_row(*r)
    Console(width=160).print(t)


__all__ = ["RunGroup", "find_runs", "group_key", "group_runs", "print_report", "read_run", "report_markdown",
           "table_rows", "write_report"]
