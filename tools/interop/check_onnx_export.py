#!/usr/bin/env python3
"""Does ONNX's own checker accept our export? Runs onnx.checker (full check) and shape inference on each file given.

    dotnet src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll export --checkpoint runs/x/best.ckpt --out model.onnx
    /usr/bin/python3 tools/interop/check_onnx_export.py model.onnx      # Debian's python3-onnx (1.12)
"""
import sys
import onnx

for path in sys.argv[1:]:
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type.shape.dim
    ops = sorted({n.op_type for n in model.graph.node})
    print(f"{path}: checker OK (IR {model.ir_version}, opset {model.opset_import[0].version}), "
          f"{len(model.graph.node)} nodes ({', '.join(ops)}), {len(model.graph.initializer)} initializers, "
          f"output {[d.dim_param or d.dim_value for d in out]}, metadata {[p.key for p in model.metadata_props]}")
