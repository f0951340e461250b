#!/usr/bin/env bash
# Two builds of `segment` side by side on this machine, alternating A B A B so both see the same noise:
#   1. the training step of the main job's model (segment bench train, trainer only), ROUNDS pairs;
#   2. the canonical U-Net's step (64 base channels, 256x256, batch 2), CANONICAL pairs;
#   3. the main job itself once per build (mean IoU must agree to the last digit; seconds for reference).
# Prints each pair and the median ratio NEW/OLD, with the CPU named. Nothing else should run meanwhile.
# Usage: tools/compare_builds.sh OLD/segment.dll NEW/segment.dll [ROUNDS=7] [CANONICAL=3] [OUT=/tmp/compare-builds]
set -euo pipefail
old=$1 new=$2 rounds=${3:-7} canonical=${4:-3} out=${5:-/tmp/compare-builds}
mkdir -p "$out"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs); $(nproc) cores; flags:" \
  "$(grep -m1 -o -E 'avx512_bf16|amx_bf16|avx512f|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
step() { # dll args... -> median trainer step in seconds
  dotnet "$1" bench train "${@:2}" --no-bare --json 2>/dev/null | tail -1 \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["stepSeconds"])'
}
pairs() { # label rounds args...
  local label=$1 n=$2; shift 2
  for i in $(seq 1 "$n"); do
    a=$(step "$old" "$@"); b=$(step "$new" "$@")
    echo "$label pair $i: old $a s, new $b s, new/old $(python3 -c "print(round($b/$a, 3))")" | tee -a "$out/pairs.txt"
  done
}
: > "$out/pairs.txt"
pairs main-job-step "$rounds" --base-channels 16 --classes 4 --size 64x64 --batch-size 8 --steps 40 --warmup 5
pairs canonical-step "$canonical" --steps 6 --warmup 1
for label in main canonical; do
  python3 - "$out/pairs.txt" "$label" <<'PY'
import random, re, statistics, sys
r = [float(m.group(1)) for line in open(sys.argv[1]) if line.startswith(sys.argv[2])
     for m in [re.search(r"new/old ([0-9.]+)", line)] if m]
rng = random.Random(0)  # a bootstrap of the median ratio: how far the noise alone moves it
boot = sorted(statistics.median(rng.choices(r, k=len(r))) for _ in range(10000))
print(f"{sys.argv[2]}: median new/old {statistics.median(r):.3f} over {len(r)} pairs (from {min(r):.3f} to {max(r):.3f}), "
      f"95% bootstrap interval {boot[250]:.3f} to {boot[9749]:.3f}")
PY
done
for which in old new; do
  dll=$([ $which = old ] && echo "$old" || echo "$new")
  rm -rf "$out/job-$which"
  start=$(date +%s.%N)
  dotnet "$dll" train --out "$out/job-$which" --no-tensorboard --json > "$out/job-$which.log" 2>&1
  end=$(date +%s.%N)
  echo "main job, $which build: mean IoU $(python3 -c "import json; print(round(json.load(open('$out/job-$which/summary.json'))['meanIoU'], 4))")," \
    "$(python3 -c "print(round($end - $start, 1))") s for the command"
done
