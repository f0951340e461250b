#!/usr/bin/python3
"""Where a semantic model's wrong pixels lie on ISBI 2012: near the labelled membranes' edges, or elsewhere.

    segment predict --checkpoint runs/isbi20w/best.ckpt --input ../shared/datasets/isbi2012-membrane/train/images \
        --out pred
    /usr/bin/python3 tools/isbi2012/edge_errors.py ../shared/datasets/isbi2012-membrane/train/masks pred

Prints the accuracy over all images, the share of wrong pixels within 0..3 pixels of a label edge (a pixel whose
4-neighbour has the other class), the two kinds of error, and each image's accuracy. Needs Debian's python3-numpy,
python3-scipy and python3-pil (docs/plan.md quotes its figures).
"""
import os
import sys

import numpy as np
from PIL import Image
from scipy import ndimage as ndi


def main(masks, predictions):
    total = wrong = thick = thin = 0
    near = [0, 0, 0, 0]
    lines = []
    for name in sorted(os.listdir(masks)):
        truth = np.array(Image.open(os.path.join(masks, name))) > 127  # True: cell, False: membrane
        pred = np.array(Image.open(os.path.join(predictions, os.path.splitext(name)[0] + ".png"))) == 1
        errors = truth != pred
        edge = (truth ^ ndi.binary_erosion(truth, border_value=1)) | (~truth ^ ndi.binary_erosion(~truth,
                                                                                                  border_value=1))
        distance = ndi.distance_transform_edt(~edge)
        for i in range(4):
            near[i] += int((errors & (distance <= i)).sum())
        thick += int((~pred & truth).sum())
        thin += int((pred & ~truth).sum())
        total += errors.size
        wrong += int(errors.sum())
        lines.append(f"{os.path.splitext(name)[0]}:{1 - errors.mean():.4f}")
    print(f"accuracy over {len(lines)} images: {1 - wrong / total:.4f}")
    for i in range(4):
        print(f"wrong pixels within {i} px of a label edge: {near[i] / wrong:.3f}")
    print(f"membrane predicted too thick: {thick / wrong:.3f}, too thin: {thin / wrong:.3f}")
    print(" ".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
