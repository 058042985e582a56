"""The README's Python example runs as printed, on a tiny checkpoint.

The block after ``<!-- readme-python-example`` in README.md is executed in a folder
laid out like the one ``make demo`` leaves: ``work_dirs/synthface_demo/seed0/oaml``
(dumped config, calibrated checkpoint, ``last_checkpoint``) and the image files it
names (112x112 crops).
"""
import contextlib
import io
import os
import os.path as osp
import shutil
import tempfile
import unittest

from .helpers import write_checkpoint, write_config, write_face

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def readme_example(marker: str = 'readme-python-example') -> str:
    """The first ``python`` code block after ``<!-- marker`` in README.md."""
    with open(osp.join(ROOT, 'README.md')) as f:
        text = f.read()
    block = text.split(f'<!-- {marker}')[1]
    return block.split('```python\n', 1)[1].split('```', 1)[0]


class TestReadmeExample(unittest.TestCase):

    def test_example_runs_and_finds_the_enrolled_person(self):
        code = readme_example()
        self.assertLessEqual(len(code.strip().splitlines()), 12)
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory() as tmp:
            work = osp.join(tmp, 'work_dirs', 'synthface_demo', 'seed0', 'oaml')
            os.makedirs(work)
            write_config(osp.join(work, 'oaml_ir18_synthface.py'))
            ckpt = osp.join(work, 'iter_500.pth')
            write_checkpoint(ckpt)
            with open(osp.join(work, 'last_checkpoint'), 'w') as f:
                f.write(ckpt)
            for name, seed in (('a.jpg', 1), ('b.jpg', 2), ('alice_1.jpg', 3),
                               ('alice_2.jpg', 3), ('bob_1.jpg', 4)):
                write_face(tmp, name, seed)
            shutil.copy(osp.join(tmp, 'alice_1.jpg'), osp.join(tmp, 'probe.jpg'))
            scope, buf = {}, io.StringIO()
            try:
                os.chdir(tmp)
                with contextlib.redirect_stdout(buf):
                    exec(compile(code, 'README.md', 'exec'), scope)
            finally:
                os.chdir(cwd)
        out, hits = scope['out'], scope['hits']
        self.assertEqual(set(out['scores']), {'adaface', 'qaconv', 'fused'})
        self.assertEqual(out['branch'], 'fused')
        self.assertIsInstance(out['same'], bool)
        self.assertEqual([h['name'] for h in hits], ['alice', 'bob'])
        self.assertIn('alice', buf.getvalue().splitlines()[-1])

    def test_mmpretrain_config_builds_with_mmpretrain_registry(self):
        # README, "From your own MMPretrain config": what MMPretrain's own
        # tools/train.py does with it (custom_imports, its default scope).
        from mmengine.config import Config
        from mmengine.registry import DefaultScope
        from mmpretrain.registry import MODELS
        with tempfile.TemporaryDirectory() as tmp:
            path = osp.join(tmp, 'my_face_config.py')
            with open(path, 'w') as f:
                f.write(readme_example('readme-mmpretrain-config'))
            cfg = Config.fromfile(path)
        self.assertEqual(cfg.default_scope, 'oaml_mm')
        # MMPretrain's runtime base, its hooks kept in MMPretrain's scope.
        self.assertEqual(cfg.default_hooks.logger._scope_, 'mmpretrain')
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            model = MODELS.build(cfg.model)
        self.assertEqual(type(model).__name__, 'OAMLRecognizer')
        self.assertEqual(type(model.head).__name__, 'AdaFaceHead')
        self.assertIsNone(model.qaconv_head)


if __name__ == '__main__':
    unittest.main()
