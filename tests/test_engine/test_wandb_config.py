"""The W&B runtime fragment builds its visualizer without wandb or a network."""
import os.path as osp
import sys
import tempfile
import unittest

from mmengine.registry import init_default_scope

from oaml_mm.registry import VISUALIZERS
from oaml_mm.utils.config import load_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class TestWandbConfig(unittest.TestCase):

    def test_builds_lazily(self):
        cfg = load_config(osp.join(ROOT, 'configs', 'synthface',
                                   'oaml_ir18_synthface_wandb.py'))
        types = [b['type'] for b in cfg.visualizer.vis_backends]
        self.assertEqual(types, ['LocalVisBackend', 'TensorboardVisBackend',
                                 'WandbVisBackend'])
        # the rest of the demo config is untouched
        self.assertEqual(cfg.model.type, 'OAMLRecognizer')
        had_wandb = 'wandb' in sys.modules
        init_default_scope('oaml_mm')
        with tempfile.TemporaryDirectory() as tmp:
            vis = VISUALIZERS.build(dict(cfg.visualizer, save_dir=tmp,
                                         name='wandb_config_test'))
            backends = [type(b).__name__ for b in vis._vis_backends.values()]
        self.assertIn('WandbVisBackend', backends)
        # nothing was imported or contacted while building
        self.assertEqual('wandb' in sys.modules, had_wandb)


if __name__ == '__main__':
    unittest.main()
