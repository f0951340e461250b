#!/usr/bin/env python3
"""The FPN decoder and the ConvNeXt-T encoder against their references in PyTorch.

References: torchvision's own convnext_tiny (0.14 here), and segmentation_models.pytorch's FPN rebuilt here from its
layout (decoders/fpn/decoder.py: p5 1x1, FPNBlocks of nearest x2 + skip_conv, SegmentationBlocks of Conv3x3GNReLU with
bilinear x2 (align_corners=True), merge by addition, Dropout2d 0.2; SegmentationHead 1x1 + UpsamplingBilinear2d(4)),
since smp cannot be installed here. The U-Net decoder on ConvNeXt is smp's Unet decoder (as tools/interop/
pytorch_roundtrip.py rebuilds it) on the four ConvNeXt maps.

    /usr/bin/python3 tools/interop/fpn_convnext_reference.py                  # parameter counts
    /usr/bin/python3 tools/interop/fpn_convnext_reference.py CKPT IMAGE.png   # a checkpoint trained here
    /usr/bin/python3 tools/interop/fpn_convnext_reference.py --keys tests/fixtures/keys   # the key fixtures

--keys writes each reference's state-dict keys and shapes (torchvision's convnext_tiny features; smp's FPN decoder and
head for 4 classes on resnet34), which the tests hold our models' keys to.

With a checkpoint: `segment export --format pytorch` -> torch.load(weights_only=True) -> load_state_dict(strict=True)
into the reference (fpn on resnet18/34/50 or convnext-tiny, or unet on convnext-tiny); the image through it,
normalised by the mean and std of the ONNX export's metadata (needs python3-onnx), against `segment predict`'s mask.
Prints the share of pixels that agree.
"""
import json, os, subprocess, sys, tempfile
import torch, torch.nn as nn, torch.nn.functional as F, torchvision
from torchvision.io import read_image, ImageReadMode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEGMENT = ["dotnet", os.path.join(ROOT, "src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll")]


class ConvNeXtFeatures(nn.Module):
    """torchvision's convnext_tiny().features under `encoder.features.*`; maps after features 1, 3, 5, 7."""
    def __init__(self, in_channels=3):
        super().__init__()
        net = torchvision.models.convnext_tiny(weights=None)
        if in_channels != 3:
            old = net.features[0][0]
            net.features[0][0] = nn.Conv2d(in_channels, old.out_channels, 4, stride=4)
        self.features = net.features
        self.out_channels = (96, 192, 384, 768)

    def forward(self, x):
        maps = []
        for i, m in enumerate(self.features):
            x = m(x)
            if i % 2 == 1:
                maps.append(x)
        return maps


class ResNetFeatures(nn.Module):
    def __init__(self, name, in_channels=3):
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None)
        del net.fc
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        for k in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, k, getattr(net, k))
        self.out_channels = (64, 256, 512, 1024, 2048) if name == "resnet50" else (64, 64, 128, 256, 512)

    def forward(self, x):
        f1 = self.relu(self.bn1(self.conv1(x)))
        f2 = self.layer1(self.maxpool(f1)); f3 = self.layer2(f2); f4 = self.layer3(f3); f5 = self.layer4(f4)
        return [f1, f2, f3, f4, f5]


def conv3x3_gn_relu(cin, cout):
    block = nn.Module()
    block.block = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(32, cout), nn.ReLU())
    return block


class FpnDecoder(nn.Module):
    """smp's FPNDecoder layout and names (pyramid 256, segmentation 128, merge 'add', dropout 0.2)."""
    def __init__(self, enc, pyramid=256, seg=128):
        super().__init__()
        c2, c3, c4, c5 = enc[-4:]
        self.p5 = nn.Conv2d(c5, pyramid, 1)
        for name, c in (("p4", c4), ("p3", c3), ("p2", c2)):
            b = nn.Module(); b.skip_conv = nn.Conv2d(c, pyramid, 1); setattr(self, name, b)
        self.seg_blocks = nn.ModuleList()
        for ups in (3, 2, 1, 0):
            b = nn.Module()
            b.block = nn.Sequential(*[conv3x3_gn_relu(pyramid if i == 0 else seg, seg) for i in range(max(1, ups))])
            b.ups = ups
            self.seg_blocks.append(b)

    def forward(self, maps):
        c2, c3, c4, c5 = maps[-4:]
        p5 = self.p5(c5)
        p4 = F.interpolate(p5, scale_factor=2.0, mode="nearest") + self.p4.skip_conv(c4)
        p3 = F.interpolate(p4, scale_factor=2.0, mode="nearest") + self.p3.skip_conv(c3)
        p2 = F.interpolate(p3, scale_factor=2.0, mode="nearest") + self.p2.skip_conv(c2)
        out = 0
        for b, p in zip(self.seg_blocks, (p5, p4, p3, p2)):
            x = p
            for i, m in enumerate(b.block):
                x = m.block(x)
                if i < b.ups:
                    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
            out = out + x
        return out


