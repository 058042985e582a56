"""Checks of a training config that mmengine would only fail on deep inside a run.

mmengine accepts ``train_cfg.max_iters=0`` and fails later in a parameter scheduler
("end should be larger than begin"); it also accepts a DataLoader whose
``batch_size`` differs from its batch sampler's, so batches straddle the identity
groups of :class:`~oaml_mm.datasets.samplers.PKSampler` and
:class:`~oaml_mm.datasets.samplers.GraphSampler` (``docs/data_layout.md``).
:func:`check_train_config` reports both as one-line
:class:`~oaml_mm.errors.ConfigError` before anything is built;
:func:`check_dataloader_configs` does the same for a negative ``num_workers``
of any DataLoader (PyTorch's own error names no loader).
"""
from typing import Any, Optional

from oaml_mm.errors import ConfigError

__all__ = ['check_train_config', 'check_dataloader_configs']

#: Samplers that emit whole identity groups of ``batch_size`` indices per batch.
_GROUP_SAMPLERS = ('PKSampler', 'GraphSampler')


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, dict):  # mmengine's ConfigDict is a dict
        return obj.get(key, default)
    return getattr(obj, key, default)


def check_train_config(train_dataloader: Optional[Any],
                       train_cfg: Optional[Any]) -> None:
    """Refuse a training length or batch layout that cannot train.

    Args:
        train_dataloader (dict | DataLoader | None): ``cfg.train_dataloader``.
            Only a config dict is checked (a built DataLoader already matched).
        train_cfg (dict | None): ``cfg.train_cfg``.

    Raises:
        ConfigError: ``train_cfg.max_iters`` or ``train_cfg.max_epochs`` is not
            a positive integer, or ``train_dataloader.batch_size`` differs from
            ``train_dataloader.sampler.batch_size`` of a PKSampler/GraphSampler.
    """
    if isinstance(train_cfg, dict):
        for key in ('max_iters', 'max_epochs'):
            value = train_cfg.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 1:
                raise ConfigError(
                    f'train_cfg.{key} must be a positive integer, got '
                    f'{value!r}; set e.g. --cfg-options train_cfg.{key}=1')
    if not isinstance(train_dataloader, dict):
        return
    sampler = train_dataloader.get('sampler')
    if not isinstance(sampler, dict):
        return
    kind = sampler.get('type')
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
    if name.split('.')[-1] not in _GROUP_SAMPLERS:
        return
    loader_bs = train_dataloader.get('batch_size', 1)
    sampler_bs = sampler.get('batch_size')
    if sampler_bs is not None and loader_bs != sampler_bs:
        raise ConfigError(
            f'train_dataloader.batch_size ({loader_bs}) differs from '
            f'train_dataloader.sampler.batch_size ({sampler_bs}) of the '
            f'{name.split(".")[-1]}: batches would straddle identity groups; '
            'set both keys to the same value (docs/data_layout.md)')


def check_dataloader_configs(**loaders: Any) -> None:
    """Refuse a DataLoader config whose ``num_workers`` is not an integer >= 0.

    Args:
        **loaders: Name -> DataLoader config (dict), built DataLoader or None;
            only dicts are checked.

    Raises:
        ConfigError: One line naming the loader and the value.

    Examples:
        >>> check_dataloader_configs(val_dataloader=dict(num_workers=2))
    """
    for name, loader in loaders.items():
        if not isinstance(loader, dict) or 'num_workers' not in loader:
            continue
        value = loader['num_workers']
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f'{name}.num_workers must be an integer >= 0 (0: load in the '
                f'main process), got {value!r}; set e.g. --cfg-options '
                f'{name}.num_workers=2')
