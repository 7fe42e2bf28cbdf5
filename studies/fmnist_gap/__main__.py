"""``python -m studies.fmnist_gap --profile quick --report docs/results/fmnist_gap_quick.md``"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from aidkd.errors import UserError

    ap = argparse.ArgumentParser(prog="python -m studies.fmnist_gap", description=__doc__)
    ap.add_argument("--profile", default="full", help="full (default: every variant and baseline), axis (the "
                    "teacher-side axis and the causal rows, about 2 h on 2 cores), quick (about 20 min), short (the "
                    "5-epoch setting of docs/results/fmnist_gap_short.md), v4 (evidence v4), probe-* (the noise-floor probes) or test (digits, for "
                    "the tests)")
    ap.add_argument("--report", help="where the Markdown report goes (its .json and plots beside it)")
    ap.add_argument("--out", help="where the stages go (default ~/aidkd-runs/fmnist-gap-<profile>)")
    ap.add_argument("--executor", default="pool", help="pool (default), inprocess, submitit-local or slurm")
    ap.add_argument("--workers", type=int, default=2, help="pool: worker processes (one thread each)")
    ap.add_argument("--report-only", action="store_true", help="only write the report from the finished stages")
    ap.add_argument("--ship-teachers", action="store_true", help="export the profile's finished teachers into "
                    "studies/fmnist_gap/teachers/ (safetensors + manifest.json), where later runs verify and use them")
    args = ap.parse_args(argv)
    try:
        if args.ship_teachers:
            from .ship import ship_teachers

            ship_teachers(args.profile, Path(args.out or f"~/aidkd-runs/fmnist-gap-{args.profile}").expanduser())
            return 0
        if not args.report:
            raise UserError("--report is needed: where the Markdown report goes (e.g. --report R.md)")
        path = run(args.profile, args.report, out=args.out, executor=args.executor, workers=args.workers,
                   report_only=args.report_only)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    return 0


def run(profile: str, report: str | Path, out: str | Path | None = None, executor: str = "pool", workers: int = 2,
        report_only: bool = False) -> Path:
    """Run the study's stages (reusing the finished ones) and write the report to ``report``."""
    from aidkd.files.rundir import check_report_file
    from aidkd.stages import make_executor

    from .plan import check_profile, collect, run_study
    from .render import write_report
    from .v4 import write_v4_report

    settings = check_profile(profile)
    for p in (Path(report), Path(report).with_suffix(".json")):  # refused before the study runs, not after it
        check_report_file(p)
    root = Path(out or f"~/aidkd-runs/fmnist-gap-{profile}").expanduser()
    if report_only:
        R = collect(profile, root)
    else:
        R = run_study(profile, root, make_executor(executor, workers, folder=root / "jobs"))
    writer = write_v4_report if settings.get("plan") == "v4" else write_report
    return writer(profile, root, R, Path(report))


if __name__ == "__main__":
    sys.exit(main())
