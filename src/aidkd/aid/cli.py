"""The AID commands of ``aidkd``: ``analyze``, ``adapt`` and ``pipeline`` (thin layers over the Python API).

    aidkd analyze --teacher T.pt --student S.pt [--data digits] [--split test] [--tau 4] [--out DIR]
    aidkd analyze --teacher T.pt                  (the teacher's inner-class information I_T only)
    aidkd analyze --ladder --teacher small=A.pt --teacher large=B.pt --student S.pt [--distilled small=SA.pt ...]
    aidkd adapt --config pipeline/digits_quick [overrides]
    aidkd pipeline --config pipeline/digits_quick [overrides] [--overwrite]
"""
from __future__ import annotations

import argparse
import json

from ..errors import UserError

EXAMPLES = {
    "analyze": "aidkd analyze --teacher runs/t/checkpoints/best.pt --student runs/s/checkpoints/best.pt --out runs/analysis",
    "adapt": "aidkd adapt --config pipeline/digits_quick output.dir=runs/digits",
    "pipeline": "aidkd pipeline --config pipeline/digits_quick base.train.epochs=5 seeds=[0,1,2]",
}


def _split_labelled(value: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); a bare path -> (None, PATH)."""
    if "=" in value:
        name, path = value.split("=", 1)
        if name and "/" not in name:
            from ..files.rundir import check_name

            return check_name(name, "the NAME of NAME=CHECKPOINT"), path
    return None, value


def cmd_analyze(args) -> int:
    from ..files.rundir import ANALYSIS_FILES, claim_folder
    from .checkpoint_analysis import analyze_checkpoints, analyze_ladder_checkpoints

    claim_folder(args.out, "--out", ANALYSIS_FILES, (".png",))  # refused before any work; marked when written

    teachers = [_split_labelled(v) for v in (args.teacher or [])]
    if not teachers:
        raise UserError("aidkd analyze needs --teacher CHECKPOINT (with --ladder: --teacher NAME=CHECKPOINT, repeated)")
    if args.ladder:
        labelled = []
        for name, path in teachers:
            if name is None:
                raise UserError(f"--ladder: give each teacher as NAME=CHECKPOINT (got {path!r})")
            labelled.append((name, path))
        distilled = {}
        for v in args.distilled or []:
            name, path = _split_labelled(v)
            if name is None:
                raise UserError(f"--distilled: give NAME=CHECKPOINT with the teacher's NAME (got {path!r})")
            distilled[name] = path
        res = analyze_ladder_checkpoints(labelled, args.student, student_name=args.student_name, distilled=distilled,
                                         data=args.data, split=args.split, tau=args.tau, out_dir=args.out,
                                         overrides=args.overrides, device=args.device)
        for key in ("rows", "rows_distilled"):
            for r in res.get(key, []):
                print(f"{key[5:] or 'student'} {r['name']:>16}: params {r['teacher_params']:>10,}  L_KD {r['kd']:.4f}  "
                      f"L_CS {r['cs']:.4f}  L_IC {r['ic']:.4f}  (IC share {r['ic_fraction']:.2f})  "
                      f"teacher {r['teacher_acc']:.2f}%  student {r['student_acc']:.2f}%")
        print(f"written: {args.out}/ladder.json " + " ".join(res["plots"]))
        return 0
    if len(teachers) != 1:
        raise UserError("several --teacher given: add --ladder to compare a ladder of teachers")
    if args.distilled:
        raise UserError("--distilled belongs to the --ladder form")
    name, path = teachers[0]
    bad = [k for k in args.inner_classes or [] if not k.isdigit()]
    if bad:
        raise UserError(f"--inner-classes {bad[0]!r} is not a class index (0, 1, 2, ...)")
    inner = [int(k) for k in args.inner_classes] if args.inner_classes else None
    res = analyze_checkpoints(path, args.student, teacher_name=args.teacher_name or name, student_name=args.student_name,
                              data=args.data, split=args.split, tau=args.tau, out_dir=args.out,
                              overrides=args.overrides, device=args.device, inner_classes=inner)
    keys = ("kd", "cs", "ic", "ic_fraction", "teacher_acc", "student_acc", "teacher_info", "student_info", "agreement")
    if args.json:
        print(json.dumps({k: res[k] for k in (keys if args.student else ("teacher_acc", "teacher_info"))}))
    else:
        where = f"{res['dataset']}/{res['split']} (tau {args.tau:g}, n={res['num_samples']})"
        if args.student:
            print(f"{where}: L_KD {res['kd']:.4f} = L_CS {res['cs']:.4f} + L_IC {res['ic']:.4f}  "
                  f"(IC share {res['ic_fraction']:.2f});  teacher {res['teacher_acc']:.2f}%  "
                  f"student {res['student_acc']:.2f}%")
            print(f"inner-class information: I_T {res['teacher_info']:.4f}  I_S {res['student_info']:.4f};  "
                  f"inner-class agreement rho {res['agreement']:.4f}")
        else:
            print(f"{where}: inner-class information I_T {res['teacher_info']:.4f};  top-1 {res['teacher_acc']:.2f}%")
        print(f"written: {args.out}/analysis.json " + " ".join(res.get("plots", [])))
    return 0


def cmd_adapt(args) -> int:
    from .pipeline import load_pipeline_config, run_adapt

    cfg = load_pipeline_config(args.config, args.overrides)
    with _stage_progress(cfg, args.quiet) as bar:
        out = run_adapt(cfg, overwrite=args.overwrite, on_epoch_end=bar.hook, verbose=not bar.enabled)
    r = out["report"]
    print(f"adapted teacher: {out['teacher']}  (objective {r['objective']}, S_p {r.get('reference_model')}, "
          f"report: {out['stage']}/report.json, {r['wall_time_s']:.1f} s)")
    split = "test" if r["objective"] != "projection" else r["eval_split"]
    for name, x in ((split, r), ("train", r.get("train") or None)):
        if x:
            print(f"{name:>5}: teacher top-1 {x['teacher_acc_before']:.2f} -> {x['teacher_acc_after']:.2f};  vs S_p: "
                  f"L_CS {x['cs_before']:.4f} -> {x['cs_after']:.4f},  L_IC {x['ic_before']:.4f} -> "
                  f"{x['ic_after']:.4f},  I_T {x['teacher_info_before']:.4f} -> {x['teacher_info_after']:.4f},  "
                  f"agreement {x['agreement_before']:.3f} -> {x['agreement_after']:.3f}")
    if r.get("acc_warning"):
        print(f"WARNING: the adapted teacher lost {r['acc_drop']:.2f} accuracy points, more than the tolerance of "
              f"{r['acc_tolerance']:.2f}")
    return 0


def cmd_pipeline(args) -> int:
    from .pipeline import load_pipeline_config, run_pipeline

    from ..stages import PoolExecutor

    cfg = load_pipeline_config(args.config, args.overrides)
    with _stage_progress(cfg, args.quiet) as bar:
        out = run_pipeline(cfg, overwrite=args.overwrite, on_epoch_end=bar.hook, verbose=not bar.enabled,
                           executor=PoolExecutor(args.workers) if args.workers > 1 else None)
    print(open(out["table"]).read())
    return 0


def _stage_progress(cfg, quiet: bool):
    """A progress bar per stage (off with --quiet, in CI and when stderr is not a terminal)."""
    from ..progress import StageProgress, progress_enabled, set_quiet, stage_epochs

    if quiet:
        set_quiet()
    return StageProgress(progress_enabled(quiet), stage_epochs(cfg))


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True,
                   help="pipeline YAML file, or a shipped name such as pipeline/digits_quick")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. base.train.epochs=5 aid.lambda_ic=2")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute every stage even if its output exists (stage folders are keyed by config "
                        "fingerprint, so a changed config never needs this)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub) -> None:
    """Add ``analyze``, ``adapt`` and ``pipeline`` to the ``aidkd`` subcommands."""
    p = sub.add_parser("analyze", help="decompose KD(teacher || student) into L_CS and L_IC on a split, with plots",
                       description="Decompose the KD loss of a teacher-student pair into class-wise similarity (L_CS) "
                                   "and inner-class distribution (L_IC). Example: " + EXAMPLES["analyze"])
    p.add_argument("--teacher", action="append", metavar="[NAME=]CHECKPOINT",
                   help="teacher checkpoint; with --ladder, NAME=CHECKPOINT, repeated")
    p.add_argument("--teacher-name", help="teacher architecture (needed only for a published state dict)")
    p.add_argument("--student", help="student checkpoint (without it: the teacher's inner-class information I_T)")
    p.add_argument("--student-name", help="student architecture (needed only for a published state dict)")
    p.add_argument("--ladder", action="store_true", help="several teachers against one student: ladder.png")
    p.add_argument("--distilled", action="append", metavar="NAME=CHECKPOINT",
                   help="with --ladder: the student distilled from teacher NAME (the residual KD loss), repeated")
    p.add_argument("--data", help="dataset name (default: the one the checkpoints were trained on)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--tau", type=float, default=4.0, help="temperature (default 4)")
    p.add_argument("--out", default="runs/analysis", help="folder for analysis.json and the PNG plots")
    p.add_argument("--inner-classes", nargs="+", metavar="K",
                   help="classes whose inner-class distributions to plot (default: the 2 with the largest L_IC)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the totals as one JSON object")
    p.add_argument("overrides", nargs="*", help="data overrides, e.g. data.root=/data data.val_split=0.1")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("adapt", help="adapt a teacher to a pretrained student (AID): the pipeline up to the adapt "
                       "stage", description="Train or load the teacher and the pretrained student S_p, then adapt the "
                       "teacher (by default fine-tuned with the KD loss towards S_p, the published AID). Example: "
                       + EXAMPLES["adapt"])
    _add_config_args(p)
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("pipeline", help="the whole AID flow from one config, with a results table",
                       description="Teacher, vanilla and reference students, adaptation, distillation with each "
                                   "method from the original and the adapted teacher, results table. Finished "
                                   "stages are skipped. Example: " + EXAMPLES["pipeline"])
    _add_config_args(p)
    p.add_argument("--workers", type=int, default=1, help="run the distillations in this many processes (default 1: "
                   "one after the other, here)")
    p.set_defaults(func=cmd_pipeline)


__all__ = ["register"]
