#!/usr/bin/env python3
"""Mask2Former on Swin-T in plain PyTorch eager (transformers' default config: 256 wide, 6 deformable layers, 9
masked-attention layers, 100 queries), built from the references of transformers' modules in tools/interop
(swin_reference.py, mask2former_reference.py), and timed as `segment bench train --profile` times ours: one fixed
random batch, forward, a loss over every prediction, backward, AdamW, the loss read back every step, median of the
timed steps.

The loss is a stand-in (the mean square of every prediction's class and mask logits), not the matched set loss, so
the figure to set beside ours is our step less its loss part (`segment bench train ... --profile`: step - loss).
Prints one JSON line. Used by tools/gpu/run.sh; runs on the CPU too (--device cpu).
"""
import argparse, importlib.util, json, os, statistics, time

import torch
from torch import nn

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Mask2Former(nn.Module):
    def __init__(self, classes):
        super().__init__()
        swin, m2f = load("swin_reference"), load("mask2former_reference")
        v = swin.VARIANTS["swin-tiny"]
        self.backbone = swin.SwinBackbone(dict(v, num_channels=3))
        channels = [v["embed_dim"] * 2 ** i for i in range(4)]
        self.pixel = m2f.PixelDecoder(channels, dim=256, heads=8, ffn=1024, layers=6, mask_dim=256)
        self.transformer = m2f.TransformerModule(256, 8, ffn=2048, decoder_layers=10, queries=100, mask_dim=256)
        self.class_predictor = nn.Linear(256, classes + 1)

    def forward(self, x):
        trace = self.pixel(self.backbone(x), {})
        multi = [trace[f"multi_scale{i}"] for i in range(3)]
        out = self.transformer(multi, trace["mask_features"], self.class_predictor, {})
        layers = len(self.transformer.decoder.layers)
        return [(out[f"classes{i}"], out[f"masks{i}"]) for i in range(layers + 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(0)
    device = torch.device(a.device)
    model = Mask2Former(a.classes).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    x = torch.randn(a.batch_size, 3, a.size, a.size, device=device)
    times = []
    for i in range(a.warmup + a.steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = sum((c ** 2).mean() + (m ** 2).mean() for c, m in model(x))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        optimizer.step()
        loss.item()
        if i >= a.warmup:
            times.append(time.perf_counter() - start)
    print(json.dumps({"stepSeconds": statistics.median(times), "params": sum(p.numel() for p in model.parameters()),
                      "device": str(device), "torch": torch.__version__, "steps": times}))


if __name__ == "__main__":
    main()
