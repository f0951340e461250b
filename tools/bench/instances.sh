#!/bin/bash
# Side by side on one input: our instance post-processing (segment bench instances: softmax, seeds, watershed,
# small objects, numbering; src/Shared/InstanceDecoder.cs) and the same steps in scikit-image
# (tools/bench/skimage_instances.py), each on one thread, in alternating pairs (each the median of ROUNDS rounds);
# the ratio reported is the median of the pairs' ratios, with their range. Then how far the two sets of objects agree.
# Usage: bash tools/bench/instances.sh [PAIRS] [ROUNDS]   (needs Debian's python3-skimage under /usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
SEGMENT=${SEGMENT:-"dotnet src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll"}
PAIRS=${1:-7}
ROUNDS=${2:-20}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
$SEGMENT bench instances --out "$DIR" --rounds 1 --json > /dev/null 2>&1 # the input
: > "$DIR/pairs.jsonl"
for _ in $(seq "$PAIRS"); do
    ours=$($SEGMENT bench instances --rounds "$ROUNDS" --json 2>/dev/null | tail -1)
    theirs=$(/usr/bin/python3 tools/bench/skimage_instances.py "$DIR" --rounds "$ROUNDS")
    echo "{\"ours\": $ours, \"skimage\": $theirs}" >> "$DIR/pairs.jsonl"
done
mkdir -p "$DIR/ours" "$DIR/skimage"
cp "$DIR/ours.png" "$DIR/ours/scene.png"; cp "$DIR/skimage.png" "$DIR/skimage/scene.png"
agree=$($SEGMENT score --task instance --pred "$DIR/ours" --gt "$DIR/skimage" --json 2>/dev/null | tail -1)
/usr/bin/python3 - "$DIR/pairs.jsonl" "$agree" <<'PY'
import json, statistics, sys
pairs = [json.loads(line) for line in open(sys.argv[1])]
agree = json.loads(sys.argv[2])
ours = [p["ours"]["medianMs"] for p in pairs]
theirs = [p["skimage"]["medianMs"] for p in pairs]
ratios = sorted(t / o for o, t in zip(ours, theirs))
print(f"512x512, {pairs[0]['ours']['objects']} objects, {len(pairs)} alternating pairs of {pairs[0]['ours']['rounds']}"
      f" rounds: ours {statistics.median(ours):.2f} ms, scikit-image {statistics.median(theirs):.2f} ms (medians);"
      f" scikit-image / ours = {statistics.median(ratios):.2f}x (pairs {ratios[0]:.2f}x to {ratios[-1]:.2f}x)")
print(f"agreement (scikit-image's objects as the truth for ours): AP50 {agree['ap50']:.4f}, AP {agree['ap']:.4f}")
PY
