"""Shared helpers of the reliability suite: running the tools as a user does."""
import os
import os.path as osp
import socket
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def tool_env() -> dict:
    """Environment for a tools/ subprocess: repo on the path, one thread, no DDP."""
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env['PYTHON'] = sys.executable
    env['OMP_NUM_THREADS'] = '1'
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                'MASTER_PORT'):
        env.pop(key, None)
    return env


def run_tool(args, timeout: float = 240, env=None) -> subprocess.CompletedProcess:
    """Run ``args`` from the repository root and capture its output."""
    return subprocess.run(args, cwd=ROOT, env=env or tool_env(),
                          capture_output=True, text=True, timeout=timeout)


def train(cfg: str, *extra: str, timeout: float = 240):
    """``python tools/train.py CFG EXTRA...``."""
    return run_tool([sys.executable, 'tools/train.py', cfg, *extra],
                    timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
