#!/usr/bin/env python3
"""Is ML.NET's ResNet18.onnx (NuGet Microsoft.ML.DnnImageFeaturizer.ResNet18 0.23.1, MIT; a CNTK 2.6 export) a trained
network whose weights could seed an encoder? Reads its first convolution and batch norm and its preprocessing graph.

    curl -sSL https://api.nuget.org/v3-flatcontainer/microsoft.ml.dnnimagefeaturizer.resnet18/0.23.1/microsoft.ml.dnnimagefeaturizer.resnet18.0.23.1.nupkg -o r18.nupkg
    unzip -q r18.nupkg 'tools/*' && /usr/bin/python3 tools/interop/cntk_resnet18_probe.py   # from that folder
"""
import onnx, numpy as np
from onnx import numpy_helper
m = onnx.load("tools/DnnImageModels/ResNet18Onnx/ResNet18.onnx")
inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
convs = [n for n in m.graph.node if n.op_type == "Conv"]
w = inits[convs[0].input[1]].astype(np.float64)   # 64 x 3 x 7 x 7
def autocorr(w):
    a = w - w.mean(axis=(2, 3), keepdims=True)
    num = (a[:, :, :, 1:] * a[:, :, :, :-1]).sum() + (a[:, :, 1:, :] * a[:, :, :-1, :]).sum()
    den = (a[:, :, :, 1:] ** 2).sum() + (a[:, :, 1:, :] ** 2).sum()
    return num / den
rng = np.random.default_rng(0)
print("conv1 neighbour correlation: trained-looking filters are smooth (>0.3); random ones ~0")
print("  ResNet18.onnx conv1:", round(autocorr(w), 3))
print("  random kaiming conv1:", round(autocorr(rng.normal(size=w.shape)), 3))
# colour structure: ImageNet first layers have many filters that respond to colour opponency; RGB channel correlation per filter
c = [np.corrcoef(f.reshape(3, -1))[0, 1] for f in w]
print("  mean R-G correlation within a filter:", round(float(np.mean(c)), 3))
bns = [n for n in m.graph.node if n.op_type == "BatchNormalization"]
var = inits[bns[0].input[4]]; mean = inits[bns[0].input[3]]
print("bn1 running mean range", float(mean.min()), float(mean.max()), "var range", float(var.min()), float(var.max()))
pre = onnx.load("tools/DnnImageModels/ResNetPrepOnnx/ResNetPreprocess.onnx")
print("preprocess:", [(n.op_type, list(n.input)) for n in pre.graph.node])
for i in pre.graph.initializer:
    a = numpy_helper.to_array(i)
    print("  constant", i.name, a.shape, "per-channel mean", a.reshape(a.shape[0] * a.shape[1], -1).mean(axis=1).round(2).tolist() if a.ndim == 4 else a.ravel()[:6])
