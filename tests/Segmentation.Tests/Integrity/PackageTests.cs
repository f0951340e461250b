using System.Diagnostics;
using System.IO.Compression;

namespace Segmentation.Tests.Integrity;

/// <summary>The library packages pack, with their readme and assembly: a user can make the package a README names.</summary>
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
    public async Task A_library_package_packs_with_its_readme_and_assembly(string project)
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
        Assert.Contains($"lib/net10.0/{project}.dll", names);
    }
}
