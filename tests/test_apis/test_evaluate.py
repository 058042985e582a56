"""oaml_mm.apis.evaluate: the --out checks and the metrics JSON of tools/test.py.

evaluate_checkpoint itself runs in tests/test_tools/test_train_test_tools.py and
tests/test_packaging.py (``mim test``).
"""
import json
import os
import os.path as osp
import tempfile
import unittest

from oaml_mm.apis.evaluate import check_metric_outputs, write_metrics_json
from oaml_mm.errors import OutputPathError


class TestEvaluate(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def test_check_metric_outputs(self):
        check_metric_outputs(None)
        check_metric_outputs(osp.join(self.tmp.name, 'new', 'm.json'))
        with self.assertRaisesRegex(OutputPathError, 'is a directory'):
            check_metric_outputs(self.tmp.name + os.sep)
        # The CSV next to --out is checked too.
        os.makedirs(osp.join(self.tmp.name, 'm.csv'))
        with self.assertRaisesRegex(OutputPathError, 'the CSV next to --out'):
            check_metric_outputs(osp.join(self.tmp.name, 'm.json'))

    def test_write_metrics_json(self):
        out = osp.join(self.tmp.name, 'sub', 'm.json')
        write_metrics_json({'b/adaface/AUC': 90, 'a/qaconv/EER': 12.5,
                            'a/note': 'x'}, out)
        with open(out) as f:
            text = f.read()
        data = json.loads(text)
        self.assertEqual(data, {'a/note': 'x', 'a/qaconv/EER': 12.5,
                                'b/adaface/AUC': 90.0})
        self.assertIsInstance(data['b/adaface/AUC'], float)
        self.assertLess(text.index('a/note'), text.index('b/adaface'))


if __name__ == '__main__':
    unittest.main()
