"""oaml_mm.utils.malloc_tuning and the launchers that apply it."""
import json
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile
from unittest import TestCase, skipUnless

from oaml_mm.utils.malloc_tuning import (MALLOC_ENV, OPT_OUT_VAR, malloc_env,
                                         reexec_with_malloc_env)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODULE = osp.join(ROOT, 'oaml_mm', 'utils', 'malloc_tuning.py')
GLIBC = sys.platform.startswith('linux') and \
    __import__('platform').libc_ver()[0] == 'glibc'

# What the tools do first thing, then report the environment and the page faults of
# 40 allocations of 64 MiB (each written once, as a tensor would be).
CHILD = f'''
import json, os, resource, runpy, sys
runpy.run_path({MODULE!r})['reexec_with_malloc_env']()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    b = bytearray(64 << 20)
    del b
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
print(json.dumps(dict(env={{k: os.environ.get(k) for k in {sorted(MALLOC_ENV)!r}}},
                      argv=sys.argv[1:], faults=faults)))
'''


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in MALLOC_ENV and k != OPT_OUT_VAR}
    env.update(extra)
    return env


class TestMallocTuning(TestCase):

    def test_malloc_env_adds_missing_keeps_user_values(self):
        env = malloc_env({'PATH': '/bin', 'MALLOC_TRIM_THRESHOLD_': '0'})
        self.assertEqual(env['PATH'], '/bin')
        self.assertEqual(env['MALLOC_TRIM_THRESHOLD_'], '0')  # the user's
        if GLIBC:
            self.assertEqual(env['MALLOC_MMAP_THRESHOLD_'], str(1 << 30))
        off = malloc_env({OPT_OUT_VAR: '0'})
        self.assertNotIn('MALLOC_MMAP_THRESHOLD_', off)

    def test_no_reexec_when_already_set(self):
        env = dict(MALLOC_ENV)
        with self._patched_environ(env):
            # Returns instead of replacing the test process.
            self.assertIsNone(reexec_with_malloc_env(['false']))

    @skipUnless(GLIBC, 'glibc only')
    def test_reexec_sets_variables_and_removes_page_faults(self):
        with tempfile.TemporaryDirectory() as tmp:
            script = osp.join(tmp, 'child.py')
            with open(script, 'w') as f:
                f.write(CHILD)
            runs = {}
            for name, env in (('tuned', _clean_env()),
                              ('off', _clean_env(**{OPT_OUT_VAR: '0'}))):
                proc = subprocess.run([sys.executable, script, 'a b', '--x'],
                                      env=env, capture_output=True, text=True,
                                      timeout=120)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                runs[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        self.assertEqual(runs['tuned']['env'], MALLOC_ENV)
        self.assertEqual(runs['tuned']['argv'], ['a b', '--x'])  # argv intact
        self.assertEqual(set(runs['off']['env'].values()), {None})
        # Default glibc maps and unmaps each 64 MiB block: >= 16k faults apiece
        # with 4 KiB pages (fewer with transparent huge pages). Tuned: reused.
        self.assertLess(runs['tuned']['faults'],
                        max(1000, runs['off']['faults'] // 10), runs)

    def test_launchers_use_the_same_values(self):
        for name in ('tools/dist_train.sh', 'tools/dist_test.sh',
                     'tools/slurm_train.sh', 'tools/slurm_test.sh', 'Makefile'):
            with open(osp.join(ROOT, name)) as f:
                text = f.read()
            for key, value in MALLOC_ENV.items():
                found = re.findall(rf'{key}\s*(?:\?=|=\$\{{{key}:-)\s*(\d+)', text)
                self.assertEqual(found, [value], f'{name}: {key}')
        for name in ('tools/train.py', 'tools/test.py', 'tools/demo.py'):
            with open(osp.join(ROOT, name)) as f:
                self.assertIn("['reexec_with_malloc_env']()", f.read(), name)

    @staticmethod
    def _patched_environ(values):
        from unittest import mock
        return mock.patch.dict(os.environ, values)
