"""oaml_mm.apis.calibrate: the up-front checks and the summary line.

calibrate_checkpoint itself runs in tests/test_tools/test_trained_thresholds.py.
"""
import os
import os.path as osp
import tempfile
import unittest

import torch

from oaml_mm.apis.calibrate import check_calibration_inputs, format_calibration
from oaml_mm.errors import CheckpointError, OutputPathError


class TestCalibrate(unittest.TestCase):

    def test_check_calibration_inputs(self):
        with tempfile.TemporaryDirectory() as d:
            ckpt = osp.join(d, 'c.pth')
            torch.save(dict(state_dict={'w': torch.zeros(2)}), ckpt)
            check_calibration_inputs(ckpt, osp.join(d, 'out.pth'))
            with self.assertRaisesRegex(OutputPathError, 'is a directory'):
                check_calibration_inputs(ckpt, d + os.sep)
            notes = osp.join(d, 'notes.pth')
            with open(notes, 'w') as f:
                f.write('not a checkpoint\n')
            with self.assertRaisesRegex(CheckpointError, r'notes\.pth'):
                check_calibration_inputs(notes, osp.join(d, 'out.pth'))

    def test_format_calibration(self):
        cal = dict(source='calib', far=1e-3, decision_branch='fused',
                   branches=dict(adaface=dict(threshold=0.312345),
                                 fused=dict(threshold=-1.5)))
        self.assertEqual(
            format_calibration(cal, 'o.pth'),
            'calibrated on calib at FAR=0.001 (decision: fused): adaface '
            '0.3123, fused -1.5; written to o.pth')


if __name__ == '__main__':
    unittest.main()
