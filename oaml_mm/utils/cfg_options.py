"""``--cfg-options`` and inheriting configs whose variables reach every copy.

An OpenMMLab Python config substitutes its variables while it is parsed: after
``data_root = 'data/faces_emore'`` and ``dataset=dict(data_root=data_root)``, the
dataset holds a copy of the string, so ``--cfg-options data_root=/x`` only changes the
unused top-level key, and neither does a child config that sets ``data_root`` alone.
oaml_mm's data set configs (``configs/_base_/datasets``) keep each data root in one
top-level variable; :func:`follow_variables` makes a new value of such a variable
rewrite the copies in the config sections that variable feeds (:data:`ROOT_SCOPES`),
so one option or one line in a child config moves one data set. Scoping by section
keeps roots that share a default folder apart (insightface ships ``train.rec`` and
the ``.bin`` sets in the same ``faces_emore`` folder). Sizes derived from a variable
follow it the same way (:data:`SIZE_SCOPES`: ``train_num_classes`` sizes the margin
head). The convention follows mmengine's own ``Config.merge_from_dict``, which
:func:`merge_cfg_options` calls for everything else; :func:`~oaml_mm.utils.load_config`
applies the same rules to what a child config changes of its bases.

A schedule follows the training length: the warm-up and decay points of
``param_scheduler`` were written for the config's ``train_cfg.max_iters`` (or
``max_epochs``), and :func:`rescale_schedule` moves them with a new length, so
``--cfg-options train_cfg.max_iters=1500`` keeps the recipe's shape (the study tools
call the same function).

A command-line option is not a config file: :func:`check_option_types` refuses a
``type`` that is not a registered component name (``os.system`` would otherwise be
imported and called by the registry), :func:`check_option_keys` a new key the
component it configures does not take (a typo such as ``train_cfg.max_iter``), and
:class:`CfgOptionsAction` an item without ``=``, each in one line.
"""
import argparse
import json
from typing import Any, Dict, List, Optional, Set, Tuple

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from oaml_mm.errors import ConfigError

__all__ = [
    'ROOT_SCOPES', 'SIZE_SCOPES', 'merge_cfg_options', 'follow_variables',
    'rescale_schedule', 'check_option_types', 'check_option_keys',
    'follow_bases', 'follow_length', 'CfgOptionsAction'
]

#: Top-level root variable -> the config sections that hold copies of it.
ROOT_SCOPES: Dict[str, Tuple[str, ...]] = {
    'data_root': ('train_dataloader', ),
    'val_data_root': ('val_dataloader', 'val_evaluator'),
    'occlusion_data_root': ('custom_hooks', ),
    'test_data_root': ('test_dataloader', 'test_evaluator'),
}

#: Top-level size variable -> (the sections holding copies of it, the key that
#: holds a copy). Only values of that key equal to the old value are changed.
SIZE_SCOPES: Dict[str, Tuple[Tuple[str, ...], str]] = {
    'train_num_classes': (('model', 'train_dataloader'), 'num_classes'),
    'max_iters': (('train_cfg', ), 'max_iters'),
}

#: Schedule fields counted in iterations or epochs.
_SCHEDULE_FIELDS = ('begin', 'end', 'T_max', 'total_steps')


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


def _replace_key(value: Any, key: str, old: Any, new: Any) -> Any:
    """``value`` with every ``key: old`` entry of its dicts set to ``new``."""
    if isinstance(value, dict):
        return {k: (new if k == key and type(v) is type(old) and v == old
                    else _replace_key(v, key, old, new))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_replace_key(v, key, old, new) for v in value)
    return value


def follow_variables(cfg: Config, changes: Dict[str, Tuple[Any, Any]]) -> None:
    """Move the copies of top-level variables from their old to their new value.

    Args:
        cfg (Config): Modified in place.
        changes (dict): Variable name -> ``(old, new)``. Names in
            :data:`ROOT_SCOPES` (strings: paths equal to or below ``old`` move)
            and :data:`SIZE_SCOPES` (integers: the named key equal to ``old``)
            are followed; others are ignored.

    Examples:
        >>> cfg = Config(dict(train_num_classes=8, model=dict(head=dict(
        ...     num_classes=8))))
        >>> follow_variables(cfg, {'train_num_classes': (8, 100)})
        >>> cfg.model.head.num_classes
        100
    """
    for name, (old, new) in changes.items():
        if old == new:
            continue
        if name in ROOT_SCOPES:
            if not isinstance(old, str) or not isinstance(new, str) or not old:
                continue
            for section in ROOT_SCOPES[name]:
                if cfg.get(section, None) is not None:
                    cfg[section] = _rebase(cfg[section], old, new)
        elif name in SIZE_SCOPES:
            if not all(isinstance(v, int) and not isinstance(v, bool)
                       for v in (old, new)):
                continue
            sections, key = SIZE_SCOPES[name]
            for section in sections:
                if cfg.get(section, None) is not None:
                    cfg[section] = _replace_key(cfg[section], key, old, new)


