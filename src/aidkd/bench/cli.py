"""``aidkd bench``: the reproduction suites (CIFAR-100, ImageNet) against the published numbers.

The Fashion-MNIST capacity-gap study lives outside the package: ``python -m benchmarks.fmnist_gap`` from the
repository root (README, "Benchmarks").
"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a reproduction suite (cifar100 or imagenet; GPU)")
    p.add_argument("suite", help="cifar100 or imagenet")
    p.add_argument("--out", default="runs", help="where the runs go (default runs/)")
    p.add_argument("--report", help="where the Markdown table goes (default OUT/<suite>_suite.md)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per run")
    p.add_argument("--filter", help="run only entries whose name contains this")
    p.add_argument("overrides", nargs="*", help="config overrides applied to every run, e.g. train.epochs=2")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    if args.quiet:
        from ..progress import set_quiet

        set_quiet()
    from .suites import run_suite

    return run_suite(args.suite, seeds=args.seeds, out=args.out, name_filter=args.filter, overrides=args.overrides,
                     report=args.report)
