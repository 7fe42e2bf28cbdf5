"""The pipeline's results as one JSON-ready dict: the teacher before/after adaptation, the decomposition, and per
method the students without and with AID (last and selected accuracy, mean +- std over seeds, paired gains)."""
from __future__ import annotations

import math
import statistics

from ...stages import StageResult
from .schema import PipelineConfig


def _stats(xs: list) -> dict:
    vals = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def _summary(r: StageResult) -> dict:
    return r.result.get("summary", {})


def _student_row(stages: dict[str, StageResult], names: list[str]) -> dict:
    res = [stages[n] for n in names]
    last = [_summary(r).get("last_test_acc") for r in res]
    best = [_summary(r).get("best_test_acc") for r in res]
    return {"stages": names, "last": last, "best": best, "last_stats": _stats(last), "best_stats": _stats(best),
            "selection": _summary(res[0]).get("selection") if res else None,
            "wall_time_s": [r.wall_time_s for r in res]}


def adaptation_cost(cfg: PipelineConfig, stages: dict[str, StageResult]) -> dict:
    """AID's own cost: the adapt stage's wall time against the mean wall time of one distillation from the
    adapted teacher (``fraction``; None when a time is unknown). Times are those recorded when each stage ran."""
    adapt = stages.get("adapt")
    runs = [stages[n].wall_time_s for m in cfg.methods for s in cfg.seeds if (n := f"aid-{m.key}-s{s}") in stages]
    runs = [t for t in runs if t]
    adapt_s = adapt.wall_time_s if adapt is not None else None
    distill_s = statistics.fmean(runs) if runs else None
    return {"adapt_s": adapt_s, "distill_s": distill_s,
            "fraction": adapt_s / distill_s if adapt_s is not None and distill_s else None}


def collect_results(cfg: PipelineConfig, stages: dict[str, StageResult], report: dict, wall_time_s: float) -> dict:
    """The results dict of a pipeline run: ``stages`` by name (as the plan ran them), ``report`` the adapt
    stage's report."""
    seeds = cfg.seeds
    t = stages["teacher"]
    acc_before = report.get("teacher_acc_before")
    acc_after = report.get("teacher_acc_after")
    if cfg.aid.mode == "projection":  # the report's numbers are on the projected training samples
        acc_split = "train (projected samples)"
    else:
        acc_split = report.get("eval_split", "test")
    methods = []
    for m in cfg.methods:
        base = _student_row(stages, [f"{m.key}-s{s}" for s in seeds])
        aid = _student_row(stages, [f"aid-{m.key}-s{s}" for s in seeds])
        gain = [a - b if a is not None and b is not None else None for a, b in zip(aid["last"], base["last"])]
        gain_best = [a - b if a is not None and b is not None else None for a, b in zip(aid["best"], base["best"])]
        methods.append({"method": m.key, "name": m.name, "params": m.params, "baseline": base, "aid": aid,
                        "gain_last": _stats(gain), "gain_best": _stats(gain_best)})
    out = {
        "dataset": cfg.base.data.name,
        "teacher": {"name": cfg.teacher.name, "checkpoint": str(t.checkpoint), "trained": t.kind == "train",
                    "acc_before": acc_before, "acc_after": acc_after, "acc_split": acc_split,
                    "test_acc": report.get("teacher_test_acc", acc_before if report.get("eval_split") == "test" else None),
                    "acc_drop": report.get("acc_drop"), "acc_tolerance": report.get("acc_tolerance"),
                    "acc_warning": report.get("acc_warning")},
        "student": cfg.student.name,
        "reference": {"kind": cfg.reference_kind, "checkpoint": str(stages["reference"].checkpoint),
                      "acc": report.get("reference_acc")},
        "aid": {"mode": cfg.aid.mode, "ic_target": cfg.aid.ic_target, "tau": cfg.aid.tau,
                "lambda_ic": cfg.aid.lambda_ic, "lambda_cs": cfg.aid.lambda_cs, "lambda_ce": cfg.aid.lambda_ce,
                "epochs": report.get("epochs"), "alpha": cfg.aid.alpha if cfg.aid.mode == "projection" else None,
                "beta": report.get("beta")},
        "decomposition": {k: report.get(k) for k in ("kd_before", "cs_before", "ic_before", "kd_after", "cs_after",
                                                     "ic_after", "teacher_info_before", "teacher_info_after")}
                         | {"split": report.get("eval_split")},
        "seeds": seeds,
        "epochs": cfg.base.train.epochs,
        "vanilla": _student_row(stages, [f"vanilla-s{s}" for s in seeds]),
        "methods": methods,
        "online": _student_row(stages, [f"aid_online-s{s}" for s in seeds]) if cfg.online else None,
        "adaptation_cost": adaptation_cost(cfg, stages),
        "stages": [r.row() for r in stages.values()],
        "pipeline_wall_time_s": wall_time_s,
    }
    return out




__all__ = ["adaptation_cost", "collect_results"]
