#!/usr/bin/env python3
"""PyTorch -> Segmentation and Segmentation -> PyTorch give the same masks on a real image (CamVid, or any RGB PNG).

1. milesial/Pytorch-UNet's UNet(3, 5, bilinear=False), rebuilt here with its module names (random weights and
   batch-norm statistics), saved with torch.save(state_dict); `segment import --from milesial`; `segment predict`
   on the image; the same image through the PyTorch model (pixel / 255); the argmax masks are compared.
2. A checkpoint trained here with a ResNet encoder (e.g. the CamVid resnet34 run): `segment export --format pytorch`
   (smp's names); loaded with torch.load(weights_only=True) into smp's Unet layout rebuilt on torchvision's resnet;
   the image through it (ImageNet normalisation, the checkpoint's resize) against `segment predict`.
3. The milesial model of step 1 exported by PyTorch itself (torch.onnx.export, dynamic height and width, no
   metadata); `segment predict --onnx model.onnx --classes 5` (Segmentation.Onnx on ONNX Runtime) against PyTorch.

    /usr/bin/python3 tools/interop/pytorch_roundtrip.py IMAGE.png [RESNET_CHECKPOINT RESNET_NAME HxW]
"""
import os, subprocess, sys, tempfile
import torch, torch.nn as nn, torch.nn.functional as F, torchvision
from torchvision.io import read_image, ImageReadMode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEGMENT = ["dotnet", os.path.join(ROOT, "src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll")]

def double_conv(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

class DoubleConv(nn.Module):
    def __init__(self, cin, cout): super().__init__(); self.double_conv = double_conv(cin, cout)
    def forward(self, x): return self.double_conv(x)

class Down(nn.Module):
    def __init__(self, cin, cout): super().__init__(); self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout))
    def forward(self, x): return self.maxpool_conv(x)

class Up(nn.Module):
    def __init__(self, cin, cout):
        super().__init__(); self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2); self.conv = DoubleConv(cin, cout)
    def forward(self, x1, x2):
        x1 = self.up(x1)
        dy, dx = x2.size(2) - x1.size(2), x2.size(3) - x1.size(3)
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))

class OutConv(nn.Module):
    def __init__(self, cin, cout): super().__init__(); self.conv = nn.Conv2d(cin, cout, 1)
    def forward(self, x): return self.conv(x)

class MilesialUNet(nn.Module):
    """milesial/Pytorch-UNet's UNet(n_channels, n_classes, bilinear=False): its module names, written here."""
    def __init__(self, n_channels, n_classes):
        super().__init__()
        self.inc = DoubleConv(n_channels, 64)
        self.down1, self.down2, self.down3, self.down4 = Down(64, 128), Down(128, 256), Down(256, 512), Down(512, 1024)
        self.up1, self.up2, self.up3, self.up4 = Up(1024, 512), Up(512, 256), Up(256, 128), Up(128, 64)
        self.outc = OutConv(64, n_classes)
    def forward(self, x):
        x1 = self.inc(x); x2 = self.down1(x1); x3 = self.down2(x2); x4 = self.down3(x3); x5 = self.down4(x4)
        return self.outc(self.up4(self.up3(self.up2(self.up1(x5, x4), x3), x2), x1))

class SmpUnet(nn.Module):
    """segmentation_models.pytorch's Unet(encoder_name=resnetN) layout and names on torchvision's resnet."""
    def __init__(self, name, classes):
        super().__init__()
        self.encoder = getattr(torchvision.models, name)(weights=None); del self.encoder.fc
        enc = (64, 64, 128, 256, 512) if name != "resnet50" else (64, 256, 512, 1024, 2048)
        dec = (256, 128, 64, 32, 16); rev = enc[::-1]
        ins = [rev[0]] + list(dec[:-1]); skips = list(rev[1:]) + [0]
        cbr = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
        self.decoder = nn.Module()
        self.decoder.blocks = nn.ModuleList()
        for i, s, o in zip(ins, skips, dec):
            b = nn.Module(); b.conv1 = cbr(i + s, o); b.conv2 = cbr(o, o); self.decoder.blocks.append(b)
        self.segmentation_head = nn.Sequential(nn.Conv2d(dec[-1], classes, 3, padding=1))
    def forward(self, x):
        e = self.encoder
        f1 = e.relu(e.bn1(e.conv1(x))); f2 = e.layer1(e.maxpool(f1)); f3 = e.layer2(f2); f4 = e.layer3(f3); f5 = e.layer4(f4)
        skips = [f4, f3, f2, f1, None]
        y = f5
        for b, s in zip(self.decoder.blocks, skips):
            y = F.interpolate(y, scale_factor=2, mode="nearest")
            if s is not None: y = torch.cat([y, s], dim=1)
            y = b.conv2(b.conv1(y))
        return self.segmentation_head(y)

