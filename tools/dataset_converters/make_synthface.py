"""Generate SynthFace, the embedded synthetic face data set (see docs/synthface.md).

Examples:
    python tools/dataset_converters/make_synthface.py --out data/synthface
    python tools/dataset_converters/make_synthface.py --out /tmp/sf --identities 50 \
        --images-per-id 8 --seed 1
    python tools/dataset_converters/make_synthface.py --preview synthface.png
"""
import argparse
import os
import sys
import time

from oaml_mm.errors import OAMLError

#: The SynthFaceConfig fields set from the options of the same name.
CONFIG_ARGS = ('identities', 'images_per_id', 'seed', 'nuisance',
               'test_identities', 'occluded_per_id', 'val_images_per_id',
               'val_pairs', 'ijbc_subjects', 'heldout_identities',
               'calib_identities')


def parse_args(argv=None) -> argparse.Namespace:
    from oaml_mm.synthface import SynthFaceConfig
    d = SynthFaceConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', help='output folder (e.g. data/synthface)')
    p.add_argument('--identities', type=int, default=d.identities,
                   help='training identities (default %(default)s)')
    p.add_argument('--images-per-id', type=int, default=d.images_per_id,
                   help='clean training images per identity (default %(default)s)')
    p.add_argument('--seed', type=int, default=d.seed)
    p.add_argument('--nuisance', type=float, default=d.nuisance,
                   help='nuisance strength 0..1: pose, light, blur, noise, JPEG '
                   '(default %(default)s)')
    p.add_argument('--test-identities', type=int, default=d.test_identities,
                   help='identities of val/ and ijbc/, disjoint from training '
                   '(default %(default)s)')
    p.add_argument('--occluded-per-id', type=int, default=d.occluded_per_id,
                   help='occluded images per training identity (default %(default)s)')
    p.add_argument('--val-images-per-id', type=int, default=d.val_images_per_id)
    p.add_argument('--val-pairs', type=int, default=d.val_pairs,
                   help='pairs per verification .bin, a multiple of 20 '
                   '(default %(default)s)')
    p.add_argument('--ijbc-subjects', type=int, default=d.ijbc_subjects)
    p.add_argument('--heldout-identities', type=int, default=None,
                   help='identities of val/heldout_*.bin (style-B faces, held-out '
                   'occluders); 0: none (default min(test identities, 100))')
    p.add_argument('--calib-identities', type=int, default=None,
                   help='identities of val/calib.bin (style-A faces, training '
                   'occluders); 0: none (default min(test identities, 100))')
    p.add_argument('--workers', type=int, default=2,
                   help='processes; the output does not depend on it')
    p.add_argument('--force', action='store_true',
                   help='regenerate even if the manifest matches')
    p.add_argument('--preview', metavar='PNG',
                   help='write a contact sheet of a few identities and occluders '
                   'instead of generating')
    p.add_argument('--preview-rows', type=int, default=6)
    p.add_argument('--heldout-preview', metavar='PNG',
                   help='write a contact sheet of style-B faces and the held-out '
                   'occluders (docs/synthface.md, "Held-out occluders and faces")')
    p.add_argument('--tinyface', action='store_true',
                   help='also write the TinyFace-layout stand-in to OUT/tinyface '
                   '(low-resolution probes, distractors; docs/evaluation.md)')
    args = p.parse_args(argv)
    if not args.out and not args.preview and not args.heldout_preview:
        p.error('give --out DIR (generate) or --preview PNG')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return _run(args)
    except OAMLError as e:  # bad arguments or a foreign --out folder: say why
        print(f'make_synthface: {e}', file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from oaml_mm.synthface import (SynthFaceConfig, contact_sheet,
                                   generate_synthface, heldout_contact_sheet)
    from oaml_mm.utils import check_output_file
    from oaml_mm.visualization import write_picture
    sheets = [(opt, path, draw) for opt, path, draw in (
        ('--preview', args.preview, contact_sheet),
        ('--heldout-preview', args.heldout_preview, heldout_contact_sheet))
        if path]
    for opt, path, _ in sheets:  # before drawing anything
        check_output_file(path, opt, image=True)
    for _, path, draw in sheets:
        write_picture(draw(seed=args.seed, nuisance=args.nuisance,
                           identities=args.preview_rows), path)
        print(f'preview written to {path}')
    if sheets and not args.out:
        return 0
    cfg = SynthFaceConfig(**{k: getattr(args, k) for k in CONFIG_ARGS})
    t0 = time.time()
    man = generate_synthface(args.out, cfg, workers=args.workers, force=args.force)
    print(f'{man["counts"]} ({time.time() - t0:.1f} s)')
    if args.tinyface:
        from oaml_mm.synthface.tinyface import write_tinyface_standin
        counts = write_tinyface_standin(os.path.join(args.out, 'tinyface'), cfg)
        print(f'tinyface stand-in: {counts}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
