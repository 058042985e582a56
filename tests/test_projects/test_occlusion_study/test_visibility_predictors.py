"""visibility_predictors.py: checkpoints are read as the tools read them."""
import os.path as osp
import tempfile
import unittest

import torch

from oaml_mm.utils import atomic_save
from projects.occlusion_study import visibility_predictors as vp


class TestVisibilityPredictorsCheckpoints(unittest.TestCase):

    def test_truncated_checkpoint_is_one_line(self):
        # torch.load's RuntimeError traceback (PytorchStreamReader ...) before.
        with tempfile.TemporaryDirectory() as d:
            good = osp.join(d, 'seg.pth')
            atomic_save(dict(state_dict={'segmenter.w': torch.zeros(64)}),
                        good)
            with open(good, 'rb') as f:
                data = f.read()
            cut = osp.join(d, 'cut.pth')
            with open(cut, 'wb') as f:
                f.write(data[:len(data) // 2])
            for argv in (['swap', cut, good, osp.join(d, 'out.pth')],
                         ['swap', good, cut, osp.join(d, 'out.pth')]):
                with self.subTest(argv=argv), \
                        self.assertRaises(SystemExit) as cm:
                    vp.main(argv)
                self.assertRegex(
                    str(cm.exception), r'^CheckpointError: .*cut\.pth: '
                    r'incomplete or damaged checkpoint \(truncated write\?\)')
                self.assertFalse(osp.exists(osp.join(d, 'out.pth')))


if __name__ == '__main__':
    unittest.main()
