#!/bin/bash
# The soak of docs/reliability.md (not CI): several trainings at once on one machine, each on one libtorch thread,
# each for many epochs, round after round; any run that does not exit 0 fails the soak and keeps its folder and log.
#   1. instance: 60 DSB2018 images, the issue's recipe (128x128 crops, batch 8, base 16, group norm, eval every 2)
#   2. instance: the built-in touching objects
#   3. semantic: the main job (builtin:shapes)
#   4. semantic: SegFormer MiT-B0 on builtin:shapes
#   5. semantic: two processes (--nproc 2, Open MPI) on builtin:shapes
#   6. semantic: ISBI 2012 membranes, 256x256 crops
# Usage: bash tools/soak.sh [ROUNDS] [EPOCHS] [OUT]   (default 1 round of 30 epochs, /tmp/soak; data in ../shared)
set -uo pipefail
cd "$(dirname "$0")/.."
SEGMENT=${SEGMENT:-"dotnet src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll"}
ROUNDS=${1:-1}
EPOCHS=${2:-30}
OUT=${3:-/tmp/soak}
SHARED=${SHARED:-../shared/datasets}
mkdir -p "$OUT"
# A native crash (SIGSEGV) leaves .NET's crash report beside a dump: every thread's native and managed frames.
export DOTNET_DbgEnableMiniDump=1 DOTNET_DbgMiniDumpType=1 DOTNET_EnableCrashReport=1
export DOTNET_DbgMiniDumpName="$OUT/crash-%e-%p.dmp"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $ROUNDS round(s) of $EPOCHS epochs"

# 60 DSB2018 images as a folder of links (the issue's subset)
DSB60="$OUT/dsb60"
if [ -d "$SHARED/dsb2018/train" ] && [ ! -d "$DSB60" ]; then
  mkdir -p "$DSB60/images" "$DSB60/masks"
  for f in $(ls "$SHARED/dsb2018/train/images" | head -60); do
    ln -s "$(realpath "$SHARED/dsb2018/train/images/$f")" "$DSB60/images/$f"
    ln -s "$(realpath "$SHARED/dsb2018/train/masks/$f")" "$DSB60/masks/$f"
  done
fi

COMMON=(--epochs "$EPOCHS" --threads 1 --workers 1 --device cpu --overwrite)
runs=()
start_round() {
  local r=$1 dir="$OUT/round$1"
  mkdir -p "$dir"
  declare -gA cmds=()
  [ -d "$DSB60" ] && cmds[dsb-instance]="train --data $DSB60 --task instance --crop 128x128 --batch-size 8 \
    --base-channels 16 --norm group --eval-every 2"
  cmds[shapes-instance]="train --data builtin:shapes --task instance --base-channels 16"
  cmds[shapes-semantic]="train --data builtin:shapes"
  cmds[segformer]="train --data builtin:shapes --arch segformer --encoder mit-b0 --batch-size 8"
  cmds[nproc2]="train --data builtin:shapes --nproc 2 --batch-size 8"
  [ -d "$SHARED/isbi2012-membrane/train" ] && cmds[isbi]="train --data $SHARED/isbi2012-membrane/train \
    --mask binary --crop 256x256 --base-channels 16 --batch-size 4"
  for name in "${!cmds[@]}"; do
    # shellcheck disable=SC2086
    ( /usr/bin/time -f "%e s, peak RSS %M KiB" $SEGMENT ${cmds[$name]} "${COMMON[@]}" --out "$dir/$name" \
        > "$dir/$name.log" 2>&1; echo $? > "$dir/$name.rc" ) &
    runs+=("$dir/$name")
  done
}

clock=$(date +%s)
for r in $(seq 1 "$ROUNDS"); do
  start_round "$r"
  wait
done
seconds=$(( $(date +%s) - clock ))

failed=0; epochs=0
printf "%-40s %5s %7s  %s\n" run exit epochs "time"
for run in "${runs[@]}"; do
  rc=$(cat "$run.rc" 2>/dev/null || echo "?")
  n=$( [ -f "$run/metrics.jsonl" ] && wc -l < "$run/metrics.jsonl" || echo 0)
  epochs=$((epochs + n))
  printf "%-40s %5s %7s  %s\n" "${run#"$OUT"/}" "$rc" "$n" "$(tail -1 "$run.log")"
  if [ "$rc" != 0 ]; then failed=$((failed + 1)); grep -m3 "error" "$run.log"; fi
done
echo "soak: ${#runs[@]} runs, $epochs epochs, $(awk "BEGIN { printf \"%.2f\", $seconds / 3600 }") h, $failed failed"
[ "$failed" = 0 ]
