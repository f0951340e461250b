#!/usr/bin/env python3
"""Writes a cross-check fixture for Segmentation's ResNet encoders: torchvision's own resnet18/34/50 (random weights,
seeded; put in eval mode so batch norm uses its running statistics, themselves randomised), saved with torch.save as
a state dict (NAME.pth, as a user would save a torchvision model), and beside it NAME_io.pth with a fixed input
(`input`) and the five feature maps segmentation_models.pytorch's ResNet encoder returns for it (`stage1` .. `stage5`:
relu(bn1(conv1)), layer1(maxpool), layer2, layer3, layer4).

    /usr/bin/python3 tools/interop/torchvision_resnet_fixture.py OUT_DIR
    SEGMENTATION_TORCHVISION_FIXTURES=OUT_DIR dotnet test --filter TorchvisionFixtureTests

CI has no Python, so the test that reads these skips without the variable.
"""
import os, sys
import torch
import torchvision

out = sys.argv[1] if len(sys.argv) > 1 else "."
os.makedirs(out, exist_ok=True)
for name in ("resnet18", "resnet34", "resnet50"):
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():  # non-trivial statistics, so that eval-mode batch norm is exercised
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    net.eval()
    x = torch.randn(2, 3, 67, 45, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f1 = net.relu(net.bn1(net.conv1(x)))
        f2 = net.layer1(net.maxpool(f1))
        f3 = net.layer2(f2)
        f4 = net.layer3(f3)
        f5 = net.layer4(f4)
    torch.save(net.state_dict(), os.path.join(out, f"{name}.pth"))
    torch.save({"input": x, "stage1": f1, "stage2": f2, "stage3": f3, "stage4": f4, "stage5": f5}, os.path.join(out, f"{name}_io.pth"))
    print(name, sum(p.numel() for p in net.parameters() if p is not None), "parameters with fc;", os.path.getsize(os.path.join(out, f"{name}.pth")), "bytes")
