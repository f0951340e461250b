#!/usr/bin/env bash
# The benchmark table of docs/benchmarks.md ("This build, one script"), every row a side-by-side ratio measured in
# this one run, the machine named first. Run it with nothing else running (the machines are shared and noisy):
#   bash tools/bench/table.sh                      # about 25 minutes on a 2-core CPU
#   STEPS=30 PAIRS=5 bash tools/bench/table.sh     # more pairs, tighter intervals
# Rows: the trainer's step against the same step written straight on TorchSharp (canonical U-Net, the main job's
# U-Net, ResNet-34 U-Net; on an AVX-512 CPU also with oneDNN held to AVX2), bf16 against fp32, the fused AdamW step against TorchSharp's per-parameter one, our
# canonical step against PyTorch's (Debian's 1.13, tools/gpu/torch_unet.py on the CPU), the data loader against
# PyTorch's DataLoader (tools/bench/loader.sh) and the instance post-processing against scikit-image's
# (tools/bench/instances.sh). The PyTorch and scikit-image rows need Debian's python3-torch, python3-torchvision and
# python3-skimage under /usr/bin/python3, and CamVid under ../shared for the loader; rows whose inputs are missing
# say so and are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
SEG=${SEG:-"dotnet src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll"}
STEPS=${STEPS:-20}; PAIRS=${PAIRS:-3}
PY=/usr/bin/python3
CAMVID=${CAMVID:-../shared/datasets/camvid/train}
export SEG
flags=$(grep -m1 '^flags' /proc/cpuinfo | grep -o -w 'avx2\|avx512f\|avx512_bf16\|amx_bf16' | sort -u | xargs)
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, flags: $flags;" \
  "load at start $(cut -d' ' -f1 /proc/loadavg); $(date -u +%Y-%m-%dT%H:%MZ); commit $(git rev-parse --short HEAD)"
echo
echo "| what | ratio (95 % interval, pairs) | command |"
echo "|---|---|---|"

