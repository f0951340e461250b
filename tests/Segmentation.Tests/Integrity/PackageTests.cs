using System.Diagnostics;
using System.IO.Compression;

namespace Segmentation.Tests.Integrity;

/// <summary>Every package packs, with its readme and contents: a user can make the packages the README names.</summary>
public class PackageTests
{
    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(Path.GetDirectoryName(typeof(PackageTests).Assembly.Location)!);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Segmentation.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("The tests run outside the repository.");
    }

    [Theory]
    [InlineData("Segmentation")]
    [InlineData("Segmentation.Onnx")] // NU5039 (no README.md) stopped it before
    [InlineData("Segmentation.Cli")] // the segment tool
    public async Task Each_package_packs_with_its_readme_and_contents(string project)
    {
        using var d = new TempDir();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "pack", Path.Combine(RepoRoot(), "src", project), "-c", "Release", "--no-build", "-o", d.Path, "-nologo" })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = await p.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await p.WaitForExitAsync(timeout.Token);
        Assert.True(p.ExitCode == 0, await output + error);
        var package = Assert.Single(Directory.GetFiles(d.Path, $"{project}.*.nupkg"));
        using var zip = ZipFile.OpenRead(package);
        var names = zip.Entries.Select(e => e.FullName).ToList();
        Assert.Contains("README.md", names);
        if (project == "Segmentation.Cli")
        {
            Assert.Contains("tools/net10.0/linux-x64/segment.dll", names);
            Assert.Contains("tools/net10.0/linux-x64/libtorch_cpu.so", names);
            Assert.DoesNotContain("tools/net10.0/linux-x64/libtorch_python.so", names); // never loaded: left out
        }
        else Assert.Contains($"lib/net10.0/{project}.dll", names);
    }

    /// <summary>
    /// tools/package/smoke.sh: the packages packed, a console app made with the README's "Use it from your app"
    /// references trains one epoch, predicts and exports ONNX, and an app with Segmentation.Onnx alone runs the export.
    /// </summary>
    [Fact]
    public async Task The_readmes_install_path_works_from_the_packed_packages()
    {
        using var d = new TempDir();
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(RepoRoot(), "tools", "package", "smoke.sh"));
        psi.Environment["OUT"] = d["smoke"];
        psi.Environment["NO_BUILD"] = "1";
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = await p.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(6));
        await p.WaitForExitAsync(timeout.Token);
        var text = await output + error;
        Assert.True(p.ExitCode == 0, text);
        Assert.Contains("trained 1 epoch(s)", text);
        Assert.Contains("onnx: 1 image(s), 4 classes", text);
        Assert.Contains("package smoke: OK", text);
        Assert.True(File.Exists(d["smoke/masks/input.png"]));
    }
}
