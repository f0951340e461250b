#!/usr/bin/env bash
# Builds .gpu/bundle.tar.xz (git-ignored), everything tools/gpu/run.sh needs on a GPU machine that has no .NET SDK and
# no network: the .NET runtime, `segment` and the test assembly (framework-dependent, without libtorch: the machine's
# PyTorch provides it), the xUnit console runner, and TorchSharp's native shim source (to rebuild the shim there if
# the shipped one does not bind to that libtorch). Usage: tools/gpu/bundle.sh [TORCHSHARP_GIT_DIR]
# TORCHSHARP_GIT_DIR: a git directory of dotnet/TorchSharp at its 0.107.0 release notes commit (default: the mirror).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
torchsharp=${1:-/work/.mirror/dotnet+TorchSharp/repo}
out=$root/.gpu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/stage
mkdir -p "$stage" "$out"

# A copy of the working tree, so that this build's restore (TorchBackend=none) leaves the checkout's obj/ alone.
tar -C "$root" --exclude=./.git --exclude='*/bin' --exclude='*/obj' --exclude=./.gpu --exclude=./runs -cf - . | (mkdir -p "$work/src" && tar -C "$work/src" -xf -)
dotnet publish "$work/src/src/Segmentation.Cli" -c Release -p:TorchBackend=none -o "$stage/cli" -v:q -nologo
dotnet publish "$work/src/tests/Segmentation.Tests" -c Release -p:TorchBackend=none -o "$stage/tests" -v:q -nologo

# The .NET runtime the builds target (host, hostfxr, Microsoft.NETCore.App).
dotnet_root=$(dirname "$(readlink -f "$(command -v dotnet)")")
version=$(dotnet --list-runtimes | awk '$1 == "Microsoft.NETCore.App" { v = $2 } END { print v }')
mkdir -p "$stage/dotnet/shared/Microsoft.NETCore.App"
cp "$dotnet_root/dotnet" "$stage/dotnet/"
cp -r "$dotnet_root/host" "$stage/dotnet/"
cp -r "$dotnet_root/shared/Microsoft.NETCore.App/$version" "$stage/dotnet/shared/Microsoft.NETCore.App/"

# xUnit's console runner (runs the test assembly with no SDK); restored through a throw-away project.
mkdir -p "$work/runner"
cat > "$work/runner/runner.csproj" <<'PROJ'
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup><TargetFramework>net10.0</TargetFramework><ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally></PropertyGroup>
  <ItemGroup><PackageReference Include="xunit.runner.console" Version="2.4.1" /></ItemGroup>
</Project>
PROJ
dotnet restore "$work/runner/runner.csproj" -v:q --packages "$work/packages" >/dev/null
cp -r "$work/packages/xunit.runner.console/2.4.1/tools/netcoreapp2.0" "$stage/xunit"

# TorchSharp's native shim source (not committed here; built on the GPU machine only if needed).
mkdir -p "$stage/torchsharp"
git -C "$torchsharp" archive HEAD src/Native | tar -x -C "$stage/torchsharp"
git -C "$torchsharp" log -1 --format='%H %s' > "$stage/torchsharp/COMMIT"

rm -f "$stage"/cli/*.pdb "$stage"/tests/*.pdb
# The tests' output repeats most of the CLI's (ONNX Runtime, SkiaSharp and TorchSharp natives): hard-link the files
# that are identical, so that tar stores each once and the bundle stays under the device tool's 64 MiB carry limit.
for f in "$stage"/tests/*; do
  c="$stage/cli/$(basename "$f")"
  if [ -f "$f" ] && [ -f "$c" ] && cmp -s "$f" "$c"; then ln -f "$c" "$f"; fi
done
tar -C "$stage" -cJf "$out/bundle.tar.xz" .
ls -l "$out/bundle.tar.xz"
