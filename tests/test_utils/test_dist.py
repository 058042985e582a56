"""close_process_group: every rank waits, then the group is gone."""
import os
import tempfile
import unittest

import torch.distributed as dist
import torch.multiprocessing as mp

from oaml_mm.utils import close_process_group


def _worker(rank, init_file, out_dir):
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=2)
    close_process_group()
    with open(os.path.join(out_dir, f'{rank}.txt'), 'w') as f:
        f.write(str(dist.is_initialized()))


class TestCloseProcessGroup(unittest.TestCase):

    def test_no_group_is_a_no_op(self):
        self.assertFalse(dist.is_initialized())
        close_process_group()

    def test_two_ranks_close_the_group(self):
        with tempfile.TemporaryDirectory() as tmp:
            mp.start_processes(_worker, args=(os.path.join(tmp, 'init'), tmp),
                               nprocs=2, start_method='fork')
            for rank in (0, 1):
                with open(os.path.join(tmp, f'{rank}.txt')) as f:
                    self.assertEqual(f.read(), 'False')


if __name__ == '__main__':
    unittest.main()
