#!/bin/bash
# Side by side on one input: our instance post-processing (segment bench instances: softmax, seeds, watershed,
# small objects, numbering; src/Shared/InstanceDecoder.cs) and the same steps in scikit-image
# (tools/bench/skimage_instances.py), each on one thread, then how far the two sets of objects agree.
# Usage: bash tools/bench/instances.sh [ROUNDS]   (needs Debian's python3-skimage under /usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
SEGMENT=${SEGMENT:-"dotnet src/Segmentation.Cli/bin/Release/net10.0/linux-x64/segment.dll"}
ROUNDS=${1:-30}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
ours=$($SEGMENT bench instances --out "$DIR" --rounds "$ROUNDS" --json 2>/dev/null | tail -1)
theirs=$(/usr/bin/python3 tools/bench/skimage_instances.py "$DIR" --rounds "$ROUNDS")
ours2=$($SEGMENT bench instances --rounds "$ROUNDS" --json 2>/dev/null | tail -1) # again, after scikit-image
mkdir -p "$DIR/ours" "$DIR/skimage"
cp "$DIR/ours.png" "$DIR/ours/scene.png"; cp "$DIR/skimage.png" "$DIR/skimage/scene.png"
agree=$($SEGMENT score --task instance --pred "$DIR/ours" --gt "$DIR/skimage" --json 2>/dev/null | tail -1)
/usr/bin/python3 - "$ours" "$ours2" "$theirs" "$agree" <<'PY'
import json, sys
ours, ours2, theirs, agree = (json.loads(a) for a in sys.argv[1:])
mine = min(ours["medianMs"], ours2["medianMs"])
print(f"512x512, {ours['objects']} objects: ours {ours['medianMs']:.2f} / {ours2['medianMs']:.2f} ms (median of "
      f"{ours['rounds']} rounds, run before and after), scikit-image {theirs['medianMs']:.2f} ms "
      f"({theirs['objects']} objects): scikit-image / ours = {theirs['medianMs'] / mine:.2f}x")
print(f"agreement (scikit-image's objects as the truth for ours): AP50 {agree['ap50']:.4f}, AP {agree['ap']:.4f}")
PY
