"""Draw the RGBA surgical-mask template shipped as ``oaml_mm/assets/medical_mask.png``.

The template is drawn by code (no downloaded artwork):

    python tools/misc/make_mask_template.py [--out oaml_mm/assets/medical_mask.png]
"""
import argparse

import cv2

from oaml_mm.datasets.transforms.occlusion import (DEFAULT_MASK_TEMPLATE,
                                                   draw_medical_mask_template)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=DEFAULT_MASK_TEMPLATE)
    parser.add_argument('--width', type=int, default=240)
    parser.add_argument('--height', type=int, default=168)
    args = parser.parse_args()
    rgba = draw_medical_mask_template(args.width, args.height)
    cv2.imwrite(args.out, cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f'wrote {args.out} ({args.width}x{args.height} RGBA)')


if __name__ == '__main__':
    main()
