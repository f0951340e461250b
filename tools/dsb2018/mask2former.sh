#!/bin/bash
# The Data Science Bowl 2018 row of docs/mask2former.md: the narrow Mask2Former (tools/mask2former_narrow.sh) on the
# instance data, 128x128 crops, batch 8, the set loss, AdamW 5e-4 (weight decay 0.05, poly 0.9, clip 0.01), one
# thread, its 40 epochs fitted to a time limit (default 30m); then the scores on the whole validation split, as tools/dsb2018/train.sh does
# for the U-Net.
# Usage: bash tools/dsb2018/mask2former.sh [OUT] [LIMIT] [extra train flags]   (the data in ../shared/datasets/dsb2018)
set -euo pipefail
cd "$(dirname "$0")/../.."
SEGMENT=${SEGMENT:-"dotnet src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll"}
DATA=${DATA:-../shared/datasets/dsb2018/train}
OUT=${1:-runs/dsb2018-mask2former}
LIMIT=${2:-30m}
shift 2 || shift $# || true
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
CONFIG=$(mktemp --suffix .json)
trap 'rm -f "$CONFIG"' EXIT
bash tools/mask2former_narrow.sh "$(realpath "$DATA")" Instance "$CONFIG"
$SEGMENT train --config "$CONFIG" --crop 128x128 --batch-size 8 --epochs 40 --time-limit "$LIMIT" --fit-to-time-limit --eval-every 2 \
    --loss mask2former --lr 5e-4 --weight-decay 0.05 --clip 0.01 --threads 1 --in-channels 3 --no-tensorboard \
    --out "$OUT" "$@"
$SEGMENT eval --checkpoint "$OUT/best.ckpt" --threads 1
