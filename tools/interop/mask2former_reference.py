#!/usr/bin/env python3
"""A PyTorch reference of Mask2Former's pixel decoder, written from transformers' models/mask2former/
modeling_mask2former.py (multi_scale_deformable_attention, Mask2FormerSinePositionEmbedding,
Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention, Mask2FormerPixelDecoderEncoderLayer,
Mask2FormerPixelDecoderEncoderOnly, Mask2FormerPixelDecoder), with transformers' module names, so its state_dict has
transformers' keys (under model.pixel_level_module.decoder. in a whole model).

    /usr/bin/python3 tools/interop/mask2former_reference.py --fixture tests/fixtures/mask2former
        a small pixel decoder (feature size 64, 8 heads, 2 deformable layers, feed-forward 128, mask features 32) on
        four maps of 8, 16, 32 and 64 channels (a width-8 Swin's, at strides 4 to 32 of a 45 x 61 image: 12 x 16, 6 x 8,
        3 x 4, 2 x 2), with random weights (norms perturbed; offsets large enough that samples land between pixels,
        across levels and outside the maps). Writes pixel_decoder.pth (the state dict), pixel_decoder_io.pth (the four
        input maps, the position embeddings, every deformable layer's output, the three multi-scale maps and the mask
        features) and pixel_decoder_keys.txt.
        Then the transformer module (width 32, 4 heads, 6 queries, decoder_layers 4: three masked-attention layers,
        one per level, feed-forward 64, 3 classes): transformer.pth (its state dict under transformer_module. with the
        class_predictor), transformer_io.pth (its inputs, each layer's input and attention mask, each prediction's
        masks and class logits) and transformer_keys.txt.

Debian's python3-torch (1.13) is enough; transformers itself is not needed.
"""
import argparse, math, os
import torch
from torch import nn
import torch.nn.functional as F


