"""Pure loss functions of tensors (no state, no config), one module per method; every one is exported here.

Argument order: (student, teacher), as in the literature; :func:`kd_decomposition` takes keywords only (the
split-level decompositions of :mod:`aidkd.aid` take the teacher first). The learnable pieces some losses need
(regressors, embeddings, ReviewKD's connector, CRD's memory) are modules here too.
"""
from .at import at_loss, at_stage_loss, attention_map
from .crd import ContrastMemory, Embed, contrast_scores, nce_loss
from .ctkd import ctkd_lambda, global_temperature, gradient_reversal
from .decomposition import (
    Decomposition,
    class_log_means,
    group_logsumexp,
    inner_class_log_dist,
    kd_decomposition,
)
from .dgkd import dense_guidance_loss, kept_guides
from .dist import (
    dist_loss,
    dist_terms,
    inter_class_relation,
    intra_class_relation,
    pearson_rows,
)
from .dkd import dkd_loss, dkd_terms, dkd_warmup
from .fitnet import ConvRegressor, fitnet_loss, regressor_kind
from .kd import as_float, kd_loss, kl_per_sample
from .lskd import maybe_standardize, standardize_logits
from .mlkd import batch_correlation_loss, class_correlation_loss, multi_level_terms
from .mse import logit_mse_loss
from .reviewkd import ABF, ReviewConnector, hcl_loss, hcl_single, reviewkd_warmup
from .semckd import PairProjector, SemCKDAttention, StageEmbed, gram_rows, semckd_loss
from .simkd import SimKDProjector, align_spatial, simkd_loss

__all__ = [
    "ABF", "ContrastMemory", "ConvRegressor", "Decomposition", "Embed", "PairProjector", "ReviewConnector",
    "SemCKDAttention", "SimKDProjector", "StageEmbed", "align_spatial", "dense_guidance_loss", "gram_rows",
    "kept_guides", "semckd_loss", "simkd_loss", "as_float", "at_loss",
    "at_stage_loss", "attention_map", "batch_correlation_loss", "class_correlation_loss", "class_log_means",
    "contrast_scores", "ctkd_lambda", "dist_loss", "dist_terms", "dkd_loss", "dkd_terms", "dkd_warmup",
    "fitnet_loss", "global_temperature", "gradient_reversal", "group_logsumexp", "hcl_loss", "hcl_single",
    "inner_class_log_dist", "inter_class_relation", "intra_class_relation", "kd_decomposition", "kd_loss",
    "kl_per_sample", "logit_mse_loss", "maybe_standardize", "multi_level_terms", "nce_loss", "pearson_rows", "regressor_kind",
    "reviewkd_warmup", "standardize_logits",
]