class SmpUnetDecoder(nn.Module):
    """smp's Unet decoder (256-128-64-32-16, nearest x2, concat [x, skip], two Conv3x3-BN-ReLU) on maps whose strides
    are 4 to 32 (ConvNeXt: no stride-2 or stride-1 skip)."""
    def __init__(self, enc):
        super().__init__()
        dec = (256, 128, 64, 32, 16)
        skips = list(enc[-2::-1]) + [0] * (5 - (len(enc) - 1))
        ins = [enc[-1]] + list(dec[:-1])
        cbr = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
        self.blocks = nn.ModuleList()
        for i, s, o in zip(ins, skips, dec):
            b = nn.Module(); b.conv1 = cbr(i + s, o); b.conv2 = cbr(o, o); self.blocks.append(b)

    def forward(self, maps):
        x, skips = maps[-1], maps[-2::-1]
        for i, b in enumerate(self.blocks):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            if i < len(skips):
                x = torch.cat([x, skips[i]], dim=1)
            x = b.conv2(b.conv1(x))
        return x


class Model(nn.Module):
    def __init__(self, arch, encoder, classes, in_channels=3):
        super().__init__()
        self.encoder = ConvNeXtFeatures(in_channels) if encoder == "convnext-tiny" else ResNetFeatures(encoder, in_channels)
        enc = self.encoder.out_channels
        if arch == "fpn":
            self.decoder = FpnDecoder(enc)
            self.segmentation_head = nn.Sequential(nn.Conv2d(128, classes, 1))
        else:
            self.decoder = SmpUnetDecoder(enc)
            self.segmentation_head = nn.Sequential(nn.Conv2d(16, classes, 3, padding=1))
        self.arch = arch

    def forward(self, x):
        y = self.segmentation_head(self.decoder(self.encoder(x)))
        if self.arch == "fpn":
            y = F.interpolate(y, scale_factor=4.0, mode="bilinear", align_corners=True)
        return y


def count(m):
    return sum(p.numel() for p in m.parameters())


def counts():
    net = torchvision.models.convnext_tiny(weights=None)
    print(f"torchvision convnext_tiny: features {count(net.features):,}, with the classifier {count(net):,}")
    for enc in ("resnet18", "resnet34", "resnet50", "convnext-tiny"):
        print(f"fpn on {enc}, 1 class: {count(Model('fpn', enc, 1)):,}")
    print(f"unet on convnext-tiny, 1 class: {count(Model('unet', 'convnext-tiny', 1)):,}")


def architecture_of(state):
    """(arch, encoder) from the keys and shapes of an exported state dict."""
    arch = "fpn" if "decoder.p5.weight" in state else "unet"
    if "encoder.features.0.0.weight" in state:
        return arch, "convnext-tiny"
    if "encoder.layer1.0.conv3.weight" in state:
        return arch, "resnet50"
    return arch, "resnet34" if "encoder.layer3.5.conv1.weight" in state else "resnet18"


def compare(ckpt, image):
    import onnx
    work = tempfile.mkdtemp(prefix="fpn-convnext-")
    for fmt, name in (("pytorch", "m.pth"), ("onnx", "m.onnx")):
        subprocess.run(SEGMENT + ["export", "--checkpoint", ckpt, "--format", fmt, "--out", os.path.join(work, name)],
                       check=True, stdout=subprocess.DEVNULL)
    meta = {p.key: p.value for p in onnx.load(os.path.join(work, "m.onnx")).metadata_props}
    if meta["normalization_scheme"] not in ("dataset", "imagenet", "fixed"):
        sys.exit(f"this script normalises by a fixed mean and std; the checkpoint's scheme is {meta['normalization_scheme']}")
    state = torch.load(os.path.join(work, "m.pth"), weights_only=True)
    arch, encoder = architecture_of(state)
    classes, channels = int(meta["classes"]), int(meta["in_channels"])
    net = Model(arch, encoder, classes, channels)
    net.load_state_dict(state, strict=True)
    net.eval()
    subprocess.run(SEGMENT + ["predict", "--checkpoint", ckpt, "--input", image, "--out", os.path.join(work, "pred")],
                   check=True, stdout=subprocess.DEVNULL)
    ours = read_image(os.path.join(work, "pred", os.path.splitext(os.path.basename(image))[0] + ".png"),
                      ImageReadMode.GRAY)[0].long()
    x = read_image(image, ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY).float().unsqueeze(0) / 255
    mean = torch.tensor(json.loads(meta["normalization_mean"])).view(1, -1, 1, 1)
    std = torch.tensor(json.loads(meta["normalization_std"])).view(1, -1, 1, 1)
    with torch.no_grad():
        theirs = net((x - mean) / std).argmax(1)[0]
    agree = (ours == theirs).float().mean().item()
    print(f"{arch} on {encoder}: {agree * 100:.3f}% of {ours.numel()} pixels agree with the PyTorch reference; "
          f"classes in its mask {sorted(theirs.unique().tolist())}")
    return agree


def keys(folder):
    os.makedirs(folder, exist_ok=True)
    def write(name, items):
        with open(os.path.join(folder, name), "w") as f:
            for k, v in items:
                f.write(f"{k} {'x'.join(str(d) for d in v.shape)}\n")
    net = torchvision.models.convnext_tiny(weights=None)
    write("torchvision-convnext_tiny-features.txt", net.features.state_dict().items())
    fpn = Model("fpn", "resnet34", 4)
    write("smp-fpn-resnet34-4-classes-decoder-and-head.txt",
          [(k, v) for k, v in fpn.state_dict().items() if not k.startswith("encoder.")])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--keys":
        keys(sys.argv[2])
        sys.exit(0)
    counts()
    if len(sys.argv) >= 3:
        ok = compare(sys.argv[1], sys.argv[2]) > 0.999
        print("OK" if ok else "MISMATCH")
        sys.exit(0 if ok else 1)