def _length(cfg: Config) -> Tuple[Optional[int], Optional[int]]:
    train_cfg = cfg.get('train_cfg', None) or {}
    return train_cfg.get('max_iters'), train_cfg.get('max_epochs')


def _plain(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def rescale_schedule(cfg: Config, old: int, new: int,
                     by_epoch: bool = False) -> List[str]:
    """Move ``param_scheduler``'s warm-up and decay points to a new length.

    Every scheduler counted in the unit that changed (``by_epoch`` as given;
    mmengine's default is ``by_epoch=True``) has ``begin``, ``end``, ``T_max``,
    ``total_steps`` (``OneCycleLR``) and ``milestones`` scaled by ``new / old``
    (rounded down, as ``int(max_iters * 0.7)`` of the shipped schedules; ``end``
    at least ``begin + 1``). A value at or beyond ``old`` that is not ``old``
    itself (mmengine's "until the end" default) is kept.

    Args:
        cfg (Config): Modified in place.
        old (int): The length the schedule was written for.
        new (int): The new length.
        by_epoch (bool): Whether ``old``/``new`` count epochs. Defaults to False.

    Returns:
        list[str]: One line per moved scheduler, e.g. ``'MultiStepLR milestones
        [350, 450] -> [1050, 1350]'``.

    Examples:
        >>> cfg = Config(dict(train_cfg=dict(max_iters=1500), param_scheduler=[
        ...     dict(type='MultiStepLR', by_epoch=False, milestones=[350, 450])]))
        >>> rescale_schedule(cfg, 500, 1500)
        ['MultiStepLR milestones [350, 450] -> [1050, 1350]']
    """
    scheds = cfg.get('param_scheduler', None)
    if not scheds or old == new or old < 1 or new < 1:
        return []
    single = isinstance(scheds, dict)
    scheds = [scheds] if single else list(scheds)

    def scale(v: int) -> int:
        return v * new // old

    notes, out = [], []
    for sched in scheds:
        sched = dict(sched)
        if bool(sched.get('by_epoch', True)) != by_epoch:
            out.append(sched)
            continue
        moved = []
        for key in _SCHEDULE_FIELDS:  # begin before end
            v = sched.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= old:
                sched[key] = scale(v)
                if key != 'begin':  # a scheduler spans one step at least
                    sched[key] = max(sched[key], sched.get('begin', 0) + 1)
                if sched[key] != v:
                    moved.append(f'{key} {v} -> {sched[key]}')
        ms = sched.get('milestones')
        if isinstance(ms, (list, tuple)) and ms:
            # Two milestones on one step decay twice there (mmengine counts
            # them), as the shipped int(max_iters * 0.7) rule does.
            scaled = [max(1, scale(m)) if 0 < m <= old else m for m in ms]
            if scaled != list(ms):
                moved.append(f'milestones {list(ms)} -> {scaled}')
            sched['milestones'] = scaled
        if moved:
            notes.append(f'{sched.get("type")} ' + ', '.join(moved))
        out.append(sched)
    cfg.param_scheduler = out[0] if single else out
    return notes


def follow_length(cfg: Config, before: Tuple[Optional[int], Optional[int]],
                  where: str) -> None:
    """Rescale the schedule from the length ``before`` to ``cfg``'s, saying so.

    Args:
        cfg (Config): Modified in place.
        before (tuple): ``(max_iters, max_epochs)`` the schedule was written for.
        where (str): What changed the length, for the log line.
    """
    after = _length(cfg)
    for old, new, by_epoch, key in ((before[0], after[0], False, 'max_iters'),
                                    (before[1], after[1], True, 'max_epochs')):
        if isinstance(old, int) and isinstance(new, int) and old != new:
            notes = rescale_schedule(cfg, old, new, by_epoch)
            if notes:
                print_log(f'{where}: train_cfg.{key} {old} -> {new}: '
                          f'param_scheduler follows ({"; ".join(notes)})',
                          logger='current')


def _check_one_cycle_length(cfg: Config, where: str = '--cfg-options') -> None:
    """Refuse a ``OneCycleLR`` whose ``total_steps`` is shorter than the training.

    mmengine's ``OneCycleLR`` raises ``ValueError: Tried to step N times`` once
    the run passes ``total_steps``, so ``train_cfg.max_iters=800`` with
    ``param_scheduler.0.total_steps=500`` would stop at iteration 501 with the
    work of those iterations lost. Schedulers counted in the other unit, or
    without an integer ``total_steps``, are not checked.

    Args:
        cfg (Config): The merged config.
        where (str): What set the values, for the message.

    Raises:
        ConfigError: Names the scheduler, its ``total_steps`` and the length.
    """
    scheds = cfg.get('param_scheduler', None) or []
    scheds = [scheds] if isinstance(scheds, dict) else list(scheds)
    iters, epochs = _length(cfg)
    for i, sched in enumerate(scheds):
        total = sched.get('total_steps') if isinstance(sched, dict) else None
        if sched is None or not isinstance(sched, dict) or \
                sched.get('type') != 'OneCycleLR' or \
                not isinstance(total, int) or isinstance(total, bool):
            continue
        by_epoch = bool(sched.get('by_epoch', True))
        length, key = (epochs, 'max_epochs') if by_epoch else (iters,
                                                               'max_iters')
        if isinstance(length, int) and total < length:
            raise ConfigError(
                f'{where}: param_scheduler[{i}] OneCycleLR total_steps={total} '
                f'is shorter than train_cfg.{key}={length}; it would stop the '
                f'run after {total} steps (set total_steps >= {length}, or '
                f'leave param_scheduler out to let it follow {key})')


# -- command-line types ------------------------------------------------------
def _registries() -> list:
    """Every registry of the mmengine registry tree, its modules imported."""
    import mmengine.registry as root_module
    from mmengine.registry import Registry

    import oaml_mm.registry  # noqa: F401  (creates the child registries)
    out = []
    seen = set()
    stack = [r for r in vars(root_module).values() if isinstance(r, Registry)]
    while stack:
        reg = stack.pop()
        if id(reg) in seen:
            continue
        seen.add(id(reg))
        try:
            reg.import_from_location()
        except Exception:  # noqa: BLE001  (an optional scope not installed)
            pass
        out.append(reg)
        stack.extend(reg._children.values())
    return out


def _registered_names() -> Tuple[Set[str], Set[str]]:
    """Every name registered in the mmengine registry tree, and its scopes."""
    names: Set[str] = set()
    scopes: Set[str] = set()
    for reg in _registries():
        names.update(reg.module_dict)
        scopes.add(reg.scope)
    return names, scopes


# -- command-line keys -------------------------------------------------------
#: Keys a builder takes off a component's config before calling its class
#: (mmengine's optimizer-wrapper constructor, schedulers, scopes).
_BUILDER_KEYS = frozenset(('type', '_scope_', 'constructor', 'paramwise_cfg',
                           'convert_to_iter_based'))


def _walk(cfg: Any, parts: List[str]) -> Tuple[bool, Any]:
    """``(found, value)`` at the dotted path ``parts`` (list items by index)."""
    node = cfg
    for part in parts:
        if isinstance(node, (dict, Config)) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and \
                int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _accepted_keywords(type_name: Any) -> Optional[Tuple[str, Set[str]]]:
    """``(name, keywords)`` a registered ``type`` takes; None: any or unknown."""
    import inspect
    if isinstance(type_name, str):
        scope, _, bare = type_name.rpartition('.')
        found = [reg.module_dict[bare] for reg in _registries()
                 if bare in reg.module_dict and (not scope or
                                                 reg.scope == scope)]
        name = type_name
    elif callable(type_name):
        found, name = [type_name], getattr(type_name, '__name__', '?')
    else:
        return None
    if not found:
        return None
    keywords: Set[str] = set()
    for obj in found:
        try:
            params = inspect.signature(
                obj.__init__ if inspect.isclass(obj) else obj).parameters
        except (TypeError, ValueError):
            return None
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return None
        keywords.update(k for k, p in params.items()
                        if k != 'self' and p.kind is not p.VAR_POSITIONAL)
    return name, keywords


def check_option_keys(cfg: Config, options: Optional[dict],
                      existed: Optional[Set[str]] = None) -> None:
    """Refuse a ``--cfg-options`` key the component it configures does not take.

    A new key (one the config did not have, ``existed``) directly below a
    config dict with a ``type`` must be a keyword of that registered class's
    constructor (:func:`inspect.signature`; a class taking ``**kwargs`` takes
    any), so that ``train_cfg.max_iter=2`` or ``model.qaconv_head.vis_rnage=...``
    stop here, before a runner is built, rather than as a ``TypeError`` from
    the class. Keys of untyped dicts (dataloaders, ``test_cfg``) are not
    checked. Cheap: one signature per option.

    Args:
        cfg (Config): The config with the options merged.
        options (dict, optional): The parsed ``--cfg-options``.
        existed (set, optional): The option keys the config had before the
            merge (not checked). None: check every key.

    Raises:
        ConfigError: Names the option, the class, a close accepted keyword
            (did you mean) and the accepted keywords.
    """
    import difflib
    for key in options or {}:
        if existed is not None and key in existed:
            continue
        parts = str(key).split('.')
        found, parent = _walk(cfg, parts[:-1])
        if not found or not isinstance(parent, dict) or 'type' not in parent \
                or parts[-1] in _BUILDER_KEYS:
            continue
        accepted = _accepted_keywords(parent['type'])
        if accepted is None or parts[-1] in accepted[1]:
            continue
        name, keywords = accepted
        close = difflib.get_close_matches(parts[-1], sorted(keywords), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ''
        raise ConfigError(
            f'--cfg-options {key}: {name} takes no keyword '
            f'{parts[-1]!r}{hint}; it accepts: '
            + ', '.join(sorted(keywords)))


def _types_in(key: str, value: Any):
    if key.split('.')[-1] == 'type':
        yield key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _types_in(f'{key}.{k}', v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _types_in(f'{key}.{i}', v)


def check_option_types(options: Optional[dict]) -> None:
    """Refuse ``--cfg-options`` that name a type outside the registries.

    mmengine's registry imports a dotted path it does not know
    (``model.type=os.system`` imports and calls ``os.system``); a config file
    is code the user chose to run, a command-line option is not. Only names
    registered in a registry (``ResNet``, ``mmpretrain.ResNet``) pass, and
    ``custom_imports`` (which imports any module) is refused too.

    Args:
        options (dict, optional): The parsed ``--cfg-options``.

    Raises:
        ConfigError: Names the option and the value.

    Examples:
        >>> check_option_types({'model.head.type': 'AdaFaceHead'})
        >>> check_option_types({'model.type': 'os.system'})
        Traceback (most recent call last):
        ...
        oaml_mm.errors.ConfigError: --cfg-options model.type='os.system' is not ...
    """
    if not options:
        return
    names = scopes = None
    for key, value in options.items():
        if str(key).split('.')[0] == 'custom_imports':
            raise ConfigError(
                f'--cfg-options {key}: a command-line option may not import '
                'modules; put custom_imports in a config file')
        for where, name in _types_in(str(key), value):
            if names is None:
                names, scopes = _registered_names()
            scope, _, bare = name.rpartition('.') if isinstance(name, str) \
                else ('', '', None)
            if isinstance(name, str) and bare in names and (
                    not scope or scope in scopes):
                continue
            raise ConfigError(
                f'--cfg-options {where}={name!r} is not a registered component '
                'name: a command-line option may only name components of the '
                'registries (e.g. AdaFaceHead, mmpretrain.ResNet); put other '
                'types in a config file')


def merge_cfg_options(cfg: Config, options: Optional[dict]) -> Config:
    """Merge ``--cfg-options`` into ``cfg``; copies and the schedule follow.

    For every option named in :data:`ROOT_SCOPES` or :data:`SIZE_SCOPES` whose
    top-level variable exists in ``cfg``, the copies in the variable's sections
    take the new value (:func:`follow_variables`). Then all options are merged
    as :meth:`mmengine.config.Config.merge_from_dict` does, so explicit keys such
    as ``train_dataloader.dataset.data_root=...`` keep working and win. A new
    ``train_cfg.max_iters`` / ``max_epochs`` rescales ``param_scheduler``
    (:func:`rescale_schedule`) unless an option sets ``param_scheduler`` too.
    Types are checked first (:func:`check_option_types`).

    Args:
        cfg (Config): The loaded config (modified in place).
        options (dict, optional): The parsed ``--cfg-options``.

    Returns:
        Config: ``cfg``.

    Raises:
        ConfigError: A type outside the registries, a key the configured
            class does not take (:func:`check_option_keys`), or a length the
            schedule does not fit (a ``OneCycleLR`` shorter than the run:
            :func:`_check_one_cycle_length`).

    Examples:
        >>> cfg = Config(dict(data_root='data/a', train_dataloader=dict(
        ...     dataset=dict(data_root='data/a'))))
        >>> cfg = merge_cfg_options(cfg, {'data_root': '/mnt/a'})
        >>> cfg.train_dataloader.dataset.data_root
        '/mnt/a'
    """
    if not options:
        return cfg
    check_option_types(options)
    existed = {key for key in options if _walk(cfg, str(key).split('.'))[0]}
    before = _length(cfg)
    follow_variables(cfg, {name: (cfg.get(name, None), new)
                           for name, new in options.items()
                           if name in ROOT_SCOPES or name in SIZE_SCOPES})
    cfg.merge_from_dict(options)
    check_option_keys(cfg, options, existed)
    if not any(str(k).split('.')[0] == 'param_scheduler' for k in options):
        follow_length(cfg, before, '--cfg-options')
    else:
        print_log('--cfg-options sets param_scheduler: kept as given, not '
                  'rescaled to the training length', logger='current')
    _check_one_cycle_length(cfg)
    return cfg


def follow_bases(cfg: Config, path: str) -> None:
    """Apply what ``path`` (a Python config) changes of its bases' variables.

    Every followed variable (:data:`ROOT_SCOPES`, :data:`SIZE_SCOPES`) whose value
    in ``cfg`` differs from its value in a base (any depth) moves its copies
    (:func:`follow_variables`), and a schedule inherited unchanged from a base
    whose training length differs is rescaled (:func:`rescale_schedule`).

    Args:
        cfg (Config): ``path`` loaded (modified in place).
        path (str): The config file.
    """
    ancestors = []
    _collect_bases(path, ancestors, set())
    if not ancestors:
        return
    changes: Dict[str, List[Any]] = {}
    for base in ancestors:  # deepest first
        for name in list(ROOT_SCOPES) + list(SIZE_SCOPES):
            old = base.get(name, None)
            if old is not None and old != cfg.get(name, None) and \
                    old not in changes.setdefault(name, []):
                changes[name].append(old)
    schedule = _plain(cfg.get('param_scheduler', None))
    # The schedule belongs to the deepest base that wrote it as it is now.
    written_for = next((_length(b) for b in ancestors
                        if _plain(b.get('param_scheduler', None)) == schedule),
                       None)
    for name, olds in changes.items():
        for old in olds:
            follow_variables(cfg, {name: (old, cfg.get(name))})
    if written_for is not None and cfg.get('param_scheduler', None):
        follow_length(cfg, written_for, path)


def _collect_bases(path: str, out: list, seen: set) -> None:
    import ast
    import os.path as osp
    if not path.endswith('.py') or path in seen:
        return
    seen.add(path)
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    bases: List[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_'
                for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return
            bases = [value] if isinstance(value, str) else list(value)
    for rel in bases:
        base = osp.normpath(osp.join(osp.dirname(path), rel))
        if not osp.isfile(base):
            continue
        _collect_bases(base, out, seen)
        out.append(Config.fromfile(base))


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction`` that names an item without ``=`` in one line.

    ``--cfg-options train_cfg.max_iters 2`` would otherwise stop argparse with
    mmengine's ``ValueError`` traceback; here it is argparse's one-line usage
    error naming the item and the ``KEY=VALUE`` it should be. An item whose key
    is empty or has an empty part (``=1``, ``model..s=1``, ``model.=1``), which
    mmengine would set as a key ``''`` nothing reads, is refused the same way.

    Raises:
        argparse.ArgumentError: An item without ``=`` or with an empty key part
            (argparse prints it and exits with status 2).
    """

    def __call__(self, parser, namespace, values, option_string=None):
        items = [values] if isinstance(values, str) else list(values)
        for i, item in enumerate(items):
            if '=' not in item:
                nxt = items[i + 1] if i + 1 < len(items) else None
                fix = f'{item}={nxt}' if nxt is not None and '=' not in nxt \
                    else f'{item}=VALUE'
                raise argparse.ArgumentError(
                    self, f'item {item!r} has no "=": each item is '
                    f'KEY=VALUE (did you mean {fix}?)')
            key = item.split('=', 1)[0]
            if '' in [part.strip() for part in key.split('.')]:
                raise argparse.ArgumentError(
                    self, f'item {item!r} has an empty key or key part: each '
                    'item is KEY=VALUE with KEY a dotted path (a.b.c)')
        super().__call__(parser, namespace, values, option_string)
