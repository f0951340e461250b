#!/usr/bin/python3
"""The instance post-processing of `segment bench instances`, written with scikit-image, on the same logits.

Usage: /usr/bin/python3 tools/bench/skimage_instances.py DIR [--rounds N]
DIR holds logits.npy (3 x H x W: background, interior, boundary) from `segment bench instances --out DIR`.
Writes DIR/skimage.png (16-bit object numbers) and prints the median time of the same steps as
src/Shared/InstanceDecoder.cs: softmax and argmax, seeds (4-connected interior regions of >= 4 px), a watershed of
the elevation 255 x (1 - P(interior)) within the foreground, unseeded foreground as objects, objects of >= 8 px,
numbered 1..N. Needs Debian's python3-skimage (and python3-numpy, python3-pil).
"""
import argparse
import json
import time

import numpy as np
from PIL import Image
from skimage.measure import label
from skimage.morphology import remove_small_objects
from skimage.segmentation import relabel_sequential, watershed


def decode(logits, min_size=8, min_seed=4):
    m = logits.max(axis=0)
    e = np.exp(logits - m)
    p_interior = e[1] / e.sum(axis=0)
    best = logits.argmax(axis=0)
    foreground = best != 0
    seeds = label(best == 1, connectivity=1)
    seeds = remove_small_objects(seeds, min_size=min_seed)
    elevation = np.round(255 * (1 - p_interior)).astype(np.uint8)
    objects = watershed(elevation, markers=seeds, mask=foreground, connectivity=1)
    rest = label(foreground & (objects == 0), connectivity=1)
    objects[rest > 0] = rest[rest > 0] + objects.max()
    objects = remove_small_objects(objects, min_size=min_size)
    objects, _, _ = relabel_sequential(objects)
    return objects


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    logits = np.load(f"{args.dir}/logits.npy")
    decode(logits)  # warm-up
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        objects = decode(logits)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    Image.fromarray(objects.astype(np.uint16)).save(f"{args.dir}/skimage.png")
    print(json.dumps({"medianMs": times[len(times) // 2], "minMs": times[0], "maxMs": times[-1],
                      "objects": int(objects.max()), "rounds": args.rounds}))


if __name__ == "__main__":
    main()