def multi_scale_deformable_attention(value, shapes, locations, weights):
    b, _, heads, d = value.shape
    _, q, heads, levels, points, _ = locations.shape
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1
    sampled = []
    for level, (h, w) in enumerate(shapes):
        v = values[level].flatten(2).transpose(1, 2).reshape(b * heads, d, h, w)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = weights.transpose(1, 2).reshape(b * heads, 1, q, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(b, heads * d, q)
    return out.transpose(1, 2).contiguous()


def sine_position_embedding(x, features, temperature=10000, scale=2 * math.pi):
    mask = torch.zeros((x.size(0), x.size(2), x.size(3)), dtype=torch.bool)
    not_mask = (~mask).to(x.dtype)
    y = not_mask.cumsum(1)
    xe = not_mask.cumsum(2)
    eps = 1e-6
    y = y / (y[:, -1:, :] + eps) * scale
    xe = xe / (xe[:, :, -1:] + eps) * scale
    dim_t = torch.arange(features, dtype=torch.int64).type_as(x)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / features)
    px = xe[:, :, :, None] / dim_t
    py = y[:, :, :, None] / dim_t
    px = torch.stack((px[:, :, :, 0::2].sin(), px[:, :, :, 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[:, :, :, 0::2].sin(), py[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


class DeformableAttention(nn.Module):
    def __init__(self, dim, heads, levels=3, points=4):
        super().__init__()
        self.dim, self.heads, self.levels, self.points = dim, heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)

    def forward(self, hidden, position, reference, shapes):
        query = hidden + position
        b, q, _ = query.shape
        value = self.value_proj(hidden).view(b, q, self.heads, self.dim // self.heads)
        offsets = self.sampling_offsets(query).view(b, q, self.heads, self.levels, self.points, 2)
        weights = F.softmax(self.attention_weights(query).view(b, q, self.heads, self.levels * self.points), -1)
        weights = weights.view(b, q, self.heads, self.levels, self.points)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=torch.long)
        locations = reference[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(multi_scale_deformable_attention(value, shapes, locations, weights))


class EncoderLayer(nn.Module):
    def __init__(self, dim, heads, ffn):
        super().__init__()
        self.self_attn = DeformableAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, hidden, position, reference, shapes):
        hidden = self.self_attn_layer_norm(hidden + self.self_attn(hidden, position, reference, shapes))
        return self.final_layer_norm(hidden + self.fc2(F.relu(self.fc1(hidden))))


class EncoderOnly(nn.Module):
    def __init__(self, dim, heads, ffn, layers):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(dim, heads, ffn) for _ in range(layers)])

    @staticmethod
    def reference_points(shapes):
        refs = []
        for h, w in shapes:
            ry, rx = torch.meshgrid(torch.linspace(0.5, h - 0.5, h), torch.linspace(0.5, w - 0.5, w), indexing="ij")
            refs.append(torch.stack((rx.reshape(-1)[None] / w, ry.reshape(-1)[None] / h), -1))
        ref = torch.cat(refs, 1)
        return ref[:, :, None] * torch.ones(1, 1, len(shapes), 2)  # valid ratios 1: no padding mask


class PixelDecoder(nn.Module):
    def __init__(self, channels, dim, heads, ffn, layers, mask_dim):
        super().__init__()
        self.dim = dim
        self.level_embed = nn.Parameter(torch.Tensor(3, dim))
        self.input_projections = nn.ModuleList([nn.Sequential(nn.Conv2d(c, dim, kernel_size=1), nn.GroupNorm(32, dim))
                                                for c in channels[-3:][::-1]])
        self.encoder = EncoderOnly(dim, heads, ffn, layers)
        self.mask_projection = nn.Conv2d(dim, mask_dim, kernel_size=1)
        self.adapter_1 = nn.Sequential(nn.Conv2d(channels[0], dim, kernel_size=1, bias=False), nn.GroupNorm(32, dim))
        self.layer_1 = nn.Sequential(nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=False), nn.GroupNorm(32, dim),
                                     nn.ReLU())

    def forward(self, features, trace):
        embeds, positions = [], []
        for level, x in enumerate(features[::-1][:3]):
            embeds.append(self.input_projections[level](x))
            positions.append(sine_position_embedding(x, self.dim // 2))
            trace[f"position{level}"] = positions[-1]
        shapes = [(e.shape[2], e.shape[3]) for e in embeds]
        hidden = torch.cat([e.flatten(2).transpose(1, 2) for e in embeds], 1)
        position = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1)
                              for i, p in enumerate(positions)], 1)
        reference = self.encoder.reference_points(shapes)
        trace["tokens"] = hidden
        for i, layer in enumerate(self.encoder.layers):
            hidden = layer(hidden, position, reference, shapes)
            trace[f"encoder{i}"] = hidden
        b = hidden.shape[0]
        outputs = [x.transpose(1, 2).view(b, -1, h, w)
                   for x, (h, w) in zip(hidden.split([h * w for h, w in shapes], dim=1), shapes)]
        lateral = self.adapter_1(features[0])
        out = lateral + F.interpolate(outputs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        outputs.append(self.layer_1(out))
        for i in range(3):
            trace[f"multi_scale{i}"] = outputs[i]
        trace["mask_features"] = self.mask_projection(outputs[-1])
        return trace


def fixture(out):
    torch.manual_seed(36)
    channels = [8, 16, 32, 64]
    model = PixelDecoder(channels, dim=64, heads=8, ffn=128, layers=2, mask_dim=32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))  # group and layer norms
            elif p.dim() == 1 and name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
            elif name == "level_embed":
                p.copy_(torch.randn_like(p))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) / math.sqrt(fan_in))
        for layer in model.encoder.layers:  # offsets of a few pixels: samples between pixels and past the edges
            layer.self_attn.sampling_offsets.weight.mul_(3)
            layer.self_attn.sampling_offsets.bias.mul_(10)
    sizes = [(12, 16), (6, 8), (3, 4), (2, 2)]
    features = [torch.randn(2, c, h, w) for c, (h, w) in zip(channels, sizes)]
    with torch.no_grad():
        trace = model(features, {})
    os.makedirs(out, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(out, "pixel_decoder.pth"))
    io = {f"feature{i}": f for i, f in enumerate(features)}
    io.update(trace)
    io = {k: v.contiguous() for k, v in io.items()}
    torch.save(io, os.path.join(out, "pixel_decoder_io.pth"))
    with open(os.path.join(out, "pixel_decoder_keys.txt"), "w") as f:
        for k, v in model.state_dict().items():
            f.write(f"{k} {'x'.join(map(str, v.shape))}\n")
    print(f"{sum(p.numel() for p in model.parameters())} parameters; mask features "
          f"{'x'.join(map(str, trace['mask_features'].shape))}")




