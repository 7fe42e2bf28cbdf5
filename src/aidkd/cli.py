"""The ``aidkd`` command: a thin layer over the Python API.

Every user error (missing file, bad config, unknown name, corrupt or mismatched checkpoint, dataset not found)
exits with code 2 and one line on stderr, without a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import UserError

EXAMPLES = {
    "train": "aidkd train --config fmnist/teacher train.epochs=5 optim.lr=0.1",
    "distill": "aidkd distill --config cifar100/dkd/res32x4_res8x4 teacher.checkpoint=runs/t/checkpoints/best.pt",
}


def _add_run_args(p: argparse.ArgumentParser, resume_options: bool = True) -> None:
    p.add_argument("--config", "-c", help="YAML config file (sections: data, model, teacher, method, optim, sched, train, output)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=0.1 train.epochs=5")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run directory of the same name (only a folder of run files is deleted)")
    if not resume_options:
        return
    p.add_argument("--resume-with-changes", action="store_true",
                   help="continue an unfinished run from its last epoch with changed optim/sched settings (e.g. a "
                        "lower optim.lr after a non-finite loss); the change is recorded in config_history.jsonl")
    p.add_argument("--allow-world-size-change", action="store_true",
                   help="resume a run started with another number of processes (the data order changes)")


def load_run_config(args):
    """The run config of a training command: the file and overrides, with ``model.name`` required; the notable
    defaults left unset are named on stdout (stderr is kept for the one-line errors)."""
    from .config import config_from_dict, defaults_used, load_config_dict, require_model_name

    d = load_config_dict(args.config, args.overrides)
    require_model_name(d, args.config)
    cfg = config_from_dict(d, str(args.config) if args.config else "(overrides)")
    unset = defaults_used(d, cfg)
    if unset:
        print(f"aidkd: defaults used: {', '.join(unset)}")
    return cfg


def cmd_train(args, require_teacher: bool = False) -> int:
    from .engine import train

    cfg = load_run_config(args)
    if require_teacher and cfg.method.name == "vanilla":
        raise UserError("aidkd distill needs a distillation method: set method.name (e.g. kd, dkd, dist)")
    summary = train(cfg, overwrite=args.overwrite, resume_with_changes=args.resume_with_changes,
                    allow_world_size_change=args.allow_world_size_change)
    _print_summary(summary)
    return 0


def _print_summary(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{s['run_dir']}")
    for col in ("model", "method", "selection", "best (sel.)", "test @ best", "last test", "best test-epoch", "wall s"):
        t.add_column(col)
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    t.add_row(s["arch"], s["method"], s["selection"], fmt(s["best_acc"]), fmt(s["best_test_acc"]),
              fmt(s["last_test_acc"]), fmt(s["best_test_epoch_acc"]), fmt(s["wall_time_s"]))
    Console().print(t)


def cmd_takd(args) -> int:
    from .takd import run_takd

    cfg = load_run_config(args)
    for s in run_takd(cfg, [a for a in args.assistants.split(",") if a], overwrite=args.overwrite):
        _print_summary(s)
    return 0


def cmd_dgkd(args) -> int:
    from .takd import run_dgkd

    cfg = load_run_config(args)
    for s in run_dgkd(cfg, [a for a in args.assistants.split(",") if a], overwrite=args.overwrite):
        _print_summary(s)
    return 0


def cmd_eval(args) -> int:
    from .checkpoint_eval import evaluate_checkpoint

    res = evaluate_checkpoint(args.checkpoint, dataset=args.data, split=args.split, model=args.model,
                              overrides=args.overrides, device=args.device)
    print(json.dumps(res) if args.json else
          f"{res['model']} on {res['dataset']}/{res['split']}: top1 {res['top1']:.2f}  top5 {res['top5']:.2f}  "
          f"loss {res['loss']:.4f}  (n={res['n']})")
    return 0


def cmd_models(args) -> int:
    from .models import model_table

    hw = {"cifar100": 32, "cifar10": 32, "fashion_mnist": 28, "digits": 8, "tiny_imagenet": 64, "imagenet": 224}
    chans = {"fashion_mnist": 1, "digits": 1}
    ncls = {"cifar100": 100, "cifar10": 10, "fashion_mnist": 10, "digits": 10, "tiny_imagenet": 200, "imagenet": 1000}
    if args.dataset not in hw:
        raise UserError(f"unknown dataset {args.dataset!r} for aidkd models; choose one of: {', '.join(hw)}")
    family = args.family or ("imagenet" if args.dataset == "imagenet" else "cifar")
    rows = model_table(num_classes=ncls[args.dataset], in_chans=chans.get(args.dataset, 3),
                       input_hw=hw[args.dataset], family=family)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"models at {args.dataset} input size")
    for col in ("name", "params", "MMACs", "stage feats (C,H,W)", "pooled"):
        t.add_column(col)
    for r in rows:
        feats = " ".join("x".join(str(d) for d in s) for s in r["feats"])
        t.add_row(r["name"], f"{r['params']:,}", f"{r['macs'] / 1e6:.1f}", feats, str(r["pooled"][0]))
    Console(width=200).print(t)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    seeds = [int(x) for x in args.seeds.split(",") if x.strip()] if args.seeds else None
    run_demo(out=args.out, quick=args.quick, seeds=seeds, quiet=args.quiet, overwrite=args.overwrite,
             overrides=args.overrides)
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse with the CLI's error format: one line on stderr, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"aidkd: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="aidkd", description="Knowledge distillation with AID teacher adaptation.")
    ap.add_argument("--version", action="version", version=f"aidkd {__import__('aidkd').__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from scratch (a teacher or a vanilla student)",
                       description="Train a model from scratch. Example: " + EXAMPLES["train"])
    _add_run_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="distil a student from a teacher checkpoint with any method",
                       description="Distil a student. Example: " + EXAMPLES["distill"])
    _add_run_args(p)
    p.set_defaults(func=lambda a: cmd_train(a, require_teacher=True))

    p = sub.add_parser("takd", help="TAKD: distil through assistant(s), teacher -> assistants -> student",
                       description="Each link is a run of the config's method from the previous link's best "
                                   "checkpoint; finished links are skipped, an interrupted one resumes.")
    _add_run_args(p, resume_options=False)
    p.add_argument("--assistants", required=True, help="comma-separated assistant models, largest first")
    p.set_defaults(func=cmd_takd)

    p = sub.add_parser("dgkd", help="DGKD: train assistants, then the student, each from the teacher and every "
                                    "assistant above it",
                       description="Each link is a run of method dgkd whose guides are the teacher and the links "
                                   "trained before it; finished links are skipped, an interrupted one resumes.")
    _add_run_args(p, resume_options=False)
    p.add_argument("--assistants", required=True, help="comma-separated assistant models, largest first")
    p.set_defaults(func=cmd_dgkd)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a split")
    p.add_argument("checkpoint", help="a checkpoint written by aidkd (best.pt / last.pt) or a published state dict")
    p.add_argument("--data", help="dataset name (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--model", help="architecture name (needed for a published state dict)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", help="data overrides, e.g. data.root=/data")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("models", help="list every model with parameters, MACs and feature shapes")
    p.add_argument("--dataset", default="cifar100", help="input size and classes of this dataset (default cifar100)")
    p.add_argument("--family", choices=["cifar", "imagenet", "all"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="the AID flow end to end on scikit-learn's digits (embedded data, no network)",
                       description="Teacher, vanilla and reference students, AID adaptation, KD / DKD students from "
                                   "the original and the adapted teacher; tables, the L_CS / L_IC decomposition and "
                                   "demo.png. About 1.5 min on 2 CPU cores (--quick: about 30 s).")
    p.add_argument("--out", default="runs/demo", help="where the demo's stages go (finished stages are reused)")
    p.add_argument("--quick", action="store_true", help="the 30-second version: one seed, short runs")
    p.add_argument("--seeds", help="comma-separated seeds (default: 0,1,2; --quick: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no tables")
    p.add_argument("--overwrite", action="store_true", help="rerun every stage instead of reusing finished ones")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the demo's pipeline config, e.g. aid.lambda_ic=2")
    p.set_defaults(func=cmd_demo)

    _register_extra(sub)
    _register_results(sub)
    return ap


def cmd_report(args) -> int:
    from .runs_report import print_report, write_report

    groups, written = write_report(args.runs, None if args.out == "-" else args.out, overwrite=args.overwrite)
    print_report(groups)
    if written is not None:
        print(f"written: {written}")
    return 0


def cmd_export(args) -> int:
    from .export import export_safetensors

    if args.format != "safetensors":
        raise UserError(f"unknown export format {args.format!r}; choose safetensors")
    weights, meta = export_safetensors(args.source, args.out, overwrite=args.overwrite)
    print(f"written: {weights}\nwritten: {meta}")
    return 0


def _register_results(sub) -> None:
    """Commands that compare and share finished runs."""
    p = sub.add_parser("report", help="compare finished runs: best / last accuracy, mean +- std over seeds, wall time",
                       description="Each RUN is a run directory or a folder above run directories (a pipeline's "
                                   "output, runs/). Runs that differ only in the seed are one row.")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", default="report.md", help="the Markdown file to write (default report.md; - for none)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write a run's student (or a checkpoint) as safetensors plus a JSON of its "
                                      "architecture, classes and normalisation")
    p.add_argument("source", metavar="RUN_OR_CKPT", help="a run directory (its checkpoints/best.pt) or a checkpoint")
    p.add_argument("--format", default="safetensors", help="safetensors (the only format)")
    p.add_argument("--out", help="output file (default: beside the source, <name>.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=cmd_export)


def _register_extra(sub) -> None:
    """Commands of the AID and benchmark layers."""
    from .aid.cli import register as reg_aid
    from .bench.cli import register as reg_bench

    reg_aid(sub)
    reg_bench(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # dotted overrides may also come after the flags (argparse leaves those unparsed)
    if extra and hasattr(args, "overrides") and not any(a.startswith("-") for a in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"aidkd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aidkd: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
