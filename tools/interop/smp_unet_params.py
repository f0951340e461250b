#!/usr/bin/env python3
"""Parameter counts of segmentation_models.pytorch's Unet on torchvision ResNets, rebuilt from smp's layout
(decoders/unet/decoder.py: blocks of nearest-upsample, concat [x, skip], two Conv3x3-BN-ReLU with no conv bias;
channels 256-128-64-32-16; a 3x3 head) on torchvision's resnet without fc. smp itself cannot be installed here.

    /usr/bin/python3 tools/interop/smp_unet_params.py
"""
import torch.nn as nn
import torchvision

def conv_bn_relu(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

for name, enc in (("resnet18", (3, 64, 64, 128, 256, 512)), ("resnet34", (3, 64, 64, 128, 256, 512)), ("resnet50", (3, 64, 256, 512, 1024, 2048))):
    encoder = getattr(torchvision.models, name)(weights=None)
    del encoder.fc
    dec = (256, 128, 64, 32, 16)
    rev = enc[1:][::-1]
    ins = [rev[0]] + list(dec[:-1])
    skips = list(rev[1:]) + [0]
    blocks = nn.ModuleList(nn.Sequential(conv_bn_relu(i + s, o), conv_bn_relu(o, o)) for i, s, o in zip(ins, skips, dec))
    for classes in (1, 2):
        head = nn.Conv2d(dec[-1], classes, 3, padding=1)
        total = sum(p.numel() for m in (encoder, blocks, head) for p in m.parameters())
        print(f"{name} classes={classes}: {total:,}")
