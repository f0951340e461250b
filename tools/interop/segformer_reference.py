#!/usr/bin/python3
"""SegFormer written in PyTorch from the paper (Xie et al. 2021), with Hugging Face's module names, as a reference.

Two checks, side by side with `segment` (Debian's python3-torch is enough; transformers is not needed):
  counts  DIR/segment.dll           parameters of B0..B5 at 150 classes, here and in `segment summary`
  predict IMAGE OUTDIR SEGMENT_DLL  a random B0 (11 classes) saved as a Hugging Face folder, imported by
                                    `segment import --from hf-segformer`, both predicting IMAGE: the share of pixels
                                    whose argmax agrees
  original IMAGE OUTDIR SEGMENT_DLL the same B0 in the original NVlabs/mmsegmentation layout (patch_embed1, block1,
                                    fused attn.kv, decode_head.linear_c1/linear_fuse.conv/linear_pred, an unused
                                    conv_seg, wrapped as {"state_dict", "meta"}) by `torch.save`, imported by
                                    `segment import --from segformer`: the share of pixels whose argmax agrees
  bench BATCH SIZE STEPS WARMUP     the median training step of B0 (11 classes) in PyTorch: forward, cross-entropy,
                                    backward, AdamW (lr 1e-4, weight decay 1e-4), the loss read back; 2 threads, as
                                    `segment bench train --arch segformer --encoder mit-b0 --classes 11 --no-bare` times it

Usage: /usr/bin/python3 tools/interop/segformer_reference.py counts src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll
       /usr/bin/python3 tools/interop/segformer_reference.py predict ../shared/datasets/camvid/val/images/X.png /tmp/sf SEGMENT_DLL
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

VARIANTS = {
    "mit-b0": ([32, 64, 160, 256], [2, 2, 2, 2], 256), "mit-b1": ([64, 128, 320, 512], [2, 2, 2, 2], 256),
    "mit-b2": ([64, 128, 320, 512], [3, 4, 6, 3], 768), "mit-b3": ([64, 128, 320, 512], [3, 4, 18, 3], 768),
    "mit-b4": ([64, 128, 320, 512], [3, 8, 27, 3], 768), "mit-b5": ([64, 128, 320, 512], [3, 6, 40, 3], 768),
}
HEADS, REDUCTIONS, PATCHES, STRIDES = [1, 2, 5, 8], [8, 4, 2, 1], [7, 3, 3, 3], [4, 2, 2, 2]


class PatchEmbedding(nn.Module):  # overlapping: kernel 7 stride 4, then 3 stride 2, padding kernel // 2
    def __init__(self, cin, hidden, patch, stride):
        super().__init__()
        self.proj = nn.Conv2d(cin, hidden, patch, stride, patch // 2)
        self.layer_norm = nn.LayerNorm(hidden)

    def forward(self, x):
        x = self.proj(x)
        return self.layer_norm(x.flatten(2).transpose(1, 2)), x.shape[2], x.shape[3]


class SelfAttention(nn.Module):  # keys and values from the map reduced by a strided convolution
    def __init__(self, hidden, heads, reduction):
        super().__init__()
        self.heads, self.reduction = heads, reduction
        self.query, self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        if reduction > 1:
            self.sr = nn.Conv2d(hidden, hidden, reduction, reduction)
            self.layer_norm = nn.LayerNorm(hidden)

    def split(self, t):
        n, length, c = t.shape
        return t.view(n, length, self.heads, c // self.heads).permute(0, 2, 1, 3)

    def forward(self, x, h, w):
        q = self.split(self.query(x))
        kv = x
        if self.reduction > 1:
            n, length, c = x.shape
            kv = self.sr(x.transpose(1, 2).reshape(n, c, h, w)).flatten(2).transpose(1, 2)
            kv = self.layer_norm(kv)
        k, v = self.split(self.key(kv)), self.split(self.value(kv))
        attention = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)
        out = attention @ v
        return out.permute(0, 2, 1, 3).reshape(x.shape)


class Output(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, x):
        return self.dense(x)


class Attention(nn.Module):
    def __init__(self, hidden, heads, reduction):
        super().__init__()
        self.self = SelfAttention(hidden, heads, reduction)
        self.output = Output(hidden)

    def forward(self, x, h, w):
        return self.output(self.self(x, h, w))


class DepthwiseConvolution(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels)

    def forward(self, x, h, w):
        n, length, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(n, c, h, w)).flatten(2).transpose(1, 2)


class MixFfn(nn.Module):  # Mix-FFN: linear, 3x3 depthwise convolution, exact GELU, linear
    def __init__(self, hidden, inner):
        super().__init__()
        self.dense1, self.dwconv, self.dense2 = nn.Linear(hidden, inner), DepthwiseConvolution(inner), nn.Linear(inner, hidden)

    def forward(self, x, h, w):
        return self.dense2(F.gelu(self.dwconv(self.dense1(x), h, w)))


class TransformerLayer(nn.Module):  # pre-norm; stochastic depth is the identity in eval mode
    def __init__(self, hidden, heads, reduction):
        super().__init__()
        self.layer_norm_1, self.attention = nn.LayerNorm(hidden), Attention(hidden, heads, reduction)
        self.layer_norm_2, self.mlp = nn.LayerNorm(hidden), MixFfn(hidden, 4 * hidden)

    def forward(self, x, h, w):
        x = x + self.attention(self.layer_norm_1(x), h, w)
        return x + self.mlp(self.layer_norm_2(x), h, w)


class Encoder(nn.Module):
    def __init__(self, hidden, depths, cin=3):
        super().__init__()
        self.patch_embeddings = nn.ModuleList(PatchEmbedding(cin if i == 0 else hidden[i - 1], hidden[i], PATCHES[i], STRIDES[i]) for i in range(4))
        self.block = nn.ModuleList(nn.ModuleList(TransformerLayer(hidden[i], HEADS[i], REDUCTIONS[i]) for _ in range(depths[i])) for i in range(4))
        self.layer_norm = nn.ModuleList(nn.LayerNorm(hidden[i]) for i in range(4))

    def forward(self, x):
        features = []
        for embed, layers, norm in zip(self.patch_embeddings, self.block, self.layer_norm):
            t, h, w = embed(x)
            for layer in layers:
                t = layer(t, h, w)
            x = norm(t).transpose(1, 2).reshape(t.shape[0], -1, h, w)
            features.append(x)
        return features


class Holder(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder


class Projection(nn.Module):
    def __init__(self, cin, hidden):
        super().__init__()
        self.proj = nn.Linear(cin, hidden)

    def forward(self, x):
        n, c, h, w = x.shape
        return self.proj(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, h, w)


class DecodeHead(nn.Module):  # all-MLP: project, resize to stride 4, concatenate in reverse, fuse, classify
    def __init__(self, hidden, width, classes):
        super().__init__()
        self.linear_c = nn.ModuleList(Projection(c, width) for c in hidden)
        self.linear_fuse = nn.Conv2d(4 * width, width, 1, bias=False)
        self.batch_norm = nn.BatchNorm2d(width)
        self.classifier = nn.Conv2d(width, classes, 1)

    def forward(self, features):
        size = features[0].shape[2:]
        maps = [F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) for p, f in zip(self.linear_c, features)]
        return self.classifier(F.relu(self.batch_norm(self.linear_fuse(torch.cat(maps[::-1], 1)))))


class Segformer(nn.Module):
    def __init__(self, variant, classes):
        super().__init__()
        hidden, depths, width = VARIANTS[variant]
        self.segformer = Holder(Encoder(hidden, depths))
        self.decode_head = DecodeHead(hidden, width, classes)

    def forward(self, x):
        logits = self.decode_head(self.segformer.encoder(x))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def segment(dll, *args):
    return subprocess.run(["dotnet", dll, *args], capture_output=True, text=True, check=True).stdout


def counts(dll):
    for variant in VARIANTS:
        ours = json.loads(segment(dll, "summary", "--arch", "segformer", "--encoder", variant, "--classes", "150", "--json").splitlines()[-1])["params"]
        reference = sum(p.numel() for p in Segformer(variant, 150).parameters())
        print(f"{variant}: PyTorch reference {reference:,}, segment summary {ours:,}, {'same' if ours == reference else 'DIFFERENT'}")


def predict(image_path, out, dll):
    torch.manual_seed(0)
    model = Segformer("mit-b0", 11).eval()
    with torch.no_grad():  # batch-norm statistics that are not the identity, so every part shows
        model.decode_head.batch_norm.running_mean.normal_(0, 0.1)
        model.decode_head.batch_norm.running_var.uniform_(0.5, 1.5)
    folder = os.path.join(out, "hf")
    os.makedirs(folder, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(folder, "pytorch_model.bin"))
    hidden, depths, width = VARIANTS["mit-b0"]
    json.dump({"model_type": "segformer", "num_channels": 3, "hidden_sizes": hidden, "depths": depths, "decoder_hidden_size": width,
               "id2label": {str(i): f"class{i}" for i in range(11)}}, open(os.path.join(folder, "config.json"), "w"))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    json.dump({"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": mean, "image_std": std},
              open(os.path.join(folder, "preprocessor_config.json"), "w"))
    compare(model, image_path, out, dll, "hf-segformer", folder, "m", "PyTorch reference B0")


def compare(model, image_path, out, dll, layout, weights, name, what):
    """The reference's argmax on the image against `segment import --from LAYOUT` then `segment predict`."""
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    pixels = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32) / 255
    x = torch.from_numpy((pixels - np.array(mean, np.float32)) / np.array(std, np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        theirs = model(x).argmax(1)[0].numpy().astype(np.uint8)
    segment(dll, "import", "--from", layout, "--pytorch", weights, "--out", os.path.join(out, name + ".ckpt"), "--overwrite")
    segment(dll, "predict", "--checkpoint", os.path.join(out, name + ".ckpt"), "--input", image_path, "--out",
            os.path.join(out, "masks-" + name), "--overwrite")
    stem = os.path.splitext(os.path.basename(image_path))[0]
    ours = np.asarray(Image.open(os.path.join(out, "masks-" + name, stem + ".png")))
    agree = (ours == theirs).mean()
    print(f"{what} -> segment import --from {layout} -> segment predict: {100 * agree:.3f}% of {theirs.size} pixels agree; "
          f"classes in the mask: {sorted(set(theirs.flatten().tolist()))}")


def to_original(state):
    """Hugging Face's keys -> NVlabs/SegFormer's (mmsegmentation 0.x's): written from the original code's module names."""
    import re
    out = {}
    rules = [(r"^segformer\.encoder\.patch_embeddings\.(\d)\.proj\.", lambda m: f"backbone.patch_embed{int(m[1]) + 1}.proj."),
             (r"^segformer\.encoder\.patch_embeddings\.(\d)\.layer_norm\.", lambda m: f"backbone.patch_embed{int(m[1]) + 1}.norm."),
             (r"^segformer\.encoder\.layer_norm\.(\d)\.", lambda m: f"backbone.norm{int(m[1]) + 1}."),
             (r"^segformer\.encoder\.block\.(\d)\.(\d+)\.", lambda m: f"backbone.block{int(m[1]) + 1}.{m[2]}."),
             (r"^decode_head\.linear_c\.(\d)\.", lambda m: f"decode_head.linear_c{int(m[1]) + 1}."),
             (r"^decode_head\.linear_fuse\.weight", lambda m: "decode_head.linear_fuse.conv.weight"),
             (r"^decode_head\.batch_norm\.", lambda m: "decode_head.linear_fuse.bn."),
             (r"^decode_head\.classifier\.", lambda m: "decode_head.linear_pred.")]
    inner = {"layer_norm_1": "norm1", "layer_norm_2": "norm2", "attention.self.query": "attn.q", "attention.self.sr": "attn.sr",
             "attention.self.layer_norm": "attn.norm", "attention.output.dense": "attn.proj", "mlp.dense1": "mlp.fc1",
             "mlp.dense2": "mlp.fc2"}
    for key, value in state.items():
        if ".attention.self.key." in key or ".attention.self.value." in key:
            if ".attention.self.key." in key:  # keys then values in one projection
                other = state[key.replace(".key.", ".value.")]
                key = key.replace("attention.self.key", "attn.kv")
                value = torch.cat([value, other], 0)
            else:
                continue
        for pattern, new in rules:
            m = re.match(pattern, key)
            if m:
                key = new(m) + key[m.end():]
                break
        for a, b in inner.items():
            key = key.replace(f".{a}.", f".{b}.")
        out[key] = value
    out["decode_head.conv_seg.weight"] = torch.zeros(11, 256, 1, 1)  # mmsegmentation's unused BaseDecodeHead classifier
    out["decode_head.conv_seg.bias"] = torch.zeros(11)
    return out


def original(image_path, out, dll):
    torch.manual_seed(0)
    model = Segformer("mit-b0", 11).eval()
    with torch.no_grad():
        model.decode_head.batch_norm.running_mean.normal_(0, 0.1)
        model.decode_head.batch_norm.running_var.uniform_(0.5, 1.5)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "segformer_b0_original.pth")
    torch.save({"meta": {"CLASSES": [f"class{i}" for i in range(11)], "epoch": 1}, "state_dict": to_original(model.state_dict())}, path)
    compare(model, image_path, out, dll, "segformer", path, "original", "PyTorch reference B0 in the original layout")


def bench(batch, size, steps, warmup):
    import time
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = Segformer("mit-b0", 11).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    masks = torch.randint(0, 11, (batch, size, size))
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = F.cross_entropy(model((images.float() / 255 - mean) / std), masks, ignore_index=255)
        loss.backward()
        optimizer.step()
        loss.item()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    print(f"{sorted(times)[len(times) // 2]:.4f}")


if __name__ == "__main__":
    if sys.argv[1] == "bench":
        bench(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "counts":
        counts(sys.argv[2])
    elif sys.argv[1] == "original":
        original(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        predict(sys.argv[2], sys.argv[3], sys.argv[4])
