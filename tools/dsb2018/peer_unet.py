#!/usr/bin/python3
"""The same-budget peer for DSB2018: the StarDist paper's three-class U-Net baseline, in PyTorch.

Usage: /usr/bin/python3 tools/dsb2018/peer_unet.py DATA OUT [SECONDS] [THREADS]
  DATA     ../shared/datasets/dsb2018/train (images/ and 16-bit masks/)
  OUT      a folder: OUT/pred/<name>.png (16-bit object numbers of the 106 validation images), OUT/truth/ (their masks)
  SECONDS  wall-clock budget of the training loop (default 1200: `segment train --time-limit 20m`)
  THREADS  torch threads (default 2, the machine's cores)
Then: segment score --task instance --pred OUT/pred --gt OUT/truth   (bash tools/dsb2018/peer.sh does both)

What it is (Schmidt et al., MICCAI 2018, the U-Net their StarDist is compared with; the settings are StarDist's
own defaults where the paper leaves them open): a U-Net of depth 3, 32 filters at the first level, two 3x3
convolutions with ReLU per level, max pooling, a softmax over background / object interior / object boundary; the
boundary is the objects' pixels within 2 px (8-connected) of another object or the background, as ours; per-image
percentile normalisation (1 and 99.8, over all channels); random 256x256 patches (DSB images are at least 256x256),
random flips and 90-degree rotations; Adam at 3e-4, batch 4; cross-entropy. Objects: connected components of the
pixels whose interior probability is over 0.5, grown by a watershed over (1 - P(interior)) into the pixels whose best
class is interior or boundary; objects under 13 px dropped (our plan's minimum for this data).
The split is ours: tools/dsb2018/val-names.txt holds the 106 validation names of `--val-split 0.2` with seed 0.
Data: PIL, numpy, scipy, scikit-image (Debian's python3-torch python3-skimage python3-scipy).
"""
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from skimage.segmentation import watershed

root, out = sys.argv[1], sys.argv[2]
budget = float(sys.argv[3]) if len(sys.argv) > 3 else 1200.0
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)
rng = np.random.default_rng(0)
start = time.time()

here = os.path.dirname(os.path.abspath(__file__))
val_names = [n.strip() for n in open(os.path.join(here, "val-names.txt")) if n.strip()]
names = sorted(os.path.splitext(n)[0] for n in os.listdir(f"{root}/images"))
train_names = [n for n in names if n not in set(val_names)]


def load(name):
    image = np.asarray(Image.open(f"{root}/images/{name}.png").convert("RGB")).astype(np.float32)
    lo, hi = np.percentile(image, (1, 99.8))
    image = (image - lo) / max(hi - lo, 1.0)
    mask = np.asarray(Image.open(f"{root}/masks/{name}.png")).astype(np.int32)
    return image.transpose(2, 0, 1).copy(), mask


def three_classes(ids, width=2):
    """0 background, 1 interior, 2 boundary: object pixels within `width` of another object or the background."""
    classes = (ids > 0).astype(np.int64)
    grown_max = ndimage.maximum_filter(ids, size=2 * width + 1, mode="nearest")
    grown_min = ndimage.minimum_filter(np.where(ids > 0, ids, -1), size=2 * width + 1, mode="nearest")
    edge = (ids > 0) & ((grown_max != ids) | (grown_min != ids))
    classes[edge] = 2
    return classes


train = [load(n) for n in train_names]
train = [(x, three_classes(m)) for x, m in train]
print(f"{len(train)} training, {len(val_names)} validation images; loaded in {time.time() - start:.1f} s", flush=True)


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, cin=3, classes=3, base=32, depth=3):
        super().__init__()
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([block(cin if i == 0 else widths[i - 1], widths[i]) for i in range(depth)])
        self.bottom = block(widths[depth - 1], widths[depth])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))])
        self.merge = nn.ModuleList([block(2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(base, classes, 1)

    def forward(self, x):
        skips = []
        for b in self.down:
            x = b(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], 1))
        return self.head(x)


def patch(size=256):
    x, y = train[rng.integers(len(train))]
    h, w = y.shape
    top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    x, y = x[:, top:top + size, left:left + size], y[top:top + size, left:left + size]
    k = rng.integers(4)
    x, y = np.rot90(x, k, (1, 2)), np.rot90(y, k)
    if rng.random() < 0.5:
        x, y = x[:, :, ::-1], y[:, ::-1]
    return x.copy(), y.copy()


model = UNet()
optimizer = torch.optim.Adam(model.parameters(), 3e-4)
steps, seen = 0, 0
model.train()
while time.time() - start < budget:
    batch = [patch() for _ in range(4)]
    x = torch.from_numpy(np.stack([b[0] for b in batch]))
    y = torch.from_numpy(np.stack([b[1] for b in batch]))
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    steps += 1
    if steps % 50 == 0:
        print(f"step {steps}, {time.time() - start:.0f} s, loss {loss.item():.4f}", flush=True)
print(f"trained {steps} steps of batch 4 in {time.time() - start:.0f} s", flush=True)

os.makedirs(f"{out}/pred", exist_ok=True)
os.makedirs(f"{out}/truth", exist_ok=True)
model.eval()
with torch.no_grad():
    for name in val_names:
        x, ids = load(name)
        h, w = ids.shape
        ph, pw = (8 - h % 8) % 8, (8 - w % 8) % 8
        p = F.softmax(model(F.pad(torch.from_numpy(x)[None], (0, pw, 0, ph), mode="reflect")), 1)[0, :, :h, :w].numpy()
        seeds, _ = ndimage.label(p[1] > 0.5)
        objects = watershed(1 - p[1], seeds, mask=p.argmax(0) > 0)
        sizes = np.bincount(objects.ravel())
        objects[sizes[objects] < 13] = 0
        _, objects = np.unique(objects, return_inverse=True)  # renumbered 0..N in order of the old numbers
        Image.fromarray(objects.reshape(h, w).astype(np.uint16)).save(f"{out}/pred/{name}.png")
        Image.fromarray(ids.astype(np.uint16)).save(f"{out}/truth/{name}.png")
print(f"wrote {len(val_names)} predictions to {out}/pred, total {time.time() - start:.0f} s", flush=True)
