"""The pipeline's results as one JSON-ready dict: the teacher before/after adaptation, the decomposition, and per
method the students without and with AID (last and selected accuracy, mean +- std over seeds, paired gains)."""
from __future__ import annotations

import math
import statistics

from ...stages import StageResult
from ..adapt import SPLIT_NUMBERS
from .schema import PipelineConfig


#: the adaptation report's numbers the results carry, per split
DECOMPOSITION_KEYS = tuple(f"{k}_{when}" for k in SPLIT_NUMBERS for when in ("before", "after"))


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


def _mean_time(stages: dict[str, StageResult], names: list[str]) -> float | None:
    times = [stages[n].wall_time_s for n in names if n in stages and stages[n].wall_time_s]
    return statistics.fmean(times) if times else None


def _sum_or_none(*xs: float | None) -> float | None:
    return None if any(x is None for x in xs) else sum(xs)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def adaptation_cost(cfg: PipelineConfig, stages: dict[str, StageResult], report: dict | None = None) -> dict:
    """What AID costs against KD and TAKD, as the paper's Table 7 counts it (seconds of wall time, recorded when
    each stage ran; the students' times are means over seeds; None where a time is unknown):

    * ``aid_total_s``: S_p (the reference stage: the vanilla student's run when S_p is the vanilla student, which
      every comparison trains anyway) + the adaptation + one distillation from the adapted teacher;
    * ``aid_own_s``: the adaptation + one distillation from the adapted teacher;
    * ``kd_s``: one distillation from T0; ``takd_s``: the assistant + one distillation from it; ``dgkd_s``: every
      assistant + one distillation from them all;
    * ``aid_total_over_takd``, ``aid_total_over_dgkd``, ``aid_own_over_kd``; and ``fraction``, the adaptation alone over one distillation;
    * ``fit_s``: the fine-tuning epochs alone (from the adaptation's ``report``), without the data loading and the
      report's measuring passes that the adapt stage's time includes.

    The distillations are those of the first ``kd`` method listed (else the first method)."""
    m = next((m for m in cfg.methods if m.name == "kd"), cfg.methods[0])
    adapt = stages.get("adapt")
    adapt_s = adapt.wall_time_s if adapt is not None else None
    ref = stages.get("reference")
    reference_s = ref.wall_time_s if ref is not None and ref.kind != "given" else None
    distill_s = _mean_time(stages, [f"aid-{m.key}-s{s}" for s in cfg.seeds])
    kd_s = _mean_time(stages, [f"{m.key}-s{s}" for s in cfg.seeds])
    aid_own_s = _sum_or_none(adapt_s, distill_s)
    aid_total_s = _sum_or_none(reference_s, aid_own_s)
    takd_s = None
    if cfg.takd_assistant and "takd-assistant" in stages:
        takd_s = _sum_or_none(stages["takd-assistant"].wall_time_s,
                              _mean_time(stages, [f"takd-s{s}" for s in cfg.seeds]))
    dgkd_s = None
    links = [f"dgkd-a{i}" for i in range(1, len(cfg.dgkd_assistants) + 1)]
    if links and all(k in stages for k in links):
        dgkd_s = _sum_or_none(*(stages[k].wall_time_s for k in links),
                              _mean_time(stages, [f"dgkd-s{s}" for s in cfg.seeds]))
    return {"method": m.key, "reference_s": reference_s, "adapt_s": adapt_s, "distill_s": distill_s,
            "aid_own_s": aid_own_s, "aid_total_s": aid_total_s, "kd_s": kd_s, "takd_s": takd_s, "dgkd_s": dgkd_s,
            "aid_total_over_takd": _ratio(aid_total_s, takd_s), "aid_total_over_dgkd": _ratio(aid_total_s, dgkd_s),
            "aid_own_over_kd": _ratio(aid_own_s, kd_s),
            "fraction": _ratio(adapt_s, distill_s), "fit_s": (report or {}).get("fit_time_s")}


def collect_results(cfg: PipelineConfig, stages: dict[str, StageResult], report: dict, wall_time_s: float) -> dict:
    """The results dict of a pipeline run: ``stages`` by name (as the plan ran them), ``report`` the adapt
    stage's report."""
    seeds = cfg.seeds
    t = stages["teacher"]
    acc_before = report.get("teacher_acc_before")
    acc_after = report.get("teacher_acc_after")
    if cfg.aid.objective == "projection":  # the report's numbers are on the projected training samples
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
        "reference": {"kind": cfg.aid.reference_kind, "model": report.get("reference_model", cfg.reference_model),
                      "proxy": cfg.aid.reference_model is not None,
                      "checkpoint": str(stages["reference"].checkpoint), "acc": report.get("reference_acc")},
        "aid": {"objective": cfg.aid.objective, "ic_target": cfg.aid.ic_target, "tau": cfg.aid.tau,
                "lambda_ce": cfg.aid.lambda_ce, "lambda_kd": cfg.aid.lambda_kd, "lambda_ic": cfg.aid.lambda_ic,
                "lambda_cs": cfg.aid.lambda_cs, "lr": cfg.aid.lr, "epochs": report.get("epochs"),
                "alpha": cfg.aid.alpha if cfg.aid.objective == "projection" else None, "beta": report.get("beta")},
        "decomposition": {k: report.get(k) for k in DECOMPOSITION_KEYS} | {"split": acc_split},
        "decomposition_train": {k: (report.get("train") or {}).get(k) for k in DECOMPOSITION_KEYS}
                               | {"split": "train"} if report.get("train") else None,
        "seeds": seeds,
        "epochs": cfg.base.train.epochs,
        "vanilla": _student_row(stages, [f"vanilla-s{s}" for s in seeds]),
        "methods": methods,
        "online": _student_row(stages, [f"aid_online-s{s}" for s in seeds]) if cfg.online else None,
        "takd": ({"assistant": cfg.takd_assistant, **_student_row(stages, [f"takd-s{s}" for s in seeds])}
                 if cfg.takd_assistant else None),
        "dgkd": ({"assistants": list(cfg.dgkd_assistants), **_student_row(stages, [f"dgkd-s{s}" for s in seeds])}
                 if cfg.dgkd_assistants else None),
        "adaptation_cost": adaptation_cost(cfg, stages, report),
        "stages": [r.row() for r in stages.values()],
        "pipeline_wall_time_s": wall_time_s,
    }
    return out


__all__ = ["adaptation_cost", "collect_results"]
