"""The settings besides the weights that shape a model's embeddings and scores."""
from typing import Optional

import torch
import torch.nn as nn

from oaml_mm.errors import CheckpointError

__all__ = ['embedding_settings', 'LATER_SETTINGS', 'settings_differences',
           'calibration_settings_problem']

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


def _same_range(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return [round(float(v), 6) for v in a] == [round(float(v), 6) for v in b]


def calibration_settings_problem(calibration: dict, now: dict,
                                 where: str) -> Optional[str]:
    """Why a stored calibration does not hold for a model's settings, or None.

    A calibration (``checkpoint['meta']['oaml_thresholds']``) is fitted on
    scores made under the :func:`embedding_settings` it records: its
    thresholds, impostor statistics (``fuse_stats``) and visibility fusion
    (``vis_fusion``) all say nothing about scores made under other settings
    (another ``vis_range`` changes QAConv's scores and the visibility the
    fusion reads), so callers drop the whole calibration when this returns a
    reason. Calibrations that recorded no settings are used as they are.
    A fusion without a ``vis_range`` field under settings that record one is
    not a contradiction: calibrations wrote that after ``settings`` recorded
    ``vis_range`` and before the fusion recorded its map, and the fusion was
    then fitted on the raw map, which is how a fusion without the field is
    read (:func:`~oaml_mm.evaluation.functional.fusion_vis_range`).

    Args:
        calibration (dict): The stored calibration.
        now (dict): :func:`embedding_settings` of the model now.
        where (str): The file it was read from, for messages.

    Returns:
        str or None: One sentence naming each differing setting with both
        values, or None when the calibration holds.

    Raises:
        CheckpointError: The calibration contradicts itself: its visibility
            fusion records another ``vis_range`` than its ``settings``.
    """
    stored = calibration.get('settings')
    fusion = calibration.get('vis_fusion')
    if isinstance(stored, dict) and 'vis_range' in stored and \
            isinstance(fusion, dict) and 'vis_range' in fusion and \
            not _same_range(stored['vis_range'], fusion['vis_range']):
        raise CheckpointError(
            f"{where}: meta['oaml_thresholds'] contradicts itself: its "
            f"vis_fusion.vis_range is {fusion['vis_range']!r} but its "
            f"settings.vis_range is {stored['vis_range']!r}; calibrate again "
            '(tools/calibrate.py)')
    if stored is None:
        return None
    if not isinstance(stored, dict):
        diff = [f'settings {stored!r}']
    else:
        diff = [f'{k} {old!r} at calibration vs {v!r} now'
                for k, old, v in settings_differences(stored, now)]
    if not diff:
        return None
    return (f'{where}: it was calibrated under other settings than this '
            f'config\'s: {"; ".join(diff)}; none of its calibration '
            '(thresholds, fuse_stats, vis_fusion) is used: it scores as an '
            'uncalibrated model, without the fused and fused_vis branches. '
            'Use the config it was calibrated with, calibrate again '
            '(tools/calibrate.py) or pass a threshold')
