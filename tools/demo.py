"""The SynthFace demo: AdaFace baseline vs OAML, trained and evaluated on CPU.

``make demo`` runs this after installing. It

1. generates SynthFace in ``--data`` if it is missing (``docs/synthface.md``);
2. trains ``configs/synthface/adaface_ir18_synthface.py`` and
   ``configs/synthface/oaml_ir18_synthface.py`` side by side, one torch thread each,
   for the configs' fixed iteration count (the same for both);
3. evaluates both with ``tools/test.py`` on the clean, masked and occluded ``.bin``
   sets, the held-out occluders and faces (docs/synthface.md) and the mini IJB-C;
4. prints one comparison table (accuracy per branch, TAR@FAR), the visibility
   ablation and the occlusion head's visibility error, and writes it to
   ``WORK_DIR/results.md`` (all metrics in ``results.json``).

The work is done by :func:`projects.occlusion_study.demo.run_demo`; like every
OpenMMLab project it is imported from the repository root (``make demo`` sets
``PYTHONPATH``).

Examples:
    PYTHONPATH=. python tools/demo.py             # what `make demo` runs (seed 0)
    PYTHONPATH=. python tools/demo.py --seeds 0 1 # the README table (mean ± s.d.)
    PYTHONPATH=. python tools/demo.py --iters 20 --data /tmp/sf_small  # smoke run
"""
import argparse
import os.path as osp
import runpy


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', default='data/synthface',
                   help='SynthFace folder (generated when missing)')
    p.add_argument('--work-dir', default='work_dirs/synthface_demo')
    p.add_argument('--seeds', type=int, nargs='+', default=[0],
                   help='training seeds; several give mean ± s.d.')
    p.add_argument('--iters', type=int, default=None,
                   help='training iterations (default: the configs\' budget)')
    p.add_argument('--jobs', type=int, default=2,
                   help='processes at once (each uses one thread)')
    p.add_argument('--synthface-args', default='',
                   help='generator options for a missing data set, e.g. '
                   '"identities=40 images_per_id=4" (SynthFaceConfig fields)')
    p.add_argument('--skip-train', action='store_true',
                   help='reuse the checkpoints already in the work dir')
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        from projects.occlusion_study import demo, synthface_runs
    except ModuleNotFoundError as e:
        if e.name != 'projects':
            raise
        raise SystemExit('[demo] projects.occlusion_study is not importable: run '
                         'from the repository root with PYTHONPATH=. (or `make '
                         'demo`)')
    try:
        demo.run_demo(args.data, args.work_dir, args.seeds, args.iters,
                      args.jobs, args.synthface_args, args.skip_train)
    except synthface_runs.JobError as e:
        raise SystemExit(f'[demo] failed: {e}')


if __name__ == '__main__':
    # Training and evaluation children inherit the malloc thresholds
    # (oaml_mm/utils/malloc_tuning.py); glibc reads them at start-up only.
    runpy.run_path(osp.join(osp.dirname(osp.abspath(__file__)), '..', 'oaml_mm',
                            'utils', 'malloc_tuning.py'))['reexec_with_malloc_env']()
    main()
