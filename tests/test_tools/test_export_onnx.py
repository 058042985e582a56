"""tools/deployment/export_onnx.py on a tiny model: export, dynamic batch, agreement."""
import contextlib
import io
import os.path as osp
import sys
import tempfile
import unittest

import numpy as np
import torch

from tests.test_apis.helpers import write_checkpoint, write_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'deployment'))
import export_onnx  # noqa: E402


class TestExportOnnx(unittest.TestCase):

    def test_export_matches_pytorch(self):
        import onnxruntime as ort
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write_config(osp.join(tmp, 'tiny.py'))
            rec = write_checkpoint(osp.join(tmp, 'tiny.pth'))
            out_file = osp.join(tmp, 'm.onnx')
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                code = export_onnx.main([cfg, osp.join(tmp, 'tiny.pth'),
                                         out_file])
            self.assertEqual(code, 0)
            text = buf.getvalue()
            self.assertRegex(text, r'largest \|onnxruntime - pytorch\| '
                             r'difference: [0-9.e-]+')
            diff = float(text.strip().split()[-1])
            self.assertLess(diff, 1e-3)
            sess = ort.InferenceSession(out_file,
                                        providers=['CPUExecutionProvider'])
            self.assertEqual([o.name for o in sess.get_outputs()],
                             ['embedding', 'norm', 'feature_map', 'visibility'])
            self.assertEqual(sess.get_inputs()[0].shape[0], 'batch')
            # Same embedding as the inference API (no flip) on a batch of 3.
            x = torch.randint(0, 256, (3, 3, 112, 112), dtype=torch.uint8)
            emb, norm, fmap, vis = sess.run(None, {'images': x.float().numpy()})
            ref = rec.model.eval()
            with torch.no_grad():
                want = ref.extract(ref.data_preprocessor.normalize(x),
                                   flip_test=False, return_feature_maps=True)
            np.testing.assert_allclose(emb, want['embedding'].numpy(),
                                       atol=1e-4)
            np.testing.assert_allclose(vis, want['visibility'].numpy(),
                                       atol=1e-4)
            self.assertEqual(fmap.shape, (3, 64, 7, 7))
            self.assertEqual(norm.shape, (3, 1))

    def test_checkpoint_without_occlusion_head_is_flagged(self):
        # A backbone-only file exports (visibility all ones), and the report
        # says so instead of a plain "wrote".
        from oaml_mm.utils import atomic_save, safe_load_checkpoint
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write_config(osp.join(tmp, 'tiny.py'))
            path = osp.join(tmp, 'tiny.pth')
            write_checkpoint(path)
            ckpt = safe_load_checkpoint(path)
            ckpt['state_dict'] = {k: v for k, v in ckpt['state_dict'].items()
                                  if not k.startswith('neck.')}
            atomic_save(ckpt, path)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                code = export_onnx.main([cfg, path, osp.join(tmp, 'm.onnx')])
            self.assertEqual(code, 0)
            self.assertIn("has no occlusion head: the exported 'visibility' "
                          'output is all ones', buf.getvalue())

    def test_bad_checkpoint_exit_2(self):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write_config(osp.join(tmp, 'tiny.py'))
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = export_onnx.main([cfg, osp.join(tmp, 'none.pth'),
                                         osp.join(tmp, 'm.onnx')])
            self.assertEqual(code, 2)
            self.assertIn('no such checkpoint', err.getvalue())
            self.assertFalse(osp.exists(osp.join(tmp, 'm.onnx')))

    def test_damaged_checkpoint_is_not_exported(self):
        from tests.test_apis.helpers import flip_tensor_byte
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write_config(osp.join(tmp, 'tiny.py'))
            ckpt = osp.join(tmp, 'tiny.pth')
            write_checkpoint(ckpt)
            flip_tensor_byte(ckpt)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = export_onnx.main([cfg, ckpt, osp.join(tmp, 'm.onnx')])
            self.assertEqual(code, 2)
            self.assertRegex(err.getvalue(), r'^error: .*tiny\.pth: member '
                             r'.* fails its CRC check')
            self.assertFalse(osp.exists(osp.join(tmp, 'm.onnx')))

    def test_bad_out_path_exit_2_before_loading(self):
        with tempfile.TemporaryDirectory() as tmp:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = export_onnx.main(['none.py', 'none.pth', tmp])
            self.assertEqual(code, 2)
            self.assertIn(f"out '{tmp}' is a directory", err.getvalue())


if __name__ == '__main__':
    unittest.main()
