#!/usr/bin/env python3
"""channels_last against contiguous NCHW for the canonical U-Net step (tools/gpu/torch_unet.py's model, batch 2,
256x256, AdamW, cross-entropy, bf16 under torch.autocast) in PyTorch, alternating step by step on one model each.
TorchSharp 0.107 has the memory_format enum but no operation that takes it, so this measures what the option would
be worth before building it (docs/benchmarks.md).
    /usr/bin/python3 tools/bench/channels_last.py fp32 4 [THREADS, 0: the default] [DEVICE: cpu or cuda]
Prints the medians and the per-pair ratio channels_last / NCHW (below 1: channels_last faster)."""
import importlib.util, os, statistics, sys, time

import torch
import torch.nn as nn

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("tu", os.path.join(here, "..", "gpu", "torch_unet.py"))
tu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tu)
prec = sys.argv[1] if len(sys.argv) > 1 else "fp32"
pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 6
if len(sys.argv) > 3 and int(sys.argv[3]) > 0:  # 0: PyTorch's default
    torch.set_num_threads(int(sys.argv[3]))
dev = torch.device(sys.argv[4] if len(sys.argv) > 4 else "cpu")
torch.manual_seed(0)


def make(channels_last):
    m = tu.UNet().to(dev)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    x = torch.randn(2, 3, 256, 256, device=dev)
    y = torch.randint(0, 2, (2, 256, 256), device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
            loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    return step


a, b = make(False), make(True)
for _ in range(2):
    a(); b()
ta, tb = [], []
for _ in range(pairs):
    t = time.perf_counter(); a(); ta.append(time.perf_counter() - t)
    t = time.perf_counter(); b(); tb.append(time.perf_counter() - t)
r = sorted(y / x for x, y in zip(ta, tb))
print(f"{prec} on {dev} ({torch.get_num_threads()} thread(s)): NCHW median {statistics.median(ta):.3f} s, channels_last "
      f"{statistics.median(tb):.3f} s, channels_last / NCHW per pair: median {statistics.median(r):.3f} "
      f"({r[0]:.3f}-{r[-1]:.3f}, {pairs} pairs), torch {torch.__version__}")
