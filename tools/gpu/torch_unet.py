#!/usr/bin/env python3
"""The canonical U-Net of `segment bench train` (3->2 classes, 64 base channels, depth 4, batch norm, transposed
up-convolutions: 31,037,698 parameters), written in plain PyTorch eager, timed the same way: one fixed random batch,
forward + cross-entropy + backward + AdamW step, the loss read back every step, median of the timed steps.

Precision: fp32; bf16 and fp16 under torch.autocast (fp16 with GradScaler), which is PyTorch's own mixed precision.
Prints one JSON line. Used by tools/gpu/run.sh for the side-by-side figure (the same model in TorchSharp through
Segmentation); on a machine with only the CPU it runs there too (--device cpu).
"""
import argparse, json, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class DoubleConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Up(nn.Module):
    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
        self.conv = DoubleConv(cskip + cin // 2, cout)

    def forward(self, x, skip):
        x = self.up(x)
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        if dy or dx:
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], 1))


class UNet(nn.Module):
    def __init__(self, cin=3, classes=2, base=64, depth=4):
        super().__init__()
        ch = [base << i for i in range(depth + 1)]
        self.stem = DoubleConv(cin, ch[0])
        self.encoder = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), DoubleConv(ch[i - 1], ch[i])) for i in range(1, depth + 1))
        self.decoder = nn.ModuleList(Up(ch[i + 1], ch[i], ch[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(ch[0], classes, 1)

    def forward(self, x):
        skips = []
        x = self.stem(x)
        for block in self.encoder:
            skips.append(x)
            x = block(x)
        for i, block in enumerate(self.decoder):
            x = block(x, skips[-1 - i])
        return self.head(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = UNet().to(dev).train()
    params = sum(p.numel() for p in model.parameters())
    assert params == 31_037_698, params
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (a.batch_size, 3, a.size, a.size), generator=g, dtype=torch.uint8).to(dev)
    masks = torch.randint(0, 2, (a.batch_size, a.size, a.size), generator=g).to(dev)
    mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1)
    x = (images.float() / 255 - mean) / std
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    fp16 = a.precision == "fp16"
    # torch.amp.GradScaler in PyTorch 2.x; torch.cuda.amp.GradScaler in 1.13 (CUDA only, disabled when not fp16).
    scaler = torch.amp.GradScaler(dev.type, enabled=fp16) if hasattr(torch.amp, "GradScaler") else torch.cuda.amp.GradScaler(enabled=fp16)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=low, enabled=low is not None):
            loss = F.cross_entropy(model(x), masks, ignore_index=255)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.item()

    times = []
    for i in range(a.warmup + a.steps):
        t = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    out = {"framework": f"pytorch {torch.__version__}", "device": str(dev), "precision": a.precision, "batch": a.batch_size,
           "size": a.size, "params": params, "stepSeconds": med, "imagesPerSecond": a.batch_size / med, "steps": times,
           "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info()
        out.update(deviceMemoryMiB=(total - free) / 2**20, maxAllocatedMiB=torch.cuda.max_memory_allocated() / 2**20,
                   maxReservedMiB=torch.cuda.max_memory_reserved() / 2**20, gpu=torch.cuda.get_device_name())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
