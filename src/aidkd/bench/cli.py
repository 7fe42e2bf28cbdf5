"""``aidkd bench``: the Fashion-MNIST capacity-gap benchmark and the reproduction suites."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark: fmnist-gap (CPU) or a reproduction suite (GPU)")
    p.add_argument("suite", help="fmnist-gap, or a suite name (see `aidkd bench list`)")
    p.add_argument("--quick", action="store_true", help="fmnist-gap: 1 seed, short runs (about 20 min on 2 cores)")
    p.add_argument("--profile", help="fmnist-gap: full (default), quick (= --quick) or short (the first, 5-epoch "
                   "setting, kept as a record)")
    p.add_argument("--out", help="where the runs go (default ~/aidkd-runs/<suite>)")
    p.add_argument("--workers", type=int, default=2, help="parallel worker processes (one thread each)")
    p.add_argument("--report", help="where the Markdown report goes (default docs/results/<suite>.md)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from finished jobs")
    p.add_argument("--seeds", type=int, default=1, help="suites: seeds per run")
    p.add_argument("--filter", help="suites: run only entries whose name contains this")
    p.add_argument("overrides", nargs="*", help="suites: config overrides applied to every run, e.g. train.epochs=2")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    if args.quiet:
        from ..progress import set_quiet

        set_quiet()
    if args.suite == "fmnist-gap":
        from .fmnist_gap import run_benchmark

        profile = args.profile or ("quick" if args.quick else "full")
        if args.quick and profile != "quick":
            from ..errors import UserError

            raise UserError(f"--quick and --profile {profile} contradict each other; pass one of them")
        out = run_benchmark(profile, out=args.out, workers=args.workers, report=args.report,
                            only_report=args.report_only)
        print(f"report written to {out}")
        return 0
    from .suites import run_suite

    return run_suite(args.suite, seeds=args.seeds, out=args.out, name_filter=args.filter, overrides=args.overrides,
                     report=args.report)
