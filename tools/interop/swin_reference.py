#!/usr/bin/env python3
"""A PyTorch reference of transformers' SwinBackbone, written from transformers' models/swin/modeling_swin.py
(SwinEmbeddings, SwinPatchMerging, SwinSelfAttention, SwinLayer with always_partition=True, SwinStage, SwinEncoder,
SwinBackbone's hidden_states_norms), with transformers' module names, so its state_dict has transformers' keys.

    /usr/bin/python3 tools/interop/swin_reference.py --counts
        parameter counts of Swin-T/S/B/L backbones (four stages out), as transformers' SwinBackbone has them
    /usr/bin/python3 tools/interop/swin_reference.py --fixture tests/fixtures/swin
        a small Swin (width 8, blocks 2-2-2-2, heads 1-2-2-4, window 4) with random, non-trivial weights (layer norms
        perturbed so that a swapped name shows), saved as a Hugging Face folder (config.json, pytorch_model.bin), and
        an input with its stage outputs (io.pth): the input 2 x 3 x 45 x 61 pads at the embedding, in every block of
        stages 3 and 4 and before merging, so every padding and mask path is used

Debian's python3-torch (1.13) is enough; transformers itself is not needed.
"""
import argparse, json, math, os, sys
import torch
from torch import nn
import torch.nn.functional as F


def window_partition(x, w):
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, w, w, c)


def window_reverse(windows, w, h, wd):
    b = int(windows.shape[0] / (h * wd / w / w))
    x = windows.view(b, h // w, wd // w, w, w, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, wd, -1)


class PatchEmbeddings(nn.Module):
    def __init__(self, channels, dim, patch=4):
        super().__init__()
        self.patch = patch
        self.projection = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        _, _, h, w = x.shape
        if w % self.patch:
            x = F.pad(x, (0, self.patch - w % self.patch))
        if h % self.patch:
            x = F.pad(x, (0, 0, 0, self.patch - h % self.patch))
        x = self.projection(x)
        _, _, h, w = x.shape
        return x.flatten(2).transpose(1, 2), (h, w)


class Embeddings(nn.Module):
    def __init__(self, channels, dim):
        super().__init__()
        self.patch_embeddings = PatchEmbeddings(channels, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        e, dims = self.patch_embeddings(x)
        return self.norm(e), dims


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x, dims):
        h, w = dims
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 == 1 or w % 2 == 1:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SelfAttention(nn.Module):
    def __init__(self, dim, heads, window):
        super().__init__()
        self.heads, self.head_size, self.window = heads, dim // heads, window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid([torch.arange(window), torch.arange(window)], indexing="ij"))
        flat = torch.flatten(coords, 1)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += window - 1
        rel[:, :, 1] += window - 1
        rel[:, :, 0] *= 2 * window - 1
        self.register_buffer("relative_position_index", rel.sum(-1))
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def split(self, x):
        return x.view(x.shape[:-1] + (self.heads, self.head_size)).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        b, n, c = x.shape
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)
        l = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(l, l, -1)
        scores = scores + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            m = mask.shape[0]
            scores = scores.view(b // m, m, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            scores = scores.view(-1, self.heads, n, n)
        context = torch.matmul(F.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
        return context.view(context.shape[:-2] + (c,))


class Dense(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.dense = nn.Linear(i, o)

    def forward(self, x):
        return self.dense(x)


class Attention(nn.Module):
    def __init__(self, dim, heads, window):
        super().__init__()
        self.self = SelfAttention(dim, heads, window)
        self.output = Dense(dim, dim)

    def forward(self, x, mask):
        return self.output(self.self(x, mask))


class Layer(nn.Module):
    def __init__(self, dim, heads, window, shift):
        super().__init__()
        self.window, self.shift = window, shift
        self.layernorm_before = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, window)
        self.layernorm_after = nn.LayerNorm(dim)
        self.intermediate = Dense(dim, 4 * dim)
        self.output = Dense(4 * dim, dim)

    def attn_mask(self, h, w):
        if self.shift == 0:
            return None
        img = torch.zeros((1, h, w, 1))
        slices = (slice(0, -self.window), slice(-self.window, -self.shift), slice(-self.shift, None))
        count = 0
        for hs in slices:
            for ws in slices:
                img[:, hs, ws, :] = count
                count += 1
        mw = window_partition(img, self.window).view(-1, self.window * self.window)
        m = mw.unsqueeze(1) - mw.unsqueeze(2)
        return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)

    def forward(self, x, dims):  # always_partition=True: the window is never shrunk
        h, w = dims
        b, _, c = x.shape
        shortcut = x
        x = self.layernorm_before(x).view(b, h, w, c)
        pr = (self.window - w % self.window) % self.window
        pb = (self.window - h % self.window) % self.window
        x = F.pad(x, (0, 0, 0, pr, 0, pb))
        _, hp, wp, _ = x.shape
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(x, self.window).view(-1, self.window * self.window, c)
        out = self.attention(windows, self.attn_mask(hp, wp))
        x = window_reverse(out.view(-1, self.window, self.window, c), self.window, hp, wp)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x[:, :h, :w, :].contiguous().view(b, h * w, c)
        x = shortcut + x
        return x + self.output(F.gelu(self.intermediate(self.layernorm_after(x))))


class Stage(nn.Module):
    def __init__(self, dim, depth, heads, window, last):
        super().__init__()
        self.blocks = nn.ModuleList([Layer(dim, heads, window, 0 if i % 2 == 0 else window // 2)
                                     for i in range(depth)])
        self.downsample = None if last else PatchMerging(dim)

    def forward(self, x, dims):
        for block in self.blocks:
            x = block(x, dims)
        before = x
        if self.downsample is not None:
            x = self.downsample(x, dims)
        return x, before


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([Stage(cfg["embed_dim"] * 2 ** i, cfg["depths"][i], cfg["num_heads"][i],
                                           cfg["window_size"], i == 3) for i in range(4)])


class SwinBackbone(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = Embeddings(cfg["num_channels"], cfg["embed_dim"])
        self.encoder = Encoder(cfg)
        self.hidden_states_norms = nn.ModuleDict({f"stage{i + 1}": nn.LayerNorm(cfg["embed_dim"] * 2 ** i)
                                                  for i in range(4)})

    def forward(self, pixels):
        x, (h, w) = self.embeddings(pixels)
        maps = []
        for i, stage in enumerate(self.encoder.layers):
            x, before = stage(x, (h, w))
            b, _, c = before.shape
            normed = self.hidden_states_norms[f"stage{i + 1}"](before)
            maps.append(normed.view(b, h, w, c).permute(0, 3, 1, 2).contiguous())
            h, w = (h + 1) // 2, (w + 1) // 2
        return maps


VARIANTS = {
    "swin-tiny": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7),
    "swin-small": dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], window_size=7),
    "swin-base": dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12),
    "swin-large": dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12),
}


