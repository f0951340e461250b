#!/bin/bash
# The narrow Mask2Former of tools/mask2former_narrow.sh on the built-in shapes, in the variant named, with the set
# loss and the recipe's AdamW (weight decay 0.05, poly 0.9, clip 0.01) at the rate given, batch 8.
# docs/mask2former.md has the figures.
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
bash tools/mask2former_narrow.sh "$data" "$task" "$config"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
dotnet "$SEGMENT" train --config "$config" --epochs "$epochs" --loss mask2former --lr "$lr" --weight-decay 0.05 --clip 0.01 \
  --threads 1 --no-tensorboard --out "$OUT" --overwrite
