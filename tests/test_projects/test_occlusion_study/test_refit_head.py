"""projects.occlusion_study.refit_head: the checkpoint it refits on is verified."""
import contextlib
import io
import os.path as osp
import tempfile
import unittest

from projects.occlusion_study import refit_head
from tests.test_apis.helpers import TINY_MODEL, write_checkpoint, write_config


class TestRefitHead(unittest.TestCase):

    def test_checkpoint_of_another_model_refused(self):
        # mmengine's loader would keep the mismatched backbone at random values
        # and the refit would measure a head on it.
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write_config(osp.join(tmp, 'tiny.py'))
            other = dict(TINY_MODEL, backbone=dict(
                TINY_MODEL['backbone'], embedding_size=16),
                head=dict(TINY_MODEL['head'], in_channels=16))
            ckpt = osp.join(tmp, 'other.pth')
            write_checkpoint(ckpt, model=other)
            out = osp.join(tmp, 'refit.pth')
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = refit_head.main([cfg, ckpt, '--out', out,
                                      '--data-root', osp.join(tmp, 'none')])
            self.assertEqual(rc, 2)
            self.assertRegex(err.getvalue(),
                             r'^refit_head: CheckpointError: .*other\.pth: .*'
                             r'backbone\.')
            self.assertFalse(osp.exists(out))