def counts():
    for name, v in VARIANTS.items():
        model = SwinBackbone(dict(v, num_channels=3))
        print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters (window {v['window_size']})")


def fixture(out):
    torch.manual_seed(35)
    cfg = dict(model_type="swin", embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=4,
               num_channels=3, patch_size=4, mlp_ratio=4.0, qkv_bias=True, hidden_act="gelu", layer_norm_eps=1e-5,
               out_features=["stage1", "stage2", "stage3", "stage4"], drop_path_rate=0.0)
    model = SwinBackbone(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif "norm" in name and name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
            elif "relative_position_bias_table" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[-1] if p.dim() > 1 else 10))
    os.makedirs(out, exist_ok=True)
    hf = os.path.join(out, "hf")
    os.makedirs(hf, exist_ok=True)
    json.dump(dict(cfg, architectures=["SwinBackbone"]), open(os.path.join(hf, "config.json"), "w"), indent=1)
    torch.save(model.state_dict(), os.path.join(hf, "pytorch_model.bin"))
    with open(os.path.join(out, "keys.txt"), "w") as f:  # the state dict's keys and shapes, in its order
        for k, v in model.state_dict().items():
            f.write(f"{k} {'x'.join(map(str, v.shape))}\n")
    pixels = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        maps = model(pixels)
    io = {"input": pixels}
    for i, m in enumerate(maps):
        io[f"stage{i + 1}"] = m
    torch.save(io, os.path.join(out, "io.pth"))
    print(f"{sum(p.numel() for p in model.parameters())} parameters; maps " +
          ", ".join("x".join(map(str, m.shape)) for m in maps))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", action="store_true")
    ap.add_argument("--fixture")
    a = ap.parse_args()
    if a.counts:
        counts()
    if a.fixture:
        fixture(a.fixture)
