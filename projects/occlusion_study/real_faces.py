"""Real face photos that installed packages ship, aligned and split by image.

A visibility predictor trained on drawn faces reads real skin, hair and
backgrounds as occluders (visibility_predictors.md, same folder). The few real
faces available offline are the only check of that, and the only real data to
train against it, so they are split **by image** into a training part and a test
part that is never trained or tuned on:

========== ================================================= ==========
group      photos                                            faces
========== ================================================= ==========
train      scikit-image LFW subset faces 0-49; insightface's    50 + 6
           group photo ``t1.jpg`` (faces with detector score
           >= 0.95)
test       scikit-image LFW subset faces 50-99; insightface's   50 + 1
           ``Tom_Hanks_54745.png`` (an aligned 112x112 crop)
portraits  scikit-image astronaut and cameraman, matplotlib's        3
           Grace Hopper (test only)
========== ================================================= ==========

scikit-image and matplotlib are installed with oaml_mm; the two insightface
images come from its source distribution (nothing is downloaded at run time:
point ``--extra`` at the folder they were extracted to)::

    pip download --no-deps --no-binary insightface insightface==0.7.3
    tar xzf insightface-0.7.3.tar.gz insightface-0.7.3/insightface/data/images

The LFW subset's 25x25 grey crops are upsampled x6 and border-reflected so that
the detector finds them. Every photo is aligned by the package's MTCNN path
(:class:`~oaml_mm.apis.face_finder.FaceFinder`).

``prepare`` writes the aligned crops as a :class:`~oaml_mm.datasets.FaceImageFolder`
with one list file per group (``<out>/images/<name>.png``,
``<out>/{train,test,portraits}.txt``: ``images/<name>.png <index>`` lines), for a
segmenter config to read the ``train`` part::

    python projects/occlusion_study/real_faces.py prepare data/real_faces \\
        --extra insightface-0.7.3/insightface/data/images
"""
import argparse
import os
import os.path as osp
from typing import List, Optional, Tuple

import cv2
import numpy as np

from oaml_mm.apis.face_finder import FaceFinder

__all__ = ['GROUPS', 'package_photos', 'align_photos', 'write_real_faces']

GROUPS = ('train', 'test', 'portraits')
LFW_TRAIN = 50                 # LFW subset faces [0, 50) train, [50, 100) test
GROUP_MIN_SCORE = 0.95         # group photo: detections below are dropped
# Extra photos (file name -> name, group, every face or the largest only).
EXTRA = (('t1.jpg', 'insightface_t1', 'train', True),
         ('Tom_Hanks_54745.png', 'tom_hanks', 'test', False))


def _read_rgb(path: str) -> Optional[np.ndarray]:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def package_photos(extra: Optional[str] = None
                   ) -> List[Tuple[str, np.ndarray, str, bool]]:
    """The real photos of the table above that are present.

    Args:
        extra (str, optional): Folder holding insightface's ``t1.jpg`` and
            ``Tom_Hanks_54745.png``; missing files are skipped.

    Returns:
        list[tuple]: ``(name, RGB uint8 [H, W, 3], group, every_face)``.
    """
    import matplotlib
    import skimage
    skd = osp.join(osp.dirname(skimage.__file__), 'data')
    mpd = osp.join(osp.dirname(matplotlib.__file__), 'mpl-data', 'sample_data')
    photos = []
    for name, path in (('astronaut', osp.join(skd, 'astronaut.png')),
                       ('grace_hopper', osp.join(mpd, 'grace_hopper.jpg')),
                       ('cameraman', osp.join(skd, 'camera.png'))):
        img = _read_rgb(path)
        if img is not None:
            photos.append((name, img, 'portraits', False))
    lfw = osp.join(skd, 'lfw_subset.npy')
    if osp.isfile(lfw):
        # scikit-image's LFW subset: 100 faces (25x25 grey) then 100 non-faces.
        for i, f in enumerate(np.load(lfw)[:100]):
            g = np.clip(f * 255 if f.max() <= 1 else f, 0, 255).astype(np.uint8)
            g = cv2.resize(g, (150, 150), interpolation=cv2.INTER_CUBIC)
            g = cv2.copyMakeBorder(g, 60, 60, 60, 60, cv2.BORDER_REFLECT)
            photos.append((f'lfw_{i:03d}', np.repeat(g[..., None], 3, 2),
                           'train' if i < LFW_TRAIN else 'test', False))
    for fname, name, group, every in EXTRA if extra else ():
        path = osp.join(extra, fname)
        img = _read_rgb(path) if osp.isfile(path) else None
        if img is not None:
            photos.append((name, img, group, every))
    return photos


