from .atomic_backend import AtomicLocalBackend
from .loops import (FaceTestLoop, FaceValLoop, OAMLIterBasedTrainLoop,
                    PredictionCache, bind_metrics)
from .oaml_runner import OAMLRunner, init_cpu_distributed
from .resume_fit import check_resume_fit
from .train_cfg_check import check_dataloader_configs, check_train_config
from .work_dir_lock import WorkDirLock

__all__ = ['OAMLRunner', 'AtomicLocalBackend', 'init_cpu_distributed',
           'FaceValLoop', 'FaceTestLoop', 'OAMLIterBasedTrainLoop',
           'bind_metrics', 'check_resume_fit', 'WorkDirLock',
           'check_train_config', 'PredictionCache',
           'check_dataloader_configs']
