#!/bin/bash
# CamVid (../shared/datasets/camvid, train -> val, 11 classes, void ignored) at one CPU budget for each encoder:
# one core (taskset -c 1, one libtorch thread), bf16, 192x256, 20 minutes; each model gets the epochs its measured
# step time fits in that budget, so that its learning-rate schedule completes. Runs one after the other.
#   bash tools/camvid_encoders.sh plain r18 r34 mlnet b0   # from the repository root; logs and runs in /tmp/camvid
# NAME:EPOCHS sets another epoch count (measure the step first, on one core: segment bench train ... --no-bare), for a
# CPU slower or faster than the one the defaults were measured on: bash tools/camvid_encoders.sh b0:14 r18:7
set -u
cd "$(dirname "$0")/.."
SEGMENT=${SEGMENT:-src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll}
D=../shared/datasets/camvid
OUT=${OUT:-/tmp/camvid}
mkdir -p "$OUT"
COMMON="--data $D --mask index --classes 11 --ignore-index 11 --palette $D/classes.csv --size 192x256 --batch-size 8 --class-weights median-frequency --precision bf16 --eval-every 2 --time-limit 20m --workers 1 --no-tensorboard"
run() { name=$1; shift; echo "== $name $(date +%T)"; /usr/bin/time -v env OMP_NUM_THREADS=1 taskset -c 1 dotnet "$SEGMENT" train $COMMON --out "$OUT/$name" --overwrite "$@" > "$OUT/$name.log" 2>&1; echo "rc $? $(date +%T)"; }
for spec in "$@"; do
  name=${spec%%:*}; epochs=${spec#*:}; [ "$epochs" = "$spec" ] && epochs=
  case $name in
    plain) run plain --encoder unet --base-channels 32 --epochs ${epochs:-10} ;;
    r18) run r18 --encoder resnet18 --epochs ${epochs:-20} ;;
    r34) run r34 --encoder resnet34 --epochs ${epochs:-14} ;;
    mlnet) run mlnet --encoder mlnet-resnet18 --encoder-weights builtin --epochs ${epochs:-18} ;;
    # SegFormer-B0 from scratch: AdamW 6e-4 (the paper's head rate, for every layer when none is pretrained),
    # weight decay 0.01, as the segformer-scratch recipe, with the poly power (0.9) the README's run had
    b0) run b0 --arch segformer --encoder mit-b0 --lr 6e-4 --weight-decay 0.01 --poly-power 0.9 --epochs ${epochs:-14} ;;
    *) echo "unknown run $spec (plain, r18, r34, mlnet, b0)"; exit 2 ;;
  esac
done