# --- the transformer module (transformers' Mask2FormerTransformerModule and its decoder), written from the same file


class SelfAttention(nn.Module):  # Mask2FormerAttention
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scaling = self.head_dim ** -0.5
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, hidden, position):  # (Q, B, C) as transformers
        hidden = hidden.permute(1, 0, 2)
        position = position.permute(1, 0, 2)
        b, t, c = hidden.shape
        with_pos = hidden + position

        def shape(x):
            return x.view(b, -1, self.heads, self.head_dim).transpose(1, 2).contiguous().view(b * self.heads, -1,
                                                                                                self.head_dim)
        q = shape(self.q_proj(with_pos) * self.scaling)
        k = shape(self.k_proj(with_pos))
        v = shape(self.v_proj(hidden))
        w = F.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)
        out = torch.bmm(w, v).view(b, self.heads, t, self.head_dim).transpose(1, 2).reshape(b, t, c)
        return self.out_proj(out).permute(1, 0, 2)


class DecoderLayer(nn.Module):  # Mask2FormerMaskedAttentionDecoderLayer, post-norm
    def __init__(self, dim, heads, ffn):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, 0.0)
        self.cross_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, hidden, level_tokens, level_position, query_position, mask):
        residual = hidden
        hidden = self.cross_attn(query=hidden + query_position, key=level_tokens + level_position,
                                 value=level_tokens, attn_mask=mask, key_padding_mask=None)[0]
        hidden = self.cross_attn_layer_norm(residual + hidden)
        hidden = self.self_attn_layer_norm(hidden + self.self_attn(hidden, query_position))
        return self.final_layer_norm(hidden + self.fc2(F.relu(self.fc1(hidden))))


class PredictionBlock(nn.Module):
    def __init__(self, i, o, relu):
        super().__init__()
        self.add_module("0", nn.Linear(i, o))
        self.add_module("1", nn.ReLU() if relu else nn.Identity())

    def forward(self, x):
        return self._modules["1"](self._modules["0"](x))


class MLPHead(nn.Module):
    def __init__(self, dim, out, layers=3):
        super().__init__()
        for i in range(layers):
            self.add_module(str(i), PredictionBlock(dim, out if i == layers - 1 else dim, i < layers - 1))

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class MaskPredictor(nn.Module):
    def __init__(self, dim, heads, mask_dim):
        super().__init__()
        self.heads = heads
        self.mask_embedder = MLPHead(dim, mask_dim)

    def forward(self, outputs, pixels, size):
        embeddings = self.mask_embedder(outputs.transpose(0, 1))
        masks = torch.einsum("bqc, bchw -> bqhw", embeddings, pixels)
        attention = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        attention = attention.sigmoid().flatten(2).unsqueeze(1).repeat(1, self.heads, 1, 1)
        return masks, (attention.flatten(0, 1) < 0.5).bool().detach()


class MaskedAttentionDecoder(nn.Module):
    def __init__(self, dim, heads, ffn, layers, mask_dim):
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(dim, heads, ffn) for _ in range(layers)])
        self.layernorm = nn.LayerNorm(dim)
        self.mask_predictor = MaskPredictor(dim, heads, mask_dim)


