"""Fault: files carrying a malicious pickle payload.

Each payload, if unpickled, runs ``open(MARKER, 'w')``; every test asserts the marker
was never created, i.e. the file was refused before anything in it ran.
"""
import io
import os
import os.path as osp
import pickle
import pickletools
import sys
import tempfile
from unittest import TestCase

import torch
from mmengine.config import Config

from oaml_mm.datasets import load_verification_bin, write_verification_bin
from oaml_mm.errors import (CheckpointError, DataFormatError, GalleryError,
                            UnsafeCheckpointError)
from oaml_mm.registry import RUNNERS
from oaml_mm.utils import safe_load_checkpoint
from tests.reliability._util import run_tool, tool_env
from tests.toy_components import toy_config, write_toy_config_file


class _Payload:

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f'open({self.marker!r}, "w").close()', ))


def _executes(marker: str, raw: bytes) -> bool:
    """Guard: unpickling ``raw`` without restriction does run the payload."""
    pickle.loads(raw)
    ran = osp.exists(marker)
    if ran:
        os.remove(marker)
    return ran


class _MarkerCase(TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.marker = osp.join(self.tmp.name, 'PAYLOAD_RAN')

    def tearDown(self):
        self.tmp.cleanup()

    def assertNotRun(self):
        self.assertFalse(osp.exists(self.marker), 'the payload was executed')


class TestMaliciousCheckpoint(_MarkerCase):

    def _files(self):
        """The payload as a legacy pickle and inside a torch zip checkpoint."""
        legacy = osp.join(self.tmp.name, 'legacy.pth')
        raw = pickle.dumps({'state_dict': {}, 'meta': _Payload(self.marker)})
        self.assertTrue(_executes(self.marker, raw))
        with open(legacy, 'wb') as f:
            f.write(raw)
        zipped = osp.join(self.tmp.name, 'zipped.pth')
        torch.save({'state_dict': {'w': torch.ones(2)},
                    'meta': _Payload(self.marker)}, zipped)
        return [legacy, zipped]

    def test_safe_load_checkpoint_refuses(self):
        for path in self._files():
            with self.assertRaisesRegex(UnsafeCheckpointError,
                                        'refused to load'):
                safe_load_checkpoint(path)
        self.assertNotRun()

    def test_runner_resume_and_load_from_refuse(self):
        for path in self._files():
            for resume in (True, False):
                cfg = Config(toy_config(osp.join(self.tmp.name, 'w'),
                                        max_epochs=1))
                cfg.update(load_from=path, resume=resume)
                runner = RUNNERS.build(cfg)
                with self.assertRaises((pickle.UnpicklingError,
                                        CheckpointError)):
                    runner.train() if resume else runner.test()
        self.assertNotRun()

    def test_tools_refuse_with_a_message(self):
        path = self._files()[1]
        cfg = write_toy_config_file(osp.join(self.tmp.name, 'toy.py'),
                                    osp.join(self.tmp.name, 'w'))
        proc = run_tool([sys.executable, 'tools/train.py', cfg, '--resume',
                         path])
        self.assertEqual(proc.returncode, 1)
        self.assertIn('UnsafeCheckpointError: ', proc.stderr)
        self.assertIn('refused to load: it names builtins.exec',
                      proc.stderr)
        self.assertNotIn('Traceback', proc.stderr)
        self.assertNotRun()

    def test_environment_cannot_switch_weights_only_off(self):
        # torch honours this variable wherever weights_only is not passed, as
        # mmengine's loader did: tools/test.py and --resume ran the payload.
        env = tool_env()
        env['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
        cfg = write_toy_config_file(osp.join(self.tmp.name, 'toy.py'),
                                    osp.join(self.tmp.name, 'w'))
        path = self._files()[1]
        lines = []
        for args in (['tools/train.py', cfg, '--resume', path],
                     ['tools/test.py', cfg, path]):
            proc = run_tool([sys.executable, *args], env=env)
            self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
            self.assertNotIn('Traceback', proc.stderr)
            self.assertNotRun()
            lines.append(proc.stderr.strip().splitlines()[-1])
        # The same one-line message from both tools.
        self.assertEqual(lines[0], lines[1])
        self.assertTrue(lines[0].startswith(
            f'UnsafeCheckpointError: {path}: refused to load: it names '
            'builtins.exec'), lines[0])
        self.assertNotIn('\x1b', lines[0])


class TestMaliciousVerificationBin(_MarkerCase):

    def _write(self, obj, protocol=4):
        path = osp.join(self.tmp.name, 'lfw.bin')
        raw = pickle.dumps(obj, protocol=protocol)
        with open(path, 'wb') as f:
            f.write(raw)
        return path, raw

    def test_payload_in_images_or_flags_refused(self):
        for obj in [([b'a', _Payload(self.marker)], [True]),
                    ([b'a', b'b'], [_Payload(self.marker)]),
                    _Payload(self.marker)]:
            for protocol in (2, 4):
                path, raw = self._write(obj, protocol)
                self.assertTrue(_executes(self.marker, raw))
                with self.assertRaisesRegex(DataFormatError,
                                            r'(__builtin__|builtins)\.exec is '
                                            'not admitted'):
                    load_verification_bin(path)
        self.assertNotRun()

    def test_admitted_names_cannot_be_abused(self):
        # Globals the format needs, called with arguments they must refuse.
        cases = {
            'bytes(10**10)': b'\x80\x02c__builtin__\nbytes\nJ\x00\xe4\x0bT\x85R.',
            'codecs other': b'\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00a'
                            b'X\x05\x00\x00\x00rot13\x86R.',
            'numpy dtype': b'\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00O8'
                           b'\x85R.',
            'reconstruct': b'\x80\x02cnumpy.core.multiarray\n_reconstruct\n'
                           b'N\x85R.',
        }
        for name, raw in cases.items():
            pickletools.dis(io.BytesIO(raw), out=io.StringIO())  # well-formed
            path = osp.join(self.tmp.name, 'x.bin')
            with open(path, 'wb') as f:
                f.write(raw)
            with self.assertRaises(DataFormatError, msg=name):
                load_verification_bin(path)

    def test_genuine_file_still_loads(self):
        path = osp.join(self.tmp.name, 'ok.bin')
        write_verification_bin(path, [b'\xff\xd8a', b'\xff\xd8b'], [True],
                               protocol=2)
        self.assertEqual(load_verification_bin(path),
                         ([b'\xff\xd8a', b'\xff\xd8b'], [True]))


class TestMaliciousGallery(_MarkerCase):

    def test_gallery_with_payload_refused(self):
        from oaml_mm.apis import FaceGallery
        path = osp.join(self.tmp.name, 'gallery.pth')
        torch.save({'embeddings': torch.ones(1, 4),
                    'names': [_Payload(self.marker)]}, path)
        # Refused while reading the file, before the recognizer is used.
        with self.assertRaises(GalleryError) as ctx:
            FaceGallery.load(path, recognizer=None)
        self.assertIn('gallery.pth', str(ctx.exception))
        self.assertNotRun()
