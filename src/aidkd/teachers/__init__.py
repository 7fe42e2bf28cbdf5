"""Teachers as methods see them: one protocol (:class:`Teacher`: :meth:`~Teacher.logits` of a training batch, and
what else it :attr:`~Teacher.serves`), four ways of serving it (a model, lean or not; a model's stored logits on the
training views; AID's projected targets), and one constructor, :func:`build_teacher`.

* :mod:`.base`: the protocol and what a teacher may serve (``SPLIT``, ``IMAGES``, ``FEATURES``, ``WEIGHTS``);
* :mod:`.model`: :class:`ModelTeacher`, a frozen model (batch norms folded when lean);
* :mod:`.views`: the views file (a model's logits on every view of the training split) and :class:`ViewsTeacher`;
* :mod:`.cache`: the shared cache of views files under ``$AIDKD_CACHE`` (``teacher.cache``);
* :mod:`.targets`: :class:`TargetTeacher`, AID's per-sample targets;
* :mod:`.build`: :func:`build_teacher`, from a config's ``teacher`` section.

docs/architecture.md says how to add a way of serving a teacher.
"""
from .base import FEATURES, IMAGES, SPLIT, WEIGHTS, TableTeacher, Teacher, logits_of, runs_images
from .build import build_teacher, serve_model
from .model import ModelTeacher, fold_batchnorm
from .targets import TargetTeacher
from .views import ViewsTeacher, identity_logits, serve_views

__all__ = ["FEATURES", "IMAGES", "SPLIT", "WEIGHTS", "ModelTeacher", "TableTeacher", "TargetTeacher", "Teacher",
           "ViewsTeacher", "build_teacher", "fold_batchnorm", "identity_logits", "logits_of", "runs_images",
           "serve_model", "serve_views"]