# One contender of `segment bench train --json` against the first: "ratio (low-high, n pairs)".
ratio_of() { $PY -c '
import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
c = [x for x in r["ratiosToFirst"] if x["name"] == sys.argv[1]][0]
first = r["contenders"][0]["stepSeconds"]
other = [x for x in r["contenders"] if x["name"] == sys.argv[1]][0]["stepSeconds"]
ratio, low, high, pairs = c["ratio"], c["low"], c["high"], c["pairs"]
print(f"**{ratio:.3f}** ({low:.3f}-{high:.3f}, {pairs} pairs; medians {first:.3f} s and {other:.3f} s)")
' "$1"; }

row_train() { # what, contender name, args...
  local what=$1 name=$2; shift 2
  local out; out=$(env ${ROW_ENV:-} $SEG bench train "$@" --json 2>/dev/null)
  [ -n "${RAW:-}" ] && echo "$out" | tail -1 >> "$RAW"
  echo "| $what | $(echo "$out" | ratio_of "$name") | \`${ROW_ENV:+$ROW_ENV }segment bench train $*\` |"
}

row_train "canonical U-Net (3->2, 64 base, depth 4, batch 2, 256x256), straight TorchSharp loop / trainer" \
  "bare fp32" --steps "$STEPS" --warmup 2
row_train "main job's U-Net (16 base, 4 classes, batch 8, 64x64), straight / trainer" "bare fp32" \
  --base-channels 16 --classes 4 --size 64x64 --batch-size 8 --steps $((STEPS * 3)) --warmup 5
row_train "ResNet-34 U-Net (smp's decoder, batch 2, 256x256), straight / trainer" "bare fp32" \
  --encoder resnet34 --steps "$STEPS" --warmup 3
if grep -qw avx512f /proc/cpuinfo; then
  # oneDNN held to AVX2: the kernels an AVX2-only CPU runs, on this one
  ROW_ENV=ONEDNN_MAX_CPU_ISA=AVX2 row_train \
    "canonical U-Net with oneDNN held to AVX2 (an AVX2 CPU's kernels), straight / trainer" "bare fp32" \
    --steps "$STEPS" --warmup 2
  ROW_ENV=ONEDNN_MAX_CPU_ISA=AVX2 row_train "main job's U-Net with oneDNN held to AVX2, straight / trainer" \
    "bare fp32" --base-channels 16 --classes 4 --size 64x64 --batch-size 8 --steps $((STEPS * 3)) --warmup 5
fi
row_train "canonical U-Net, bf16 step / fp32 step (below 1: bf16 faster)" "trainer bf16" \
  --precision fp32,bf16 --no-bare --steps $((STEPS / 2)) --warmup 2
row_train "canonical U-Net, trainer with TorchSharp's per-parameter AdamW / with the fused step" \
  "trainer fp32 per-parameter" --compare-per-parameter --no-bare --steps $((STEPS / 2)) --warmup 2

opt=$($SEG bench optimizer --rounds "$STEPS" 2>/dev/null | grep 'times as long' | sed -E \
  's/.*takes ([0-9.]+) \(95 % CI ([0-9.]+)-([0-9.]+), ([0-9]+) pairs\).*/**\1** (\2-\3, \4 pairs)/')
echo "| AdamW step alone, canonical U-Net's 31 M parameters: per-parameter / fused | $opt | \`segment bench optimizer --rounds $STEPS\` |"

if $PY -c 'import torch' 2>/dev/null; then
  ratios=()
  for i in $(seq 1 "$PAIRS"); do
    ours=$($SEG bench train --no-bare --steps 6 --warmup 1 --json 2>/dev/null | tail -1 | $PY -c \
      'import json,sys; print(json.load(sys.stdin)["stepSeconds"])')
    theirs=$($PY tools/gpu/torch_unet.py --device cpu --batch-size 2 --size 256 --steps 6 --warmup 1 | $PY -c \
      'import json,sys; print(json.load(sys.stdin)["stepSeconds"])')
    ratios+=("$($PY -c "print($ours / $theirs)")")
  done
  summary=$($PY -c '
import statistics, sys; r = sorted(map(float, sys.argv[1:]))
print(f"**{statistics.median(r):.3f}** (pairs {r[0]:.3f}-{r[-1]:.3f}, {len(r)} pairs)")' "${ratios[@]}")
  echo "| canonical U-Net step, ours / PyTorch $($PY -c 'import torch; print(torch.__version__.split("a")[0])') eager on the CPU (same model, fp32, AdamW, loss read back) | $summary | \`segment bench train --no-bare --steps 6 --warmup 1\` and \`tools/gpu/torch_unet.py --device cpu --batch-size 2 --size 256 --steps 6 --warmup 1\`, alternating |"
else
  echo "| ours / PyTorch on the CPU | skipped: no PyTorch under $PY | |"
fi

if [ -d "$CAMVID" ] && $PY -c 'import torchvision' 2>/dev/null; then
  out=$(PAIRS=$PAIRS DATA=$CAMVID bash tools/bench/loader.sh | tail -n +2)
  pairs=$(echo "$out" | grep -o 'ratio [0-9.]*' | cut -d' ' -f2 | xargs)
  med=$(echo "$out" | tail -1 | grep -o '[0-9.]*$')
  echo "| data loader, CamVid 480x360 PNGs (decode image + mask, random 256x256 crop, flip, batch 8, 2 workers) / PyTorch DataLoader with PIL: images/s, ours over theirs | **$med** (pairs: $pairs) | \`PAIRS=$PAIRS bash tools/bench/loader.sh\` |"
else
  echo "| data loader against PyTorch's | skipped: no CamVid at $CAMVID or no torchvision | |"
fi

if $PY -c 'import skimage' 2>/dev/null; then
  out=$(SEGMENT="$SEG" bash tools/bench/instances.sh "$PAIRS" 10 2>/dev/null | grep 'scikit-image / ours' | head -1)
  r=$(echo "$out" | sed -E 's/.*scikit-image \/ ours = ([0-9.]+)x \(pairs ([0-9.]+)x to ([0-9.]+)x\).*/**\1** (pairs \2-\3)/')
  echo "| instance post-processing, 512x512 (softmax, seeds, watershed, numbering), one thread: scikit-image's time / ours | $r | \`bash tools/bench/instances.sh $PAIRS 10\` |"
fi
