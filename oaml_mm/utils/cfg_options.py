"""``--cfg-options`` with data-root variables that reach every place they were used.

An OpenMMLab Python config substitutes its variables while it is parsed: after
``data_root = 'data/faces_emore'`` and ``dataset=dict(data_root=data_root)``, the
dataset holds a copy of the string, so ``--cfg-options data_root=/x`` only changes the
unused top-level key. oaml_mm's data set configs (``configs/_base_/datasets``) keep each
data root in one top-level variable; :func:`merge_cfg_options` makes an override of such
a variable rewrite the copies in the config sections that variable feeds
(:data:`ROOT_SCOPES`), so one option moves one data set. Scoping by section keeps
roots that share a default folder apart (insightface ships ``train.rec`` and the
``.bin`` sets in the same ``faces_emore`` folder). The convention follows mmengine's
own ``Config.merge_from_dict``, which this function calls for everything else.
"""
from typing import Any, Dict, Optional, Tuple

from mmengine.config import Config

__all__ = ['ROOT_SCOPES', 'merge_cfg_options']

#: Top-level root variable -> the config sections that hold copies of it.
ROOT_SCOPES: Dict[str, Tuple[str, ...]] = {
    'data_root': ('train_dataloader', ),
    'val_data_root': ('val_dataloader', 'val_evaluator'),
    'occlusion_data_root': ('custom_hooks', ),
    'test_data_root': ('test_dataloader', 'test_evaluator'),
}


def _rebase(value: Any, old: str, new: str) -> Any:
    """``value`` with every string equal to ``old`` or below it (``old/...``) moved."""
    if isinstance(value, str):
        if value == old:
            return new
        if value.startswith(old.rstrip('/') + '/'):
            return new.rstrip('/') + value[len(old.rstrip('/')):]
        return value
    if isinstance(value, dict):
        return {k: _rebase(v, old, new) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rebase(v, old, new) for v in value)
    return value


def merge_cfg_options(cfg: Config, options: Optional[dict]) -> Config:
    """Merge ``--cfg-options`` into ``cfg``, propagating data-root variables.

    For every option named in :data:`ROOT_SCOPES` whose top-level variable exists in
    ``cfg`` as a string, the strings in the variable's sections that equal its old value
    (or are paths below it) take the new value. Then all options are merged as
    :meth:`mmengine.config.Config.merge_from_dict` does, so explicit keys such as
    ``train_dataloader.dataset.data_root=...`` keep working and win.

    Args:
        cfg (Config): The loaded config (modified in place).
        options (dict, optional): The parsed ``--cfg-options``.

    Returns:
        Config: ``cfg``.

    Examples:
        >>> cfg = Config(dict(data_root='data/a', train_dataloader=dict(
        ...     dataset=dict(data_root='data/a'))))
        >>> cfg = merge_cfg_options(cfg, {'data_root': '/mnt/a'})
        >>> cfg.train_dataloader.dataset.data_root
        '/mnt/a'
    """
    if not options:
        return cfg
    for name, new in options.items():
        old = cfg.get(name, None) if name in ROOT_SCOPES else None
        if not isinstance(old, str) or not isinstance(new, str) or not old:
            continue
        for section in ROOT_SCOPES[name]:
            if cfg.get(section, None) is not None:
                cfg[section] = _rebase(cfg[section], old, new)
    cfg.merge_from_dict(options)
    return cfg
