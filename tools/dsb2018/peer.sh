#!/bin/bash
# The same-budget peer of docs/plan.md: the StarDist paper's three-class U-Net in PyTorch (Debian's 1.13) trained on
# our DSB2018 split for the same wall-clock budget as `segment train --time-limit`, then scored by `segment score`.
# Usage: bash tools/dsb2018/peer.sh [SECONDS] [OUT]   (default 1200 s, /tmp/dsb-peer; the data in ../shared)
# Needs: apt-get install -y python3-torch python3-skimage python3-scipy
set -euo pipefail
cd "$(dirname "$0")/../.."
SEGMENT=${SEGMENT:-"dotnet src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll"}
DATA=${DATA:-../shared/datasets/dsb2018/train}
SECONDS_BUDGET=${1:-1200}
OUT=${2:-/tmp/dsb-peer}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
/usr/bin/python3 tools/dsb2018/peer_unet.py "$DATA" "$OUT" "$SECONDS_BUDGET" "$(nproc)"
$SEGMENT score --task instance --pred "$OUT/pred" --gt "$OUT/truth"
