"""glibc malloc thresholds for PyTorch CPU work (standard library only).

PyTorch's CPU allocator has no cache: every tensor comes from ``malloc`` and goes back
with ``free``. glibc serves blocks above ``M_MMAP_THRESHOLD`` (128 KiB by default,
raised dynamically to at most 32 MiB) with a fresh ``mmap``, gives them back with
``munmap``, and returns free memory above ``M_TRIM_THRESHOLD`` at the top of the heap
to the kernel. Training and evaluation allocate activations of tens of MiB at every
step, so each step maps, page-faults (4 KiB at a time, each page zeroed by the kernel)
and unmaps them again: about 30% of a CPU demo run was system time with 200 million
minor faults (issue 17). With both thresholds raised, freed blocks stay in the heap
and the next step reuses them (``benchmarks/bench_malloc.py``: same results bit for
bit, fewer faults; figures in ``docs/benchmarks.md``).

glibc reads the variables once, at process start (``mallopt(3)``, "Environment
variables"), so they are set by whoever starts Python: ``tools/dist_train.sh``,
``tools/dist_test.sh``, the Slurm scripts and the Makefile export them, and
``tools/train.py``, ``tools/test.py`` and ``tools/demo.py`` re-execute themselves once
with them (:func:`reexec_with_malloc_env`) when started without. Values the user set
are kept; ``OAML_MALLOC_TUNING=0`` turns the whole thing off.

The cost: up to ``M_TRIM_THRESHOLD`` (1 GiB) of freed memory stays mapped to the
process instead of going back to the kernel; peak RSS is measured next to the time.

This module must import nothing outside the standard library: the tools load it by
path before ``import torch`` so that a re-execution costs no second import.
"""
import os
import platform
import sys
from typing import Dict, List, Mapping, Optional

__all__ = ['MALLOC_ENV', 'OPT_OUT_VAR', 'malloc_env', 'reexec_with_malloc_env']

#: Variables and values (bytes, 1 GiB) the tools start Python with. Keep in step with
#: ``tools/dist_train.sh``, ``tools/dist_test.sh``, ``tools/slurm_*.sh`` and the
#: Makefile (tested).
MALLOC_ENV: Dict[str, str] = {
    'MALLOC_MMAP_THRESHOLD_': str(1 << 30),
    'MALLOC_TRIM_THRESHOLD_': str(1 << 30),
}
#: ``OAML_MALLOC_TUNING=0`` leaves the environment alone.
OPT_OUT_VAR = 'OAML_MALLOC_TUNING'


def _applies(environ: Mapping[str, str]) -> bool:
    if environ.get(OPT_OUT_VAR, '1') == '0':
        return False
    # The variables are glibc's; other C libraries (musl, macOS) ignore or differ.
    return sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc'


def malloc_env(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """A copy of ``environ`` with the malloc thresholds added where missing.

    Args:
        environ (Mapping, optional): Defaults to ``os.environ``.

    Returns:
        dict: The environment for a child process. Values already present (the
        user's) are kept; unchanged when ``OAML_MALLOC_TUNING=0`` or not on glibc.

    Examples:
        >>> env = malloc_env({'MALLOC_TRIM_THRESHOLD_': '0'})
        >>> env['MALLOC_TRIM_THRESHOLD_']
        '0'
    """
    env = dict(os.environ if environ is None else environ)
    if _applies(env):
        for key, value in MALLOC_ENV.items():
            env.setdefault(key, value)
    return env


def reexec_with_malloc_env(argv: Optional[List[str]] = None) -> None:
    """Replace this process by itself started with :data:`MALLOC_ENV`, once.

    Call it first thing in a script's ``if __name__ == '__main__':`` block, before
    heavy imports. Returns without doing anything when the variables are all set
    already (so the re-executed process goes on), when ``OAML_MALLOC_TUNING=0``, or
    off glibc.

    Args:
        argv (list[str], optional): The full command line to run again. Defaults to
            ``sys.orig_argv`` (interpreter options included).
    """
    if not _applies(os.environ) or all(k in os.environ for k in MALLOC_ENV):
        return
    argv = list(argv if argv is not None else sys.orig_argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, malloc_env())
