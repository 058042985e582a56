"""The settings besides the weights that shape a model's embeddings and scores."""
import torch
import torch.nn as nn

__all__ = ['embedding_settings']


def embedding_settings(model: nn.Module) -> dict:
    """Everything besides the weights that changes what a model embeds, as plain values.

    An image preprocessed one way does not score like the same image
    preprocessed another way (channel order, mean/std, flip test, visibility
    weighting), so a gallery's templates and a calibrated threshold only hold
    under the settings they were made with. Galleries
    (:func:`oaml_mm.apis.face_gallery.template_settings`) and calibrations
    (``ThresholdCalibrationHook``, ``tools/calibrate.py``) record them.

    Args:
        model (nn.Module): A recognizer (``OAMLRecognizer``), not wrapped in DDP.

    Returns:
        dict: ``model`` (class name), ``input_size`` (pixels, square),
        ``channel_order``, ``mean``, ``std`` (per channel, 6 decimals),
        ``flip_test``, ``global_vis``, ``global_vis_range`` (None or 2 floats).
    """
    pre = getattr(model, 'data_preprocessor', None)
    test_cfg = getattr(model, 'test_cfg', None) or {}
    backbone = getattr(model, 'backbone', None)

    def values(t) -> list:
        return [round(float(v), 6) for v in torch.as_tensor(t).reshape(-1)]

    vis_range = test_cfg.get('global_vis_range')
    return dict(
        model=type(model).__name__,
        input_size=int(getattr(backbone, 'feat_size', 7)) * 16,
        channel_order=str(getattr(pre, 'channel_order', 'rgb')),
        mean=values(getattr(pre, 'mean', 0.0)),
        std=values(getattr(pre, 'std', 1.0)),
        flip_test=bool(test_cfg.get('flip_test', False)),
        global_vis=bool(test_cfg.get('global_vis', False)),
        global_vis_range=None if vis_range is None else
        [float(v) for v in vis_range])
