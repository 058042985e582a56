"""Every configs/_base_/models/*.py builds (each once)."""
import os.path as osp
import unittest

from mmengine.config import Config

from oaml_mm.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODEL_DIR = osp.join(ROOT, 'configs', '_base_', 'models')
EXPECTED = {
    # name: (depth, QAConv branch, occlusion head)
    'oaml_ir18': (18, True, True),
    'oaml_ir50': (50, True, True),
    'oaml_ir101': (101, True, True),
    'adaface_ir18': (18, False, False),
    'adaface_ir50': (50, False, False),
}


class TestModelConfigs(unittest.TestCase):

    def test_build(self):
        for name, (depth, qaconv, neck) in EXPECTED.items():
            with self.subTest(name=name):
                cfg = Config.fromfile(osp.join(MODEL_DIR, f'{name}.py'))
                model = MODELS.build(cfg.model)
                self.assertEqual(model.backbone.depth, depth)
                self.assertEqual(model.qaconv_head is not None, qaconv)
                self.assertEqual(model.neck is not None, neck)
                self.assertEqual(model.data_preprocessor.channel_order, 'bgr')
                if qaconv:
                    self.assertEqual(model.loss_weights,
                                     dict(adaface=0.1, qaconv=0.9,
                                          occlusion=0.1))
                del model


if __name__ == '__main__':
    unittest.main()
