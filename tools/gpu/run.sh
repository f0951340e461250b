#!/usr/bin/env bash
# The GPU check (docs/gpu.md). Runs on a GPU machine that has PyTorch (with its CUDA libraries) but no .NET SDK and no
# network, from the repository root, with .gpu/bundle.tar.xz made by tools/gpu/bundle.sh. In one script, under 8 minutes:
#   1. ldd -r of TorchSharp 0.107.0's shim against the machine's libtorch; if symbols are missing, the shim is
#      rebuilt there from TorchSharp's src/Native (in the bundle) against that libtorch, and checked again;
#   2. segment doctor on CUDA in fp32, bf16 and fp16;
#   3. the canonical U-Net (batch 16, 256x256) in fp32, bf16 and fp16: `segment bench train` and the same model in
#      PyTorch eager (tools/gpu/torch_unet.py), one after the other in each precision: images/s and device memory;
#   4. the CUDA tests (Segmentation.Tests.Cuda) with the xUnit console runner;
#   5. the same model's CPU step on this machine's cores, ours beside PyTorch's (fp32, bf16);
#   6. the whole test suite on this machine's libtorch (CPU), if time is left.
#   3a-3e. what --precision auto picks; the fused AdamW step against the per-parameter one, in the trainer and alone;
#   NCCL at world size 1; 3f. what channels_last is worth, in PyTorch; 3g. Mask2Former (Swin-T): our step by part
#   beside PyTorch's, from the references of transformers' modules (MASK2FORMER=0 leaves it out);
# Steps 2, 3b, 5 and 6 can be left out with DOCTOR=0, BARE=0, CPU=0, SUITE=0 (3a, 3c, 3d, 3f with AUTO=0, FUSED=0,
# NCCL=0, CHANNELS_LAST=0); PRECISIONS="fp32 bf16" limits step 3; DIAG=1 adds a .NET GC experiment.
# Everything goes to $OUT (default /tmp/gpu-out): gpu.log, results.jsonl, ldd.txt, and the rebuilt shim if any.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu.log") 2>&1
start=$(date +%s)
say() { echo; echo "== [$(( $(date +%s) - start )) s] $*"; }
left() { echo $(( ${BUDGET:-470} - ($(date +%s) - start) )); }
root=$(pwd)
B=/tmp/segmentation-gpu
rm -rf "$B"; mkdir -p "$B"
tar -xJf .gpu/bundle.tar.xz -C "$B" || { echo "no bundle: run tools/gpu/bundle.sh first"; exit 2; }
PY=${PYTHON:-python3}
TORCH=$($PY -c 'import torch, os; print(os.path.dirname(torch.__file__))')
NV=$($PY -c 'import glob, os, site; print(":".join(sorted({d for s in site.getsitepackages() for d in glob.glob(os.path.join(s, "nvidia", "*", "lib")) + glob.glob(os.path.join(s, "nvidia", "*", "*", "lib"))})))')
export LD_LIBRARY_PATH="$TORCH/lib:$NV${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DOTNET_ROOT="$B/dotnet" DOTNET_ROLL_FORWARD=Major DOTNET_CLI_TELEMETRY_OPTOUT=1 HOME="$B/home" PATH="$B/dotnet:$PATH"
mkdir -p "$HOME"
DOTNET="$B/dotnet/dotnet"
SEG="$DOTNET $B/cli/segment.dll"

say "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c 'import torch; print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version(), "| cxx11 abi", torch.compiled_with_cxx11_abi(), "|", torch.cuda.get_device_name())'
echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
cat "$B/torchsharp/COMMIT"

