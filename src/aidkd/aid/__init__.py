"""AID: the split-level L_CS / L_IC decomposition, analysis plots and teacher adaptation.

* :mod:`.split`: the decomposition over a whole split, streaming, in float64.
* :mod:`.analysis`: ``analyze`` / ``analyze_ladder`` and their plots.
* :mod:`.project`: the closed-form projection (IPF) and the tempered inner-class target; ``project_teacher``.
* :mod:`.objective`: ``AIDParams`` (every AID option), ``AIDObjective`` (L_AID) and ``TeacherAdapter`` (its
  optimiser, schedule and step), shared by the fine-tuning mode and ``aid_online``.
* :mod:`.adapt`: ``adapt_teacher`` (fine-tuning or projection mode) and its ``AIDReport``.

The online variant is a distillation method, ``aid_online`` (:mod:`aidkd.methods.aid_online`).
"""
from ..teachers import TargetTeacher
from .adapt import AIDReport, adapt_teacher
from .analysis import analyze, analyze_ladder, plot_components, plot_inner_class, plot_ladder
from .objective import AIDLoss, AIDObjective, AIDParams, TeacherAdapter
from .project import find_beta, ipf_fit, project_teacher, projection_targets
from .split import SplitDecomposition, split_decomposition, split_decomposition_from_logits

__all__ = [
    "AIDLoss",
    "AIDObjective",
    "AIDParams",
    "AIDReport",
    "SplitDecomposition",
    "TargetTeacher",
    "TeacherAdapter",
    "adapt_teacher",
    "analyze",
    "analyze_ladder",
    "find_beta",
    "ipf_fit",
    "plot_components",
    "plot_inner_class",
    "plot_ladder",
    "project_teacher",
    "projection_targets",
    "split_decomposition",
    "split_decomposition_from_logits",
]
