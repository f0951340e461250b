#!/bin/bash
# TorchSharp and ONNX Runtime see the same pixels (docs/reliability.md): the objects a DSB2018 checkpoint finds on the
# validation images through `segment predict --checkpoint` and through its ONNX export with `segment predict --onnx`
# (Segmentation.Onnx), scored one against the other; every object should match (AP50 1, the same counts).
# Usage: bash tools/dsb2018/routes.sh CHECKPOINT [OUT]   (the data in ../shared/datasets/dsb2018/train)
set -euo pipefail
cd "$(dirname "$0")/../.."
SEGMENT=${SEGMENT:-"dotnet src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll"}
DATA=${DATA:-../shared/datasets/dsb2018/train}
CKPT=$1
OUT=${2:-/tmp/dsb-routes}
rm -rf "$OUT"; mkdir -p "$OUT/images"
while read -r name; do ln -s "$(realpath "$DATA/images/$name.png")" "$OUT/images/$name.png"; done \
  < tools/dsb2018/val-names.txt
$SEGMENT export --checkpoint "$CKPT" --format onnx --out "$OUT/model.onnx"
$SEGMENT predict --checkpoint "$CKPT" --input "$OUT/images" --out "$OUT/torch" --threads "$(nproc)"
$SEGMENT predict --onnx "$OUT/model.onnx" --input "$OUT/images" --out "$OUT/onnx" --threads "$(nproc)"
echo "ONNX Runtime's objects scored against TorchSharp's on $(ls "$OUT/images" | wc -l) validation images:"
$SEGMENT score --task instance --pred "$OUT/onnx" --gt "$OUT/torch"