say "1. ldd -r of TorchSharp 0.107.0's libLibTorchSharp.so (built against libtorch 2.10) against this libtorch"
SHIM="$B/cli/libLibTorchSharp.so"
ldd -r "$SHIM" > "$OUT/ldd.txt" 2>&1
missing=$(grep -c "undefined symbol" "$OUT/ldd.txt")
grep "not found" "$OUT/ldd.txt"
echo "undefined symbols: $missing"
grep "undefined symbol" "$OUT/ldd.txt" | sed 's/^\s*undefined symbol: \([^ ]*\).*/\1/' | head -12 | c++filt
if [ "$missing" -gt 0 ]; then
  say "1b. rebuilding the shim from TorchSharp's src/Native against this libtorch"
  src="$B/torchsharp/src/Native/LibTorchSharp"; obj="$B/shim"; mkdir -p "$obj"
  abi=$($PY -c 'import torch; print(int(torch.compiled_with_cxx11_abi()))')
  flags="-O2 -std=c++17 -fPIC -fvisibility=hidden -D_GLIBCXX_USE_CXX11_ABI=$abi -D__LINUX__ -D_NO_ASYNCRTIMP -D_NO_PPLXIMP -w -I$TORCH/include -I$TORCH/include/torch/csrc/api/include"
  ls "$src"/*.cpp | xargs -P "$(nproc)" -I{} sh -c "g++ $flags -c {} -o $obj/\$(basename {}).o 2> $obj/\$(basename {}).err || { echo FAILED {}; head -20 $obj/\$(basename {}).err; }"
  gcc -O2 -fPIC -msse4.2 -c "$src/crc32c.c" -o "$obj/crc32c.o"
  if g++ -shared -o "$obj/libLibTorchSharp.so" "$obj"/*.o -L"$TORCH/lib" -ltorch -ltorch_cpu -lc10 -Wl,-rpath,'$ORIGIN' -Wl,-Bsymbolic -Wl,-Bsymbolic-functions; then
    SHIM="$obj/libLibTorchSharp.so"
    cp "$SHIM" "$OUT/libLibTorchSharp.so"
    echo "rebuilt: $(ldd -r "$SHIM" 2>&1 | grep -c 'undefined symbol') undefined symbols left"
  else
    echo "the shim did not link; the .NET steps below will fail"
  fi
fi
export SEGMENTATION_LIBTORCHSHARP="$SHIM"

say "2. segment doctor on CUDA"
if [ "${DOCTOR:-1}" = 1 ]; then for p in fp32 bf16 fp16; do timeout 90 $SEG doctor --device cuda --precision $p | tail -4; done; fi

say "3. canonical U-Net, batch 16, 256x256, on the GPU: ours and PyTorch eager, in turn"
for p in ${PRECISIONS:-fp32 bf16 fp16}; do
  timeout 120 $SEG bench train --device cuda --batch-size 16 --size 256x256 --steps 20 --warmup 5 --no-bare --precision $p --json 2> "$OUT/bench-$p.err" | tail -1 | sed "s/^/{\"who\":\"segmentation\",\"precision\":\"$p\",\"r\":/; s/$/}/" | tee -a "$OUT/results.jsonl"
  tail -3 "$OUT/bench-$p.err"
  timeout 120 $PY "$root/tools/gpu/torch_unet.py" --device cuda --precision $p --batch-size 16 --size 256 --steps 20 --warmup 5 | sed "s/^/{\"who\":\"pytorch\",\"precision\":\"$p\",\"r\":/; s/$/}/" | tee -a "$OUT/results.jsonl"
done

say "3a. what --precision auto picks on this GPU"
if [ "${AUTO:-1}" = 1 ]; then timeout 90 $SEG doctor --device cuda --batch-size 16 --size 256x256 --base-channels 64 | grep -E "^precision|verdict"; fi

say "3c. the fused AdamW step beside TorchSharp's per-parameter AdamW (fp32, fp16: its loss scaling too), alternating step by step"
if [ "${FUSED:-1}" = 1 ]; then
  for p in fp32 fp16; do
    timeout 150 $SEG bench train --device cuda --batch-size 16 --size 256x256 --steps 20 --warmup 5 --no-bare --precision $p --compare-per-parameter --json 2> "$OUT/fused-$p.err" | tail -1 | sed "s/^/{\"who\":\"fused+per-parameter\",\"precision\":\"$p\",\"r\":/; s/$/}/" >> "$OUT/results.jsonl"
    tail -3 "$OUT/fused-$p.err"
  done
fi

say "3d. NCCL at world size 1: the trainer with its gradients all-reduced by NCCL beside the plain trainer, alternating step by step (bf16)"
if [ "${NCCL:-1}" = 1 ]; then
  timeout 150 $SEG bench train --device cuda --batch-size 16 --size 256x256 --steps 40 --warmup 5 --no-bare --precision bf16 --dist-backend nccl --json 2> "$OUT/nccl.err" | tail -1 | sed "s/^/{\"who\":\"nccl-x1\",\"precision\":\"bf16\",\"r\":/; s/$/}/" >> "$OUT/results.jsonl"
  grep -iE "nccl|median|error" "$OUT/nccl.err" | tail -5
fi

say "3e. the AdamW step alone on the canonical U-Net's parameters: per-parameter against fused"
if [ "${FUSED:-1}" = 1 ]; then timeout 90 $SEG bench optimizer --device cuda --rounds 30 2>&1 | tail -3; fi

say "3f. what channels_last would be worth on this GPU, in PyTorch (TorchSharp 0.107 has no memory_format operation)"
if [ "${CHANNELS_LAST:-1}" = 1 ]; then
  for p in fp32 bf16; do timeout 90 $PY "$root/tools/bench/channels_last.py" $p 8 0 cuda; done
fi

say "3b. where our time goes: the trainer's step beside a bare TorchSharp loop on the same model (bf16, fp16; the bare loop has no loss scaling and keeps its batch on the GPU)"
for p in $([ "${BARE:-1}" = 1 ] && echo bf16 fp16); do
  timeout 120 $SEG bench train --device cuda --batch-size 16 --size 256x256 --steps 20 --warmup 5 --precision $p --json 2> "$OUT/bare-$p.err" | tail -1 | sed "s/^/{\"who\":\"segmentation+bare\",\"precision\":\"$p\",\"r\":/; s/$/}/" >> "$OUT/results.jsonl"
  tail -2 "$OUT/bare-$p.err"
done
if [ "${DIAG:-0}" = 1 ]; then
  echo "-- bf16 with a 512 MiB gen0 budget (fewer .NET collections)"
  DOTNET_GCgen0size=0x20000000 timeout 120 $SEG bench train --device cuda --batch-size 16 --size 256x256 --steps 20 --warmup 5 --precision bf16 --no-bare 2>&1 | tail -1
fi

say "3g. Mask2Former on Swin-T (256x256, batch 2, fp32): our step by part beside PyTorch's forward + backward + AdamW of the same model (the references of transformers' modules, a stand-in loss: set it beside our step less its loss)"
if [ "${MASK2FORMER:-1}" = 1 ] && [ "$(left)" -gt 200 ]; then
  timeout 150 $SEG bench train --device cuda --arch mask2former --encoder swin-tiny --classes 4 --batch-size 2 --size 256x256 --steps 10 --warmup 3 --no-bare --profile --json 2> "$OUT/mask2former.err" | tail -1 | sed "s/^/{\"who\":\"segmentation-mask2former\",\"precision\":\"fp32\",\"r\":/; s/$/}/" | tee -a "$OUT/results.jsonl"
  grep -A12 "^profile" "$OUT/mask2former.err" || true
  timeout 150 $PY "$root/tools/gpu/torch_mask2former.py" --device cuda --batch-size 2 --size 256 --steps 10 --warmup 3 | sed "s/^/{\"who\":\"pytorch-mask2former\",\"precision\":\"fp32\",\"r\":/; s/$/}/" | tee -a "$OUT/results.jsonl"
else echo "skipped: $(left) s left"; fi

say "4. CUDA tests"
timeout 240 $DOTNET "$B/xunit/xunit.console.dll" "$B/tests/Segmentation.Tests.dll" -class Segmentation.Tests.Cuda.CudaTests -nocolor 2>&1 | grep -v '^\s*at ' | tail -40

say "5. the same model on this machine's CPU (batch 2, 256x256): ours and PyTorch, in turn"
if [ "${CPU:-1}" = 1 ] && [ "$(left)" -gt 150 ]; then
  for p in fp32 bf16; do
    timeout 90 $SEG bench train --device cpu --batch-size 2 --size 256x256 --steps 5 --warmup 1 --no-bare --precision $p --json 2> /dev/null | tail -1 | sed "s/^/{\"who\":\"segmentation-cpu\",\"precision\":\"$p\",\"r\":/; s/$/}/" | tee -a "$OUT/results.jsonl"
    timeout 90 $PY "$root/tools/gpu/torch_unet.py" --device cpu --precision $p --batch-size 2 --size 256 --steps 5 --warmup 1 | sed "s/^/{\"who\":\"pytorch-cpu\",\"precision\":\"$p\",\"r\":/; s/$/}/" | tee -a "$OUT/results.jsonl"
  done
else echo "skipped: $(left) s left"; fi

say "summary"
$PY - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def get(who, p):
    return next((r["r"] for r in rows if r["who"] == who and r["precision"] == p), None)
for dev, ours, theirs in (("cuda", "segmentation", "pytorch"), ("cpu", "segmentation-cpu", "pytorch-cpu")):
    for p in ("fp32", "bf16", "fp16"):
        a, b = get(ours, p), get(theirs, p)
        if not a and not b: continue
        fa = f"{a['imagesPerSecond']:8.1f} img/s, {a.get('deviceMemoryMiB') or 0:7.0f} MiB" if a else "   failed"
        fb = f"{b['imagesPerSecond']:8.1f} img/s, {b.get('deviceMemoryMiB') or 0:7.0f} MiB (max allocated {b.get('maxAllocatedMiB') or 0:.0f})" if b else "   failed"
        ratio = f"ours/pytorch = {a['imagesPerSecond'] / b['imagesPerSecond']:.3f}" if a and b else ""
        print(f"{dev:4} {p}: segmentation {fa} | pytorch {fb} | {ratio}")
PY

say "6. the whole test suite on this machine's libtorch (CPU)"
if [ "${SUITE:-1}" = 1 ] && [ "$(left)" -gt 100 ]; then
  timeout $(( $(left) - 10 )) $DOTNET "$B/xunit/xunit.console.dll" "$B/tests/Segmentation.Tests.dll" -nocolor -notrait "none=none" > "$OUT/tests-all.log" 2>&1
  grep -E "\[FAIL\]|TEST EXECUTION SUMMARY|Total:" "$OUT/tests-all.log" | head -20
else echo "skipped: $(left) s left"; fi
say "done"
