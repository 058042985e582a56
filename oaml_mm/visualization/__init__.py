"""Drawing helpers: visibility overlays and QAConv correspondences."""
from .comparison import render_comparison, show_comparison
from .dataset_browser import dataset_contact_sheet
from .face_pair import (draw_face_pair, strongest_correspondences,
                        visibility_grid, visibility_overlay)
from .occlusion_report import (collect_predictions, occlusion_tables,
                               write_occlusion_report)

__all__ = [
    'draw_face_pair', 'strongest_correspondences', 'visibility_grid',
    'visibility_overlay', 'render_comparison', 'show_comparison',
    'collect_predictions', 'occlusion_tables', 'write_occlusion_report',
    'dataset_contact_sheet'
]
