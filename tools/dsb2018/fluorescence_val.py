#!/usr/bin/python3
"""The fluorescence images of the DSB2018 validation split, as a folder `segment eval --data` reads.

Usage: /usr/bin/python3 tools/dsb2018/fluorescence_val.py ../shared/datasets/dsb2018/train OUT
val-names.txt lists the 106 images `segment train --data .../train --task instance` holds out (the default
--val-split 0.2 with seed 0; SegmentationDataset.Split). An image counts as fluorescence when it is gray (the three
channels within 2 of each other) and its median is under 60 (a dark background): the kind of image StarDist's
DSB2018 subset holds. Copies those images and their 16-bit masks to OUT/images and OUT/masks.
"""
import os
import shutil
import sys

import numpy as np
from PIL import Image

root, out = sys.argv[1], sys.argv[2]
names = [n.strip() for n in open(os.path.join(os.path.dirname(__file__), "val-names.txt")) if n.strip()]
os.makedirs(f"{out}/images", exist_ok=True)
os.makedirs(f"{out}/masks", exist_ok=True)
kept = 0
for name in names:
    a = np.asarray(Image.open(f"{root}/images/{name}.png").convert("RGB")).astype(float)
    gray = np.abs(a[..., 0] - a[..., 1]).max() <= 2 and np.abs(a[..., 1] - a[..., 2]).max() <= 2
    if gray and np.median(a) < 60:
        shutil.copy(f"{root}/images/{name}.png", f"{out}/images/{name}.png")
        shutil.copy(f"{root}/masks/{name}.png", f"{out}/masks/{name}.png")
        kept += 1
print(f"{kept} of {len(names)} validation images are fluorescence -> {out}")
