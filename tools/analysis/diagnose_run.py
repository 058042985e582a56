"""Flag the known failure modes of a training run from its work folder.

Reads ``WORK_DIR``'s logs (``*/vis_data/scalars.json``), dumped config and ``*.pth``
checkpoints and runs the checks of :mod:`oaml_mm.engine.diagnostics`: classifier loss
stuck at chance, margin-head kernel norms collapsing, non-finite BatchNorm
statistics, learning rate not as configured, occlusion head predicting one value.
Exit status 1 when any check flags, 0 otherwise; 2 when the folder holds no run
(no log, no checkpoint) or a log is corrupt. A log's cut last line (a run killed
while writing it) is skipped with a note below the table.

Examples:
    python tools/analysis/diagnose_run.py work_dirs/oaml_ir18_synthface
"""
import argparse
import sys

from oaml_mm.engine.diagnostics import diagnose_run
from oaml_mm.errors import OAMLError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('work_dir', help='the run\'s work folder')
    p.add_argument('--checkpoints', type=int, default=3,
                   help='checkpoints read: the first and the latest ones '
                   '(default %(default)s)')
    args = p.parse_args(argv)
    notes = []
    try:
        findings = diagnose_run(args.work_dir, args.checkpoints, notes)
    except OAMLError as e:
        print(f'diagnose_run: {e}', file=sys.stderr)
        return 2
    print('| check | status | detail |\n|---|---|---|')
    for f in findings:
        mark = '**FLAG**' if f.status == 'flag' else f.status
        print(f'| {f.check} | {mark} | {f.message} |')
    for note in notes:
        print(f'\nNote: {note}')
    return 1 if any(f.status == 'flag' for f in findings) else 0


if __name__ == '__main__':
    sys.exit(main())
