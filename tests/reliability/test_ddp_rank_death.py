"""Fault: one of two CPU (gloo) ranks is SIGKILLed mid-training.

``tools/dist_train.sh`` runs ``torchrun``; its agent sees the dead worker, stops the
survivor and exits non-zero. Without that the survivor would block in the gradient
all-reduce until the collective timeout (30 minutes by default).
"""
import os.path as osp
import tempfile
import time
from unittest import TestCase

from tests.reliability._util import free_port, run_tool, tool_env
from tests.toy_components import write_toy_config_file

#: Upper bound on seconds from the death of rank 1 to the exit of the whole job.
BOUND_S = 60


class TestRankDeath(TestCase):

    def test_job_exits_soon_after_a_rank_dies(self):
        with tempfile.TemporaryDirectory() as tmp:
            stamp = osp.join(tmp, 'rank1_died_at')
            work = osp.join(tmp, 'work')
            cfg = write_toy_config_file(
                osp.join(tmp, 'toy.py'), work, max_epochs=50,
                extra_hooks=[dict(type='RankKillHook', at_iter=4, rank=1,
                                  stamp=stamp)])
            env = tool_env()
            env['PORT'] = str(free_port())
            proc = run_tool(['bash', 'tools/dist_train.sh', cfg, '2'],
                            timeout=240, env=env)
            ended = time.time()
            self.assertNotEqual(proc.returncode, 0, proc.stderr[-3000:])
            self.assertTrue(osp.isfile(stamp), proc.stderr[-3000:])
            with open(stamp) as f:
                died = float(f.read())
            elapsed = ended - died
            print(f'job exited {elapsed:.1f} s after rank 1 died')
            self.assertLess(elapsed, BOUND_S)
            # The agent names the failed rank and its signal.
            self.assertIn('SIGKILL', proc.stderr)
            # 50 epochs x 3 iterations per rank would take far longer: the
            # survivor did not finish training on its own.
            self.assertFalse(osp.exists(osp.join(work, 'epoch_50.pth')))
