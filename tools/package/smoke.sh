#!/bin/bash
# The install path a newcomer follows, end to end: pack the packages, make a console app with the README's
# "Use it from your app" references (Segmentation + libtorch-cpu-linux-x64, RuntimeIdentifier linux-x64), train one
# epoch on generated data, predict, export ONNX, then run an ONNX-only app (Segmentation.Onnx alone) on the export.
#   bash tools/package/smoke.sh            # from the repository root; work in $OUT (default /tmp/segmentation-smoke)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
OUT=${OUT:-/tmp/segmentation-smoke}
rm -rf "$OUT"; mkdir -p "$OUT/feed"
# A version of its own each run: NuGet caches packages by id and version, so a fixed one would restore a stale copy
VERSION=$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props | head -1)-smoke.$(date +%s%N)
CACHE=${NUGET_PACKAGES:-$HOME/.nuget/packages}
trap 'rm -rf "$CACHE/segmentation/$VERSION" "$CACHE/segmentation.onnx/$VERSION"' EXIT
# NO_BUILD=1 packs what is built already (the test that runs this script inside a test run)
PACK=(-c Release -o "$OUT/feed" -nologo -v q -p:PackageVersion="$VERSION" ${NO_BUILD:+--no-build})
dotnet pack src/Segmentation "${PACK[@]}"
dotnet pack src/Segmentation.Onnx "${PACK[@]}"
cat > "$OUT/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local" value="$OUT/feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
</configuration>
XML
app() { # NAME SOURCE PACKAGES...
  local name=$1 source=$2; shift 2
  mkdir -p "$OUT/$name"
  { echo '<Project Sdk="Microsoft.NET.Sdk">'
    echo '  <PropertyGroup><OutputType>Exe</OutputType><TargetFramework>net10.0</TargetFramework><Nullable>enable</Nullable>'
    echo '    <ImplicitUsings>enable</ImplicitUsings><RuntimeIdentifier>linux-x64</RuntimeIdentifier></PropertyGroup>'
    echo '  <ItemGroup>'
    for p in "$@"; do echo "    <PackageReference Include=\"${p%@*}\" Version=\"${p#*@}\" />"; done
    echo '  </ItemGroup>'
    echo '</Project>'; } > "$OUT/$name/$name.csproj"
  cp "$ROOT/tools/package/$source" "$OUT/$name/Program.cs"
  (cd "$OUT/$name" && dotnet build -c Release -nologo -v q --configfile "$OUT/nuget.config" > build.log 2>&1) \
    || { cat "$OUT/$name/build.log"; exit 1; }
}
app TrainApp TrainApp.cs "Segmentation@$VERSION" "libtorch-cpu-linux-x64@2.10.0"
app OnnxApp OnnxApp.cs "Segmentation.Onnx@$VERSION"
(cd "$OUT" && dotnet TrainApp/bin/Release/net10.0/linux-x64/TrainApp.dll "$OUT/run")
mkdir -p "$OUT/images" && cp "$OUT/run/input.png" "$OUT/images/"
dotnet "$OUT/OnnxApp/bin/Release/net10.0/linux-x64/OnnxApp.dll" "$OUT/run/model.onnx" "$OUT/images" "$OUT/masks"
echo "package smoke: OK (TrainApp $(du -sh "$OUT/TrainApp/bin/Release/net10.0/linux-x64" | cut -f1), OnnxApp $(du -sh "$OUT/OnnxApp/bin/Release/net10.0/linux-x64" | cut -f1))"
