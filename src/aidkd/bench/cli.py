"""``aidkd bench``: the reproduction suites (CIFAR-100, ImageNet) against the published numbers.

The Fashion-MNIST capacity-gap study lives outside the package: ``python -m studies.fmnist_gap`` from the
repository root (docs/results/README.md).
"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a reproduction suite (cifar100 or imagenet; GPU) or the throughput "
                       "benchmark")
    p.add_argument("suite", help="cifar100, imagenet or throughput")
    p.add_argument("--out", default="runs", help="where the runs go (default runs/)")
    p.add_argument("--report", help="where the Markdown table goes (default OUT/<suite>_suite.md)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per run")
    p.add_argument("--filter", help="run only entries whose name contains this")
    p.add_argument("--rounds", type=int, default=3, help="throughput: interleaved rounds (at least 3)")
    p.add_argument("--steps", type=int, default=10, help="throughput: timed steps per variant and round")
    p.add_argument("--device", default="cpu", help="throughput: cpu, cuda, or cpu,cuda")
    p.add_argument("--full-run", action="store_true", help="throughput: instead, time a whole 240-epoch "
                   "resnet32x4 -> resnet8x4 KD run extrapolated from --epochs real epochs")
    p.add_argument("--lean-only", action="store_true", help="throughput: instead, measure only the lean "
                   "teacher's choices (folding, inference mode, channels_last) in many short rounds")
    p.add_argument("--epochs", type=int, default=2, help="throughput --full-run: epochs actually run")
    p.add_argument("--num-train", type=int, default=50000, help="throughput --full-run: training images")
    p.add_argument("--note", default="", help="throughput: a sentence for the report (e.g. the machine)")
    p.add_argument("overrides", nargs="*", help="config overrides applied to every run, e.g. train.epochs=2")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    if args.quiet:
        from ..progress import set_quiet

        set_quiet()
    if args.suite == "throughput":
        from .throughput import run_full_run, run_lean_choices, run_throughput

        if args.lean_only:
            run_lean_choices(rounds=args.rounds, steps=args.steps, device=args.device, report=args.report,
                             note=args.note)
        elif args.full_run:
            run_full_run(device=args.device, measured_epochs=args.epochs, num_train=args.num_train,
                         report=args.report, note=args.note)
        else:
            run_throughput(rounds=args.rounds, steps=args.steps, devices=tuple(args.device.split(",")),
                           report=args.report, note=args.note)
        return 0
    from .suites import run_suite

    return run_suite(args.suite, seeds=args.seeds, out=args.out, name_filter=args.filter, overrides=args.overrides,
                     report=args.report)
