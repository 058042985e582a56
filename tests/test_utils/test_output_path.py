"""check_output_file: output paths refused up front, good ones left as they were."""
import os
import os.path as osp
import tempfile
import unittest

from oaml_mm.errors import OutputPathError
from oaml_mm.utils import check_output_file


class TestCheckOutputFile(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def test_good_paths_pass_and_existing_file_is_kept(self):
        path = osp.join(self.tmp.name, 'a', 'b', 'm.json')
        check_output_file(path)
        self.assertTrue(osp.isdir(osp.dirname(path)))
        self.assertEqual(os.listdir(osp.dirname(path)), [])  # probe removed
        with open(path, 'w') as f:
            f.write('old')
        check_output_file(path)
        with open(path) as f:
            self.assertEqual(f.read(), 'old')
        check_output_file(osp.join(self.tmp.name, 'p.JPG'), image=True)
        check_output_file(osp.join(self.tmp.name, 'noext'), image=True)

    def test_bad_paths(self):
        blocker = osp.join(self.tmp.name, 'file')
        open(blocker, 'w').close()
        for path, image, msg in (
                (self.tmp.name, False, 'is a directory; expected a file path'),
                (self.tmp.name + os.sep + 'sub' + os.sep, False,
                 'is a directory'),
                ('/proc/oaml_x.json', False, 'cannot be written'),
                (osp.join(blocker, 'x.json'), False, 'cannot be written'),
                (osp.join(self.tmp.name, 'x.txt'), True,
                 'OpenCV cannot write .txt pictures')):
            with self.subTest(path=path), self.assertRaisesRegex(
                    OutputPathError, msg) as cm:
                check_output_file(path, '--out', image=image)
            self.assertIn(f"--out '{path}'", str(cm.exception))


if __name__ == '__main__':
    unittest.main()
