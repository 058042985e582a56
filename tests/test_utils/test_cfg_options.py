"""oaml_mm/utils/cfg_options.py: variables, sizes and schedules that follow."""
import os.path as osp
import tempfile
import unittest

import torch
from mmengine.config import Config
from mmengine.registry import PARAM_SCHEDULERS

from oaml_mm.errors import ConfigError
from oaml_mm.utils import (CfgOptionsAction, check_option_keys,
                           check_option_types, load_config, merge_cfg_options,
                           rescale_schedule)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SYNTHFACE = osp.join(ROOT, 'configs', 'synthface', 'oaml_ir18_synthface.py')


def lr_at(cfg: Config, iters) -> dict:
    """Learning rate of ``cfg``'s schedule at the given iterations, as the
    runner steps iteration-based schedulers (once after every iteration)."""
    lr = cfg.optim_wrapper.optimizer.lr
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheds = [PARAM_SCHEDULERS.build(dict(s, optimizer=opt))
              for s in cfg.param_scheduler]
    out = {}
    for it in range(max(iters) + 1):
        if it in iters:
            out[it] = round(opt.param_groups[0]['lr'] / lr, 9)
        for s in scheds:
            s.step()
    return out


class TestScheduleFollowsLength(unittest.TestCase):

    def test_cfg_option_max_iters_rescales_the_schedule(self):
        # Once: 1500 iterations kept the 500-iteration decay points, so two
        # thirds of the run trained at 1 % of the learning rate.
        cfg = load_config(SYNTHFACE)
        merge_cfg_options(cfg, {'train_cfg.max_iters': 1500})
        lr = lr_at(cfg, [0, 60, 75, 1049, 1050, 1349, 1350, 1499])
        self.assertAlmostEqual(lr[0], 0.05)
        self.assertLess(lr[60], 0.95)  # still warming up
        self.assertAlmostEqual(lr[75], 1.0)
        self.assertAlmostEqual(lr[1049], 1.0)
        self.assertAlmostEqual(lr[1050], 0.1)
        self.assertAlmostEqual(lr[1349], 0.1)
        self.assertAlmostEqual(lr[1350], 0.01)
        self.assertAlmostEqual(lr[1499], 0.01)
        # The top-level variable works the same way.
        cfg = load_config(SYNTHFACE)
        merge_cfg_options(cfg, {'max_iters': 1500})
        self.assertEqual(cfg.train_cfg.max_iters, 1500)
        self.assertEqual(lr_at(cfg, [1049, 1050]), {1049: 1.0, 1050: 0.1})

    def test_explicit_schedule_is_kept(self):
        cfg = load_config(SYNTHFACE)
        sched = [dict(type='MultiStepLR', by_epoch=False, milestones=[100],
                      gamma=0.1)]
        merge_cfg_options(cfg, {'train_cfg.max_iters': 1500,
                                'param_scheduler': sched})
        self.assertEqual(cfg.param_scheduler[0]['milestones'], [100])

    def test_epoch_schedule_and_short_lengths(self):
        cfg = Config(dict(train_cfg=dict(max_epochs=10), param_scheduler=[
            dict(type='LinearLR', by_epoch=True, begin=0, end=1),
            dict(type='MultiStepLR', by_epoch=True, milestones=[12, 20, 24]),
            dict(type='LinearLR', by_epoch=False, begin=0, end=50)]))
        notes = rescale_schedule(cfg, 26, 10, by_epoch=True)
        self.assertEqual(cfg.param_scheduler[0]['end'], 1)
        self.assertEqual(cfg.param_scheduler[1]['milestones'], [4, 7, 9])
        self.assertEqual(cfg.param_scheduler[2]['end'], 50)  # iterations
        self.assertEqual(notes, ['MultiStepLR milestones [12, 20, 24] -> '
                                 '[4, 7, 9]'])
        cfg = Config(dict(param_scheduler=dict(
            type='LinearLR', by_epoch=False, begin=10, end=20)))
        rescale_schedule(cfg, 100, 5)  # a dict, not a list: kept a dict
        self.assertEqual((cfg.param_scheduler.begin, cfg.param_scheduler.end),
                         (0, 1))

    def test_one_cycle_follows_the_training_length(self):
        # OneCycleLR's length is total_steps: it stayed at the config's 3000
        # when the segmenter config ran 800 iterations.
        cfg = load_config('configs/synthface/occlusion_segmenter_synthface.py')
        old = cfg.train_cfg.max_iters
        self.assertEqual(cfg.param_scheduler[0]['total_steps'], old)
        merge_cfg_options(cfg, {'train_cfg.max_iters': 800})
        self.assertEqual(cfg.param_scheduler[0]['total_steps'], 800)
        cfg = load_config('configs/synthface/occlusion_segmenter_synthface.py')
        self.assertEqual(rescale_schedule(cfg, old, 800),
                         [f'OneCycleLR total_steps {old} -> 800'])

    def test_one_cycle_shorter_than_the_run_is_refused(self):
        # Kept as given, total_steps=500 would stop an 800-iteration run at
        # iteration 501 (mmengine: "Tried to step 502 times").
        path = 'configs/synthface/occlusion_segmenter_synthface.py'
        with self.assertRaisesRegex(
                ConfigError, r'param_scheduler\[0\] OneCycleLR total_steps=500 '
                r'is shorter than train_cfg\.max_iters=800'):
            merge_cfg_options(load_config(path), {
                'train_cfg.max_iters': 800,
                'param_scheduler.0.total_steps': 500})
        with self.assertRaisesRegex(ConfigError, 'max_iters=3000'):
            merge_cfg_options(load_config(path),
                              {'param_scheduler.0.total_steps': 2999})
        # As long as the run or longer: kept as given.
        cfg = merge_cfg_options(load_config(path), {
            'train_cfg.max_iters': 800, 'param_scheduler.0.total_steps': 900})
        self.assertEqual(cfg.param_scheduler[0]['total_steps'], 900)

    def test_study_tool_and_users_get_one_schedule(self):
        from projects.occlusion_study import synthface_runs
        with tempfile.TemporaryDirectory() as tmp:
            study = load_config(synthface_runs.write_run_config(
                'oaml', tmp, '/data/sf', max_iters=1234))
        user = load_config(SYNTHFACE)
        merge_cfg_options(user, {'train_cfg.max_iters': 1234})
        self.assertEqual(study.param_scheduler, user.param_scheduler)
        self.assertEqual(study.param_scheduler[1]['milestones'],
                         [int(1234 * 0.7), int(1234 * 0.9)])
        self.assertEqual(study.param_scheduler[0]['end'], 1234 // 20)


class TestChildConfigsFollow(unittest.TestCase):
    """A real inheriting config that sets only a variable."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def _child(self, body: str) -> Config:
        path = osp.join(self.tmp.name, 'child.py')
        with open(path, 'w') as f:
            f.write(f'_base_ = [{SYNTHFACE!r}]\n{body}\n')
        return load_config(path)

    def test_data_root_alone_moves_the_datasets(self):
        # Once the base's dataset paths stayed: the run trained elsewhere.
        base = load_config(SYNTHFACE)
        self.assertEqual(base.data_root, 'data/synthface')
        cfg = self._child("data_root = '/mnt/other'")
        parts = cfg.train_dataloader.dataset.datasets
        self.assertEqual([d.data_root for d in parts],
                         ['/mnt/other/train', '/mnt/other/occluded'])
        # Other roots (validation, occlusion stream) are not moved.
        self.assertEqual(cfg.val_dataloader, base.val_dataloader)

    def test_train_num_classes_sizes_the_margin_head(self):
        cfg = self._child('train_num_classes = 123')
        self.assertEqual(cfg.model.head.num_classes, 123)
        self.assertEqual(
            cfg.train_dataloader.dataset.datasets[0].num_classes, 123)
        from oaml_mm.registry import MODELS
        head = MODELS.build(cfg.model.head)
        self.assertEqual(tuple(head.kernel.shape), (128, 123))

    def test_training_length_alone_rescales_the_schedule(self):
        for body in ('max_iters = 1500',
                     "train_cfg = dict(type='IterBasedTrainLoop', "
                     'max_iters=1500)'):
            cfg = self._child(body)
            self.assertEqual(cfg.train_cfg.max_iters, 1500)
            self.assertEqual(lr_at(cfg, [1049, 1050, 1350]),
                             {1049: 1.0, 1050: 0.1, 1350: 0.01})
        # A child with its own schedule keeps it.
        cfg = self._child(
            'max_iters = 1500\nparam_scheduler = [dict(type="MultiStepLR", '
            'by_epoch=False, milestones=[100])]')
        self.assertEqual(cfg.param_scheduler[0]['milestones'], [100])


class TestOptionTypes(unittest.TestCase):

    def test_only_registered_types_from_the_command_line(self):
        check_option_types({'model.head.type': 'AdaFaceHead',
                            'model.backbone.type': 'mmpretrain.ResNet',
                            'param_scheduler': [dict(type='MultiStepLR')]})
        for key, value in (('model.type', 'os.system'),
                           ('custom_hooks', [dict(type='subprocess.call')]),
                           ('model.head.type', 'oaml_mm.os.system'),
                           ('model.type', 'builtins.eval')):
            with self.assertRaisesRegex(ConfigError,
                                        '^--cfg-options .*is not a registered '
                                        'component name'):
                check_option_types({key: value})
        with self.assertRaisesRegex(ConfigError, 'may not import modules'):
            check_option_types({'custom_imports.imports': ['antigravity']})
        cfg = Config(dict(model=dict(type='ToyClassifier')))
        with self.assertRaises(ConfigError):
            merge_cfg_options(cfg, {'model.type': 'os.system'})
        self.assertEqual(cfg.model.type, 'ToyClassifier')  # nothing merged

    def test_tools_refuse_in_one_line(self):
        import sys

        from tests.reliability._util import run_tool
        from tests.toy_components import write_toy_config_file
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write_toy_config_file(osp.join(tmp, 'toy.py'),
                                        osp.join(tmp, 'w'))
            ckpt = osp.join(tmp, 'x.pth')
            open(ckpt, 'wb').close()
            flag = osp.join(tmp, 'ran')
            opt = 'model.type=os.system'
            # tools/calibrate.py and visualize_pipeline.py call the same
            # merge_cfg_options inside their OAMLError handlers.
            for tool in (['tools/train.py', cfg], ['tools/test.py', cfg, ckpt]):
                proc = run_tool([sys.executable, *tool, '--cfg-options', opt,
                                 f'model.command=touch {flag}'], timeout=120)
                self.assertNotEqual(proc.returncode, 0, tool)
                self.assertNotIn('Traceback', proc.stderr, tool)
                self.assertIn("model.type='os.system' is not a registered "
                              'component name', proc.stderr.strip()
                              .splitlines()[-1], tool)
                self.assertFalse(osp.exists(flag), tool)


class TestOptionKeys(unittest.TestCase):

    def test_a_key_the_component_does_not_take_is_one_config_error(self):
        for key, value, want in (
                ('train_cfg.max_iter', 2,
                 r"^--cfg-options train_cfg\.max_iter: IterBasedTrainLoop takes "
                 r"no keyword 'max_iter' \(did you mean 'max_iters'\?\); it "
                 r"accepts: .*max_iters"),
                ('model.qaconv_head.vis_rnage', (0.2, 0.8),
                 r"^--cfg-options model\.qaconv_head\.vis_rnage: QAConvHead "
                 r"takes no keyword 'vis_rnage' \(did you mean 'vis_range'\?\)"),
                ('model.backbone.imput_size', 64,
                 r"IResNet takes no keyword 'imput_size' \(did you mean "
                 r"'input_size'\?\)")):
            with self.subTest(key=key), self.assertRaisesRegex(ConfigError,
                                                               want):
                load_config(SYNTHFACE, {key: value})

    def test_accepted_keys_pass(self):
        # New keys the class takes, keys the config already has, keys of
        # untyped dicts (dataloaders, test_cfg) and of **kwargs classes.
        cfg = load_config(SYNTHFACE, {
            'train_cfg.max_iters': 4, 'model.backbone.input_size': 64,
            'model.qaconv_head.feat_size': None,
            'model.test_cfg.vis_range': None,
            'train_dataloader.batch_size': 8,
            'default_hooks.checkpoint.max_keep_ckpts': 1,
            'param_scheduler.0.convert_to_iter_based': True})
        self.assertEqual(cfg.train_cfg.max_iters, 4)
        self.assertIsNone(cfg.model.qaconv_head.feat_size)
        cfg = Config(dict(model=dict(type='QAConvHead', vis_rnage=1)))
        check_option_keys(cfg, {'model.vis_rnage': 1},
                          existed={'model.vis_rnage'})
        with self.assertRaisesRegex(ConfigError, 'vis_rnage'):
            check_option_keys(cfg, {'model.vis_rnage': 1})

    def test_an_item_without_equals_is_one_usage_error(self):
        import argparse
        parser = argparse.ArgumentParser(exit_on_error=False)
        parser.add_argument('--cfg-options', nargs='+',
                            action=CfgOptionsAction)
        with self.assertRaisesRegex(
                argparse.ArgumentError, r"item 'train_cfg\.max_iters' has no "
                r'"=".*did you mean train_cfg\.max_iters=2\?'):
            parser.parse_args(['--cfg-options', 'train_cfg.max_iters', '2'])
        args = parser.parse_args(['--cfg-options', 'train_cfg.max_iters=2',
                                  'model.test_cfg.vis_range=None'])
        self.assertEqual(args.cfg_options, {'train_cfg.max_iters': 2,
                                            'model.test_cfg.vis_range': None})
        # An empty key (part) would become a key '' nothing reads.
        for item in ('=1', 'model..s=1', 'model.=1', ' =1'):
            with self.assertRaisesRegex(argparse.ArgumentError,
                                        'has an empty key', msg=item):
                parser.parse_args(['--cfg-options', item])
        # A value may hold '=' (the key is what precedes the first one).
        self.assertEqual(parser.parse_args(
            ['--cfg-options', 'a==b']).cfg_options, {'a': '=b'})

    def test_tools_refuse_in_one_line(self):
        import sys

        from tests.reliability._util import run_tool
        for opts in (['train_cfg.max_iter=2'], ['train_cfg.max_iters', '2']):
            proc = run_tool([sys.executable, 'tools/train.py', SYNTHFACE,
                             '--cfg-options', *opts], timeout=120)
            self.assertNotEqual(proc.returncode, 0, opts)
            self.assertNotIn('Traceback', proc.stderr, opts)
            self.assertIn("did you mean 'max_iters'" if len(opts) == 1 else
                          'did you mean train_cfg.max_iters=2',
                          proc.stderr.strip().splitlines()[-1], opts)


if __name__ == '__main__':
    unittest.main()
