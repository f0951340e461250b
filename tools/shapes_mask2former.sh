#!/bin/bash
# A narrow Mask2Former (ResNet-18 from scratch; pixel decoder 128 wide with 3 deformable layers and feed-forward 512;
# 6 masked-attention layers, 20 queries, feed-forward 512: 13.7 M parameters) on the built-in shapes, in the variant
# named, with the set loss and the recipe's AdamW (weight decay 0.05, poly 0.9, clip 0.01) at --lr. The model has no
# flags of its own, so the run is set up from a run.json this script writes. docs/mask2former.md has the figures.
#   bash tools/shapes_mask2former.sh semantic 60 5e-4    # variant, epochs, learning rate; one libtorch thread
#   bash tools/shapes_mask2former.sh panoptic 30 5e-4
#   bash tools/shapes_mask2former.sh instance 30 5e-4
set -eu
cd "$(dirname "$0")/.."
SEGMENT=${SEGMENT:-src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll}
variant=${1:-semantic}; epochs=${2:-60}; lr=${3:-5e-4}
OUT=${OUT:-/tmp/shapes-mask2former}/$variant
case $variant in
  semantic) data="builtin:shapes?count=600&size=64&seed=0"; task=Semantic ;;
  instance) data="builtin:shapes?count=600&size=64&seed=0&instances=1"; task=Instance ;;
  panoptic) data="builtin:shapes?count=600&size=64&seed=0&panoptic=1"; task=Panoptic ;;
  *) echo "unknown variant $variant (semantic, instance, panoptic)" >&2; exit 2 ;;
esac
mkdir -p "$(dirname "$OUT")"
config="$(dirname "$OUT")/$variant.json"
cat > "$config" <<JSON
{"Data": "$data", "DataOptions": {"Task": "$task"},
 "Model": {"Architecture": "mask2former", "Encoder": {"Name": "resnet18"},
   "Decoder": {"Name": "mask2former-pixel", "Options": {"FeatureSize": 128, "MaskFeatureSize": 128, "Heads": 8,
     "Layers": 3, "FeedForward": 512}},
   "Head": {"Name": "mask2former", "Options": {"Queries": 20, "Layers": 6, "Heads": 8, "FeedForward": 512}}},
 "Trainer": {"Epochs": $epochs, "BatchSize": 8}}
JSON
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
dotnet "$SEGMENT" train --config "$config" --loss mask2former --lr "$lr" --weight-decay 0.05 --clip 0.01 \
  --threads 1 --no-tensorboard --out "$OUT" --overwrite
