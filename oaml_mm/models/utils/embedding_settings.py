"""The settings besides the weights that shape a model's embeddings and scores."""
import torch
import torch.nn as nn

__all__ = ['embedding_settings', 'LATER_SETTINGS', 'settings_differences']

#: Settings recorded only since a later release: a gallery or calibration
#: written before lacks them, and is compared on the others.
LATER_SETTINGS = ('vis_range', )


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
        ``flip_test``, ``global_vis``, ``global_vis_range`` (None or 2 floats:
        the calibration that weights the embedding when ``global_vis`` is on,
        else what the config gave under that key), ``vis_range`` (None or 2
        floats: the one calibration of the predicted visibility,
        ``OAMLRecognizer.vis_range``, which QAConv's scores also depend on).
    """
    pre = getattr(model, 'data_preprocessor', None)
    test_cfg = getattr(model, 'test_cfg', None) or {}
    backbone = getattr(model, 'backbone', None)

    def values(t) -> list:
        return [round(float(v), 6) for v in torch.as_tensor(t).reshape(-1)]

    vis_range = getattr(model, 'vis_range', None)
    if vis_range is None:
        vis_range = test_cfg.get('vis_range')
    global_range = vis_range if test_cfg.get('global_vis') else getattr(
        model, '_global_vis_range_given', test_cfg.get('global_vis_range'))
    return dict(
        model=type(model).__name__,
        input_size=int(getattr(backbone, 'feat_size', 7)) * 16,
        channel_order=str(getattr(pre, 'channel_order', 'rgb')),
        mean=values(getattr(pre, 'mean', 0.0)),
        std=values(getattr(pre, 'std', 1.0)),
        flip_test=bool(test_cfg.get('flip_test', False)),
        global_vis=bool(test_cfg.get('global_vis', False)),
        global_vis_range=_floats(global_range),
        vis_range=_floats(vis_range))


def _floats(pair):
    return None if pair is None else [float(v) for v in pair]


def settings_differences(stored: dict, now: dict) -> list:
    """The keys of ``now`` whose value ``stored`` records differently.

    A key of :data:`LATER_SETTINGS` that ``stored`` lacks is not compared (the
    record predates it); any other missing key counts as a difference.

    Args:
        stored (dict): Settings a gallery or calibration recorded.
        now (dict): :func:`embedding_settings` (or a superset) of the model now.

    Returns:
        list[tuple]: ``(key, stored value, value now)`` per difference.
    """
    return [(k, stored.get(k), v) for k, v in now.items()
            if not (k in LATER_SETTINGS and k not in stored)
            and stored.get(k) != v]
