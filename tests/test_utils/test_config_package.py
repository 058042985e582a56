"""``import oaml_mm`` lets mmengine resolve ``oaml_mm::`` config paths.

End to end from an installed wheel: tests/test_packaging.py. Here: mmengine looks
the package up in the folder of the oaml_mm that is imported, also when the
distribution mmengine finds is an editable install whose location (site-packages)
holds no oaml_mm folder.
"""
import os.path as osp
import tempfile
import unittest
from unittest import mock

import mmengine.config.config as mm_config
from mmengine.config.utils import MODULE2PACKAGE

import oaml_mm
from oaml_mm.utils import register_config_package


class TestRegisterConfigPackage(unittest.TestCase):

    def test_mmengine_finds_the_imported_package(self):
        self.assertEqual(MODULE2PACKAGE['oaml_mm'], 'oaml_mm')
        here = osp.dirname(osp.abspath(oaml_mm.__file__))
        # An editable install: the distribution's location is site-packages,
        # which has no oaml_mm folder (mmengine would look there).
        with tempfile.TemporaryDirectory() as site_packages, mock.patch(
                'pkg_resources.get_distribution',
                return_value=mock.Mock(location=site_packages)):
            self.assertEqual(mm_config.get_installed_path('oaml_mm'), here)
        # Other packages are looked up as before.
        self.assertTrue(osp.isdir(mm_config.get_installed_path('mmengine')))

    def test_idempotent(self):
        lookup = mm_config.get_installed_path
        register_config_package()
        self.assertIs(mm_config.get_installed_path, lookup)


if __name__ == '__main__':
    unittest.main()
