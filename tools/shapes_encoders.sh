#!/bin/bash
# Every encoder on the built-in data (the main job: builtin:shapes, 480 train / 120 val, 64x64, 12 epochs) with
# `segment train`'s defaults for it, two runs at a time, each on one libtorch thread; then one table of validation
# mean IoU epoch by epoch, the first epoch at or above 0.9, and what each run's run.json recorded (recipe, batch,
# learning rate). docs/models.md has the figures.
#   bash tools/shapes_encoders.sh                   # unet r18 r34 r50 mlnet; logs and runs in /tmp/shapes-encoders
#   bash tools/shapes_encoders.sh fpn34 cnx cnxfpn  # the FPN on ResNet-34, ConvNeXt-T in a U-Net and in an FPN
#   bash tools/shapes_encoders.sh r18 -- --seed 1   # some of them, with more flags for every run
set -u
cd "$(dirname "$0")/.."
SEGMENT=${SEGMENT:-src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll}
OUT=${OUT:-/tmp/shapes-encoders}
mkdir -p "$OUT"
names=(); extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  names+=("$1"); shift
done
[ ${#names[@]} -eq 0 ] && names=(unet r18 r34 r50 mlnet)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
flags_of() {
  case $1 in
    unet) echo "--encoder unet" ;;
    r18) echo "--encoder resnet18" ;;
    r34) echo "--encoder resnet34" ;;
    r50) echo "--encoder resnet50" ;;
    mlnet) echo "--encoder mlnet-resnet18 --encoder-weights builtin" ;;
    fpn34) echo "--arch fpn --encoder resnet34" ;;
    cnx) echo "--encoder convnext-tiny" ;;
    cnxfpn) echo "--arch fpn --encoder convnext-tiny" ;;
    *) echo "unknown run $1 (unet, r18, r34, r50, mlnet, fpn34, cnx, cnxfpn)" >&2; exit 2 ;;
  esac
}
run() {
  local name=$1
  # shellcheck disable=SC2046
  dotnet "$SEGMENT" train $(flags_of "$name") --threads 1 --no-tensorboard --out "$OUT/$name" --overwrite \
    "${extra[@]}" > "$OUT/$name.log" 2>&1
  echo "$name: exit $?"
}
for ((i = 0; i < ${#names[@]}; i += 2)); do
  run "${names[i]}" &
  [ $((i + 1)) -lt ${#names[@]} ] && run "${names[i + 1]}" &
  wait
done
/usr/bin/python3 - "$OUT" "${names[@]}" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| encoder | recipe, batch, lr (run.json) | mean IoU after epochs 2 / 4 / 6 / 8 / 10 / 12 | first epoch >= 0.9 | best | seconds |")
print("|---|---|---|---|---|---|")
for name in sys.argv[2:]:
    folder = os.path.join(out, name)
    try:
        rows = [json.loads(l) for l in open(os.path.join(folder, "metrics.jsonl")) if l.strip()]
        trainer = json.load(open(os.path.join(folder, "run.json")))["Trainer"]
    except OSError as e:
        print(f"| {name} | missing: {e} | | | | |"); continue
    rows = [r for r in rows if r.get("meanIoU") is not None]
    iou = {r["epoch"]: r["meanIoU"] for r in rows}
    first = next((r["epoch"] for r in rows if r["meanIoU"] >= 0.9), None)
    seconds = sum(r.get("seconds", 0) for r in rows)
    at = " / ".join(f"{iou[e]:.3f}" if e in iou else "-" for e in (2, 4, 6, 8, 10, 12))
    print(f"| {name} | {trainer.get('Recipe')}, {trainer['BatchSize']}, {trainer['Optimizer']['LearningRate']:g} | {at} |"
          f" {first or 'never'} | {max(iou.values()):.4f} | {seconds:.0f} |")
PY
