#!/usr/bin/env bash
# The loader side by side (docs/benchmarks.md): `segment bench loader` and PyTorch's DataLoader with PIL
# (tools/bench/torch_loader.py) doing the same work (decode image and mask, random 256x256 crop, random flip, CHW,
# collate batches of 8, 2 workers, EPOCHS epochs, 6 unless given), alternating PAIRS times; images/s after the
# first epoch, each pair's ratio and their median. Needs Debian's python3-torch and python3-torchvision under /usr/bin/python3.
#   PAIRS=3 DATA=../shared/datasets/camvid/train bash tools/bench/loader.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PAIRS=${PAIRS:-3}; DATA=${DATA:-../shared/datasets/camvid/train}; EPOCHS=${EPOCHS:-6}
SEG=${SEG:-"dotnet src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll"}
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; flags: $(grep -m1 '^flags' /proc/cpuinfo | grep -o 'avx2\|avx512f\|avx512_bf16\|amx_bf16' | sort -u | xargs)"
ratios=()
for i in $(seq 1 "$PAIRS"); do
  ours=$($SEG bench loader --data "$DATA" --workers 2 --batch-size 8 --crop 256x256 --epochs "$EPOCHS" --json 2>/dev/null | tail -1 | /usr/bin/python3 -c 'import json,sys; print(round(json.load(sys.stdin)["imagesPerSecond"], 1))')
  theirs=$(/usr/bin/python3 tools/bench/torch_loader.py --data "$DATA" --workers 2 --batch-size 8 --crop 256 --epochs "$EPOCHS" | /usr/bin/python3 -c 'import json,sys; print(round(json.load(sys.stdin)["imagesPerSecond"], 1))')
  r=$(/usr/bin/python3 -c "print(f'{$ours / $theirs:.3f}')")
  ratios+=("$r")
  echo "pair $i: segment $ours images/s | pytorch DataLoader $theirs images/s | ratio $r"
done
/usr/bin/python3 -c "import statistics, sys; print('median ratio, segment / pytorch:', statistics.median(map(float, sys.argv[1:])))" "${ratios[@]}"
