#!/usr/bin/env bash
# Data-parallel training on the CPU, side by side (docs/distributed.md): the README's main job (the built-in data,
# global batch 8) in one process of N threads and in N processes of one thread each (segment train --nproc N, Open
# MPI), alternating whole runs PAIRS times. Prints each run's training images/s (median over epochs 2..end: the first
# epoch checks kernels) and best mean IoU, and the median of the paired ratios.
#   PAIRS=2 N=2 EXTRA="--sync-bn" bash tools/bench/distributed.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PAIRS=${PAIRS:-2}; N=${N:-2}; EXTRA=${EXTRA:-}
SEG=${SEG:-"dotnet src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll"}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=$(mktemp -d)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; flags: $(grep -m1 '^flags' /proc/cpuinfo | grep -o 'avx2\|avx512f\|avx512_bf16\|amx_bf16' | sort -u | xargs)"
summary() { # run folder -> "images/s mIoU seconds"
  /usr/bin/env python3 - "$1" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
s = json.load(open(sys.argv[1] + "/summary.json"))
ips = statistics.median(r["imagesPerSecond"] for r in rows[1:]) if len(rows) > 1 else rows[0]["imagesPerSecond"]
print(f"{ips:.1f} {s['meanIoU']:.4f} {s['seconds']:.1f}")
PY
}
ratios=()
for i in $(seq 1 "$PAIRS"); do
  $SEG train --threads "$N" --out "$OUT/one-$i" --no-tensorboard $EXTRA > "$OUT/one-$i.log" 2>&1
  read -r ips1 miou1 s1 < <(summary "$OUT/one-$i")
  $SEG train --nproc "$N" --out "$OUT/dp-$i" --no-tensorboard $EXTRA > "$OUT/dp-$i.log" 2>&1
  read -r ips2 miou2 s2 < <(summary "$OUT/dp-$i")
  r=$(python3 -c "print(f'{$ips1 / $ips2:.3f}')")
  ratios+=("$r")
  echo "pair $i: 1 process x $N threads: $ips1 img/s, mean IoU $miou1, $s1 s | $N processes x 1 thread: $ips2 img/s, mean IoU $miou2, $s2 s | step time ratio (processes / threads) $r"
done
python3 -c "import statistics, sys; print('median ratio of step times, processes / threads:', statistics.median(map(float, sys.argv[1:])))" "${ratios[@]}"
rm -rf "$OUT"
