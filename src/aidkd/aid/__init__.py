"""AID: the split-level L_CS / L_IC decomposition, analysis plots and teacher adaptation.

* :mod:`.split`: the decomposition over a whole split, streaming, in float64.
* :mod:`.analysis`: ``analyze`` / ``analyze_ladder`` and their plots.
* :mod:`.project`: the closed-form projection (IPF) and the tempered inner-class target; ``TargetTeacher``.
* :mod:`.adapt`: ``AIDParams``, ``aid_loss`` and ``adapt_teacher`` (fine-tuning or projection mode).
* :mod:`.online`: the ``aid_online`` distillation method (importing this package registers it).
"""
from . import online  # noqa: F401  (registers the aid_online method)
from .adapt import AIDParams, AIDReport, adapt_teacher, aid_loss
from .analysis import analyze, analyze_ladder, plot_components, plot_inner_class, plot_ladder
from .online import AIDOnline, AIDOnlineParams
from .project import TargetTeacher, find_beta, ipf_fit, project_teacher, projection_targets
from .split import SplitDecomposition, split_decomposition, split_decomposition_from_logits

__all__ = [
    "AIDOnline",
    "AIDOnlineParams",
    "AIDParams",
    "AIDReport",
    "SplitDecomposition",
    "TargetTeacher",
    "adapt_teacher",
    "aid_loss",
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