def align_photos(photos) -> Tuple[np.ndarray, List[str], List[str], List[str]]:
    """Align every photo with the package's MTCNN path.

    Single-face photos keep the largest face; group photos every face with a
    detector score of at least ``GROUP_MIN_SCORE`` (named ``<name>_<k>``, largest
    first). Photos without a face are skipped.

    Args:
        photos: As :func:`package_photos` returns.

    Returns:
        tuple: uint8 [N, 112, 112, 3] RGB crops, their names, groups and
        alignment paths (``detected-5pt``, ``detected-eyes``, ``aligned-input``).
    """
    largest = FaceFinder()
    every = FaceFinder(select='all', min_score=GROUP_MIN_SCORE)
    crops, names, groups, how = [], [], [], []
    for name, img, group, many in photos:
        try:
            found = (every if many else largest).find(img, name)
        except Exception:  # no face found: skipped, counted by the caller
            continue
        for k, face in enumerate(found):
            crops.append(face['crop'])
            names.append(f'{name}_{k}' if many else name)
            groups.append(group)
            how.append(face['path'])
    arr = np.stack(crops) if crops else np.zeros((0, 112, 112, 3), np.uint8)
    return arr, names, groups, how


def write_real_faces(out: str, crops: np.ndarray, names: List[str],
                     groups: List[str]) -> dict:
    """Write aligned crops as a FaceImageFolder with one list file per group.

    Args:
        out (str): Output folder (created).
        crops (np.ndarray): uint8 [N, H, W, 3] RGB.
        names (list[str]): File stems.
        groups (list[str]): One of :data:`GROUPS` per crop.

    Returns:
        dict: Faces written per group.

    Raises:
        ValueError: Lengths differ or a group is not in :data:`GROUPS`.
    """
    if not len(crops) == len(names) == len(groups):
        raise ValueError(f'{len(crops)} crops, {len(names)} names and '
                         f'{len(groups)} groups; expected as many of each')
    bad = sorted(set(groups) - set(GROUPS))
    if bad:
        raise ValueError(f'unknown groups {bad}; expected some of {GROUPS}')
    os.makedirs(osp.join(out, 'images'), exist_ok=True)
    lines = {g: [] for g in GROUPS}
    for i, (c, n, g) in enumerate(zip(crops, names, groups)):
        rel = f'images/{n}.png'
        if not cv2.imwrite(osp.join(out, rel),
                           cv2.cvtColor(np.ascontiguousarray(c),
                                        cv2.COLOR_RGB2BGR)):
            raise OSError(f'{osp.join(out, rel)}: cannot write image')
        lines[g].append(f'{rel} {i}\n')
    for g, ls in lines.items():
        with open(osp.join(out, f'{g}.txt'), 'w') as f:
            f.writelines(ls)
    return {g: len(ls) for g, ls in lines.items()}


def check_prepare_args(out: str, extra: Optional[str] = None) -> None:
    """Check ``prepare``'s arguments before any photo is read or written.

    Args:
        out (str): Output folder (created when missing).
        extra (str, optional): ``--extra`` folder.

    Raises:
        OutputPathError: ``out`` is an existing file or cannot be written.
        ConfigError: ``extra`` is not a folder or holds none of the files
            of :data:`EXTRA`.
    """
    from oaml_mm.errors import ConfigError, OutputPathError
    from oaml_mm.utils import check_output_file
    if osp.exists(out) and not osp.isdir(out):
        raise OutputPathError(f'OUT {out!r} is a file; expected a folder '
                              '(created when missing)')
    if extra is not None:
        wanted = ' and '.join(f for f, *_ in EXTRA)
        if not osp.isdir(extra):
            raise ConfigError(f'--extra {extra!r}: no such folder; expected '
                              f'the folder holding {wanted}')
        if not any(osp.isfile(osp.join(extra, f)) for f, *_ in EXTRA):
            raise ConfigError(f'--extra {extra!r}: the folder holds none of '
                              f'{wanted}')
    check_output_file(osp.join(out, 'train.txt'), 'OUT')


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    w = sub.add_parser('prepare', help='align and write the real faces')
    w.add_argument('out')
    w.add_argument('--extra', help="folder with insightface's sample images")
    args = p.parse_args(argv)
    from oaml_mm.apis.runner_setup import exit_on_error
    with exit_on_error():
        check_prepare_args(args.out, args.extra)
    photos = package_photos(args.extra)
    crops, names, groups, how = align_photos(photos)
    counts = write_real_faces(args.out, crops, names, groups)
    print(f'{args.out}: {len(photos)} photos -> {counts} faces '
          f'({how.count("detected-eyes")} aligned by the eyes alone)')


if __name__ == '__main__':
    main()