class TransformerModule(nn.Module):
    def __init__(self, dim, heads, ffn, decoder_layers, queries, mask_dim):
        super().__init__()
        self.queries_embedder = nn.Embedding(queries, dim)
        self.queries_features = nn.Embedding(queries, dim)
        self.decoder = MaskedAttentionDecoder(dim, heads, ffn, decoder_layers - 1, mask_dim)
        self.level_embed = nn.Embedding(3, dim)

    def forward(self, multi_scale, mask_features, class_predictor, trace):
        tokens, positions, sizes = [], [], []
        for i in range(3):
            sizes.append(multi_scale[i].shape[-2:])
            positions.append(sine_position_embedding(multi_scale[i], multi_scale[i].shape[1] // 2).flatten(2)
                             .permute(2, 0, 1))
            tokens.append((multi_scale[i].flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
        b = tokens[0].shape[1]
        query_position = self.queries_embedder.weight.unsqueeze(1).repeat(1, b, 1)
        hidden = self.queries_features.weight.unsqueeze(1).repeat(1, b, 1)
        decoder = self.decoder
        intermediate = decoder.layernorm(hidden)
        masks, attention = decoder.mask_predictor(intermediate, mask_features, sizes[0])
        trace["masks0"], trace["classes0"] = masks, class_predictor(intermediate.transpose(0, 1))
        for i, layer in enumerate(decoder.layers):
            where = (attention.sum(-1) != attention.shape[-1]).to(attention.dtype)
            attention = attention * where.unsqueeze(-1)
            trace[f"hidden{i}"], trace[f"attention{i}"] = hidden.transpose(0, 1), attention
            level = i % 3
            hidden = layer(hidden, tokens[level], positions[level], query_position, attention)
            intermediate = decoder.layernorm(hidden)
            masks, attention = decoder.mask_predictor(intermediate, mask_features, sizes[(i + 1) % 3])
            trace[f"masks{i + 1}"] = masks
            trace[f"classes{i + 1}"] = class_predictor(intermediate.transpose(0, 1))
        trace[f"hidden{len(decoder.layers)}"] = hidden.transpose(0, 1)
        return trace


def transformer_fixture(out):
    torch.manual_seed(37)
    dim, heads, queries, classes = 32, 4, 6, 3
    module = TransformerModule(dim, heads, ffn=64, decoder_layers=4, queries=queries, mask_dim=dim).eval()
    class_predictor = nn.Linear(dim, classes + 1)
    with torch.no_grad():
        for name, p in list(module.named_parameters()) + [("class_predictor." + n, p)
                                                           for n, p in class_predictor.named_parameters()]:
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.2 * torch.randn_like(p))
            elif "embed" in name or "queries" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[-1]))
        class_predictor.weight.mul_(3)  # the queries do not collapse onto one class
    sizes = [(2, 2), (3, 4), (6, 8)]
    multi_scale = [torch.randn(2, dim, h, w) for h, w in sizes]
    mask_features = torch.randn(2, dim, 12, 16)
    with torch.no_grad():
        trace = module(multi_scale, mask_features, class_predictor, {})
    state = {f"transformer_module.{k}": v for k, v in module.state_dict().items()}
    state.update({f"class_predictor.{k}": v for k, v in class_predictor.state_dict().items()})
    torch.save(state, os.path.join(out, "transformer.pth"))
    io = {f"multi_scale{i}": m for i, m in enumerate(multi_scale)}
    io["mask_features"] = mask_features
    io.update({k: (v.float() if v.dtype == torch.bool else v).contiguous() for k, v in trace.items()})
    torch.save(io, os.path.join(out, "transformer_io.pth"))
    with open(os.path.join(out, "transformer_keys.txt"), "w") as f:
        for k, v in state.items():
            f.write(f"{k} {'x'.join(map(str, v.shape))}\n")
    blocked = [trace[f"attention{i}"].float().mean().item() for i in range(3)]
    print(f"{sum(v.numel() for v in state.values())} parameters; blocked share of each layer's mask: "
          + ", ".join(f"{b:.2f}" for b in blocked))


def counts(classes=133):
    """Parameter counts of whole Mask2Formers (transformers' default config: feature, mask and hidden 256, 6 deformable
    layers of feed-forward 1024, 9 masked-attention layers of feed-forward 2048, 100 queries) on Swin-T/S/B, with
    transformers' SwinBackbone from swin_reference.py."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("swin_reference", os.path.join(os.path.dirname(__file__),
                                                                                 "swin_reference.py"))
    swin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(swin)
    for name in ("swin-tiny", "swin-small", "swin-base"):
        v = swin.VARIANTS[name]
        backbone = swin.SwinBackbone(dict(v, num_channels=3))
        channels = [v["embed_dim"] * 2 ** i for i in range(4)]
        pixel = PixelDecoder(channels, dim=256, heads=8, ffn=1024, layers=6, mask_dim=256)
        transformer = TransformerModule(256, 8, ffn=2048, decoder_layers=10, queries=100, mask_dim=256)
        head = nn.Linear(256, classes + 1)
        total = sum(sum(p.numel() for p in m.parameters()) for m in (backbone, pixel, transformer, head))
        print(f"mask2former on {name}, {classes} classes: {total:,} parameters")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture")
    ap.add_argument("--counts", action="store_true")
    a = ap.parse_args()
    if a.fixture:
        fixture(a.fixture)
        transformer_fixture(a.fixture)
    if a.counts:
        counts()