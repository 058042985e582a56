"""Pure tensor math shared by heads, losses, metrics and benchmarks."""
from .damage import damage_visibility, paste_occluders
from .margin import adaface_margins, cosine_logits, margin_logits
from .pair_mining import hardest_pairs
from .qaconv import (DEFAULT_MAX_CHUNK_ELEMS, VIS_MODE_ALIASES, VIS_MODES,
                     canonical_vis_mode, normalize_maps, qaconv_match,
                     qaconv_match_pairs)
from .visibility import (calibrate_visibility, check_vis_range,
                         resize_visibility, stack_gt_visibility)

__all__ = [
    'cosine_logits', 'margin_logits', 'adaface_margins', 'hardest_pairs',
    'qaconv_match', 'qaconv_match_pairs', 'normalize_maps',
    'calibrate_visibility', 'check_vis_range', 'resize_visibility',
    'stack_gt_visibility', 'damage_visibility', 'paste_occluders', 'VIS_MODES',
    'VIS_MODE_ALIASES', 'canonical_vis_mode',
    'DEFAULT_MAX_CHUNK_ELEMS'
]
