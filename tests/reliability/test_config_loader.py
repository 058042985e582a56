"""Bad configs: load_config names the file and line; the tools print it."""
import os.path as osp
import sys
import tempfile
from unittest import TestCase

from oaml_mm.errors import ConfigError
from oaml_mm.utils import load_config
from tests.reliability._util import run_tool


class TestLoadConfig(TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, text):
        path = osp.join(self.tmp.name, name)
        with open(path, 'wb') as f:
            f.write(text if isinstance(text, bytes) else text.encode())
        return path

    def test_errors_name_file_and_line(self):
        cases = [
            ('syntax.py', 'a = 1\nb = (\n', r'syntax\.py, line 2, column 5: '
             'invalid Python syntax'),
            ('bytes.py', b'a = 1\nb = 2\n\xff\n', r'bytes\.py, line 3: byte 12 '
             r'\(0xff\) is not UTF-8'),
            ('name.py', 'a = 1\nb = nope + 1\n',
             r'name\.py, line 2: NameError: name .nope. is not defined'),
            ('base.py', "_base_ = ['./gone.py']\n",
             r'base\.py: a file it refers to .*gone\.py'),
            ('missing.py', None, r'missing\.py: no such config file'),
        ]
        for name, text, pattern in cases:
            path = self.write(name, text) if text is not None else \
                osp.join(self.tmp.name, name)
            with self.assertRaisesRegex(ConfigError, pattern, msg=name):
                load_config(path)

    def test_error_in_a_base_names_the_base(self):
        self.write('bad_base.py', 'x = 1\ny = 1 / 0\n')
        path = self.write('child.py', "_base_ = ['./bad_base.py']\nz = 2\n")
        with self.assertRaisesRegex(
                ConfigError, r'bad_base\.py, line 2 \(base of .*child\.py\): '
                'ZeroDivisionError'):
            load_config(path)

    def test_good_config_loads(self):
        self.write('b.py', 'lr = 0.1\n')
        cfg = load_config(self.write('c.py', "_base_ = ['./b.py']\nx = 2\n"))
        self.assertEqual((cfg.lr, cfg.x), (0.1, 2))

    def test_tools_print_the_error(self):
        path = self.write('syntax.py', 'a = 1\nb = (\n')
        for tool in (['tools/train.py', path],
                     ['tools/test.py', path, path]):
            proc = run_tool([sys.executable, *tool])
            self.assertEqual(proc.returncode, 1, tool)
            self.assertIn('ConfigError: ', proc.stderr)
            self.assertIn('syntax.py, line 2', proc.stderr)
            self.assertNotIn('Traceback', proc.stderr)
