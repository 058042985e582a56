import sys
import types
from unittest import TestCase, mock

import torch
from mmengine.registry import DefaultScope

import oaml_mm
from oaml_mm import register_all_modules, registry
from oaml_mm.errors import EnvironmentCheckError
from oaml_mm.utils import check_dependencies


class TestRegistry(TestCase):

    def test_children_of_mmpretrain(self):
        import mmpretrain.registry as mmp
        for name in registry.__all__:
            ours = getattr(registry, name)
            self.assertIs(ours.parent, getattr(mmp, name), name)
            self.assertEqual(ours.scope, 'oaml_mm')

    def test_parent_components_reachable(self):
        register_all_modules()
        with DefaultScope.overwrite_default_scope('oaml_mm'):
            loss = registry.MODELS.build(dict(type='CrossEntropyLoss'))
            self.assertEqual(type(loss).__module__.split('.')[0],
                             'mmpretrain')
            wrapper_cls = registry.OPTIM_WRAPPERS.get('OptimWrapper')
            self.assertIsNotNone(wrapper_cls)
            self.assertIs(
                registry.OPTIM_WRAPPERS.get('BF16AutocastOptimWrapper'),
                oaml_mm.engine.BF16AutocastOptimWrapper)
            self.assertIs(registry.RUNNERS.get('OAMLRunner'),
                          oaml_mm.engine.OAMLRunner)
            self.assertIs(registry.HOOKS.get('SafeCheckpointHook'),
                          oaml_mm.engine.SafeCheckpointHook)

    def test_version(self):
        self.assertRegex(oaml_mm.__version__, r'^\d+\.\d+\.\d+')
        self.assertEqual(oaml_mm.version_info[:2],
                         tuple(int(x) for x in
                               oaml_mm.__version__.split('.')[:2]))


class TestDependencyCheck(TestCase):

    def test_passes_on_this_machine(self):
        check_dependencies()

    def test_old_mmengine_says_what_to_install(self):
        fake = types.SimpleNamespace(__version__='0.7.0')
        with mock.patch.dict(sys.modules, {'mmengine': fake}):
            with self.assertRaises(EnvironmentCheckError) as cm:
                check_dependencies()
        self.assertIn('mmengine 0.7.0 is installed', str(cm.exception))
        self.assertIn('pip install "mmengine>=0.10,<0.11"',
                      str(cm.exception))


class TestBF16AutocastOptimWrapper(TestCase):

    def test_forward_runs_in_bf16(self):
        from oaml_mm.engine import BF16AutocastOptimWrapper
        model = torch.nn.Linear(4, 2)
        wrapper = BF16AutocastOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        with wrapper.optim_context(model):
            out = model(torch.randn(3, 4))
        self.assertEqual(out.dtype, torch.bfloat16)
        loss = out.float().sum()
        before = model.weight.detach().clone()
        wrapper.update_params(loss)
        self.assertFalse(torch.equal(before, model.weight))
