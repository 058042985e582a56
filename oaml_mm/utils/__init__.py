"""Utilities: dependency check, weights-only checkpoints, configs."""
from .cfg_options import (ROOT_SCOPES, SIZE_SCOPES, CfgOptionsAction,
                          check_option_keys, check_option_types,
                          follow_variables, merge_cfg_options,
                          rescale_schedule)
from .checkpoint import (TYPE_KEY, atomic_save, from_weights_only,
                         safe_load_checkpoint, to_weights_only)
from .config import find_run_config, load_config, register_config_package
from .dist import (close_process_group, exit_with_launcher, gather_shards,
                   shard_range)
from .output_path import check_output_file
from .setup_env import check_dependencies

__all__ = [
    'check_dependencies', 'to_weights_only', 'from_weights_only',
    'safe_load_checkpoint', 'atomic_save', 'TYPE_KEY', 'load_config',
    'find_run_config',
    'register_config_package',
    'merge_cfg_options', 'ROOT_SCOPES', 'check_output_file', 'close_process_group',
    'SIZE_SCOPES', 'check_option_types', 'follow_variables', 'rescale_schedule',
    'shard_range', 'gather_shards', 'exit_with_launcher', 'check_option_keys',
    'CfgOptionsAction'
]