def segment(*args):
    subprocess.run(SEGMENT + list(args), check=True, stdout=subprocess.DEVNULL)

def predicted_mask(folder, image):
    return read_image(os.path.join(folder, os.path.splitext(os.path.basename(image))[0] + ".png"), ImageReadMode.GRAY)[0].long()

def compare(label, ours, theirs):
    agree = (ours == theirs).float().mean().item()
    print(f"{label}: {agree * 100:.3f}% of {ours.numel()} pixels agree; classes in the mask: {sorted(theirs.unique().tolist())}")
    return agree

def main():
    image = sys.argv[1]
    x = read_image(image, ImageReadMode.RGB).float().unsqueeze(0)
    work = tempfile.mkdtemp(prefix="roundtrip-")
    torch.manual_seed(0)
    # 1. PyTorch -> here
    m = MilesialUNet(3, 5)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1); mod.running_var.uniform_(0.5, 1.5); mod.weight.uniform_(0.5, 1.5); mod.bias.normal_(0, 0.1)
    m.eval()
    torch.save(m.state_dict(), os.path.join(work, "milesial.pth"))
    segment("import", "--pytorch", os.path.join(work, "milesial.pth"), "--from", "milesial", "--out", os.path.join(work, "milesial.ckpt"))
    segment("predict", "--checkpoint", os.path.join(work, "milesial.ckpt"), "--input", image, "--out", os.path.join(work, "pred1"))
    with torch.no_grad():
        theirs = m(x / 255).argmax(1)[0]
    ok = compare("milesial UNet, PyTorch -> segment import -> segment predict", predicted_mask(os.path.join(work, "pred1"), image), theirs) > 0.999
    # 3. torch.onnx.export -> segment predict --onnx
    onnx_path = os.path.join(work, "milesial.onnx")
    torch.onnx.export(m, torch.zeros(1, 3, 64, 64), onnx_path, opset_version=13, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}})
    segment("predict", "--onnx", onnx_path, "--classes", "5", "--input", image, "--out", os.path.join(work, "pred3"))
    ok &= compare("milesial UNet, torch.onnx.export -> segment predict --onnx (ONNX Runtime)", predicted_mask(os.path.join(work, "pred3"), image), theirs) > 0.999
    # 2. here -> PyTorch
    if len(sys.argv) >= 5:
        ckpt, name, size = sys.argv[2], sys.argv[3], [int(v) for v in sys.argv[4].split("x")]
        segment("export", "--checkpoint", ckpt, "--format", "pytorch", "--out", os.path.join(work, "smp.pth"))
        state = torch.load(os.path.join(work, "smp.pth"), weights_only=True)
        classes = state["segmentation_head.0.weight"].shape[0]
        net = SmpUnet(name, classes)
        net.load_state_dict(state, strict=True)
        net.eval()
        segment("predict", "--checkpoint", ckpt, "--input", image, "--out", os.path.join(work, "pred2"))
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1); std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        with torch.no_grad():
            z = F.interpolate((x / 255 - mean) / std, size=size, mode="bilinear", align_corners=False)
            logits = F.interpolate(net(z), size=x.shape[2:], mode="bilinear", align_corners=False)
        ok &= compare(f"{name} trained here, segment export -> torch.load(weights_only=True) -> smp layout", predicted_mask(os.path.join(work, "pred2"), image), logits.argmax(1)[0]) > 0.999
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)

main()
