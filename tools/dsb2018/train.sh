#!/bin/bash
# The Data Science Bowl 2018 run of docs/instances.md: a 16-channel U-Net with group norm, interior/boundary target,
# 40 epochs of 128x128 crops on one thread, then the scores on the whole validation split and on its fluorescence
# images (StarDist's kind of DSB2018 subset).
# Usage: bash tools/dsb2018/train.sh [OUT] [extra train flags]   (the data in ../shared/datasets/dsb2018)
set -euo pipefail
cd "$(dirname "$0")/../.."
SEGMENT=${SEGMENT:-"dotnet src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll"}
DATA=${DATA:-../shared/datasets/dsb2018/train}
OUT=${1:-runs/dsb2018}
shift || true
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
$SEGMENT train --data "$DATA" --task instance --crop 128x128 --batch-size 8 --base-channels 16 --norm group \
    --epochs 40 --eval-every 2 --threads 1 --in-channels 3 --out "$OUT" "$@"
$SEGMENT eval --checkpoint "$OUT/best.ckpt" --threads 1
FLUO=$(mktemp -d)
trap 'rm -rf "$FLUO"' EXIT
/usr/bin/python3 tools/dsb2018/fluorescence_val.py "$DATA" "$FLUO"
$SEGMENT eval --checkpoint "$OUT/best.ckpt" --data "$FLUO" --threads 1
