"""Drawing helpers: visibility overlays and QAConv correspondences."""
from .comparison import render_comparison, show_comparison
from .dataset_browser import dataset_contact_sheet
from .detections import draw_detections, stack_pictures, write_picture
from .face_pair import (draw_face_pair, draw_visibility_grid,
                        strongest_correspondences, visibility_overlay)
from .occlusion_report import (collect_predictions, occlusion_tables,
                               write_occlusion_report)
from .pipeline_grid import pipeline_grid, pipeline_samples, pipeline_tile

__all__ = [
    'draw_face_pair', 'strongest_correspondences', 'draw_visibility_grid',
    'visibility_overlay', 'render_comparison', 'show_comparison',
    'draw_detections', 'stack_pictures', 'write_picture',
    'collect_predictions', 'occlusion_tables', 'write_occlusion_report',
    'dataset_contact_sheet', 'pipeline_samples', 'pipeline_tile',
    'pipeline_grid'
]
