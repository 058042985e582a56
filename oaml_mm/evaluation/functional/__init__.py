"""Pure evaluation protocols (numpy/torch only): tested once, reused by the metrics,
tools and benchmarks."""
from .fusion import (VIS_FUSION_FEATURES, VIS_FUSION_VERSION,
                     apply_visibility_fusion, check_visibility_fusion,
                     fit_visibility_fusion, fuse_scores,
                     fusion_mean_visibility, fusion_vis_range, impostor_stats,
                     mean_visibility, visibility_fusion_features)
from .identification import identification_1n
from .pair_scoring import (COSINE_MIN_FILL, COSINE_TILE, DEFAULT_TILE,
                           QACONV_MIN_FILL, PairPlan, cosine_pairs,
                           cosine_pairs_tiled, dot_all, dot_rows,
                           match_all_then_pick, match_listed_pairs,
                           plan_pair_units, score_pairs_tiled, score_units,
                           split_units, tile_pair_order)
from .roc import DEFAULT_FARS, auc, eer, roc_curve, tar_at_far
from .template_pooling import (POOL_SUFFIX, POOLINGS, VIS_FLOOR,
                               TemplateAccumulator, check_pooling,
                               pool_templates)
from .thresholds import (BRANCHES, DECISION_BRANCHES, FUSED_VIS,
                         THRESHOLDS_META_KEY, VIS_FUSION_KEY,
                         calibrate_thresholds, threshold_at_far)
from .verification import (kfold_split, score_thresholds, verification_10fold,
                           verification_10fold_scores)
from .visibility import visibility_mae

__all__ = [
    'BRANCHES', 'THRESHOLDS_META_KEY', 'threshold_at_far', 'calibrate_thresholds',
    'visibility_mae', 'verification_10fold',
    'verification_10fold_scores', 'kfold_split', 'score_thresholds', 'roc_curve',
    'tar_at_far', 'auc', 'eer', 'DEFAULT_FARS', 'pool_templates',
    'TemplateAccumulator', 'POOLINGS', 'POOL_SUFFIX', 'VIS_FLOOR',
    'check_pooling', 'identification_1n', 'fuse_scores', 'impostor_stats',
    'cosine_pairs', 'match_listed_pairs', 'match_all_then_pick',
    'score_pairs_tiled', 'cosine_pairs_tiled', 'tile_pair_order', 'PairPlan',
    'plan_pair_units', 'split_units', 'score_units', 'dot_all', 'dot_rows',
    'DEFAULT_TILE', 'COSINE_TILE', 'COSINE_MIN_FILL', 'QACONV_MIN_FILL',
    'DECISION_BRANCHES', 'FUSED_VIS', 'VIS_FUSION_KEY', 'VIS_FUSION_FEATURES',
    'VIS_FUSION_VERSION', 'visibility_fusion_features', 'fit_visibility_fusion',
    'check_visibility_fusion', 'apply_visibility_fusion', 'mean_visibility',
    'fusion_vis_range', 'fusion_mean_visibility'
]
