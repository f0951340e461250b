using System.Diagnostics;
using Segmentation.Checkpoints;
using Segmentation.Cli;
using Segmentation.Data;
using Segmentation.Training;

namespace Segmentation.Tests.Cli;

/// <summary>Runs where Debian's chromium is installed (apt-get install chromium); skipped elsewhere, CI included.</summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    internal static string? Browser => new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser" }.FirstOrDefault(File.Exists);

    public ChromiumFactAttribute()
    {
        if (Browser is null) Skip = "no chromium here (apt-get install chromium to run it)";
    }
}

/// <summary>The run's pictures (ScottPlot, SkiaSharp) and the report page, read back as pixels and in a real browser.</summary>
public class PicturesTests
{
    private static ImageBuffer Decode(TempDir d, string name, byte[] png)
    {
        File.WriteAllBytes(d[name], png);
        return new ImageReader().ReadImage(d[name], 3);
    }

    private static int Count(ImageBuffer img, Rgb c)
    {
        int n = 0;
        for (int i = 0; i < img.Width * img.Height; i++)
            if (img.Pixels[i * 3] == c.R && img.Pixels[i * 3 + 1] == c.G && img.Pixels[i * 3 + 2] == c.B) n++;
        return n;
    }

    [Fact]
    public void Curves_draw_both_losses_and_the_mean_IoU_in_their_colours()
    {
        using var d = new TempDir();
        var history = Enumerable.Range(1, 12).Select(e => new EpochRecord { Epoch = e, TrainLoss = 2.0 / e, ValLoss = 2.2 / e, MeanIoU = 1 - 0.7 / e }).ToList();
        var img = Decode(d, "curves.png", Pictures.Curves(history));
        Assert.Equal((900, 450), (img.Width, img.Height));
        Assert.True(Count(img, new Rgb(0x1f, 0x77, 0xb4)) > 100, "train loss");
        Assert.True(Count(img, new Rgb(0xff, 0x7f, 0x0e)) > 100, "validation loss");
        Assert.True(Count(img, new Rgb(0x2c, 0xa0, 0x2c)) > 100, "mean IoU");
    }

    [Fact]
    public void The_errors_colour_is_one_no_class_has()
    {
        Assert.Equal(new Rgb(230, 30, 30), Segmentation.Training.Previews.WrongFor(new[] { new Rgb(0, 0, 0), new Rgb(0, 0, 255) }));
        var reds = new[] { new Rgb(0, 0, 0), new Rgb(220, 40, 30), new Rgb(250, 10, 250) }; // red and magenta are classes
        var wrong = Segmentation.Training.Previews.WrongFor(reds);
        Assert.DoesNotContain(reds, c => Math.Abs(c.R - wrong.R) + Math.Abs(c.G - wrong.G) + Math.Abs(c.B - wrong.B) < 60);
        var image = new ImageBuffer(2, 1, 3, new byte[6]);
        var panel = Segmentation.Training.Previews.Panel("a", image, new byte[] { 1, 1 }, new byte[] { 1, 2 }, reds);
        Assert.Contains(Enumerable.Range(0, panel.Width * panel.Height), i => panel.Rgb[i * 3] == wrong.R && panel.Rgb[i * 3 + 1] == wrong.G && panel.Rgb[i * 3 + 2] == wrong.B);
    }

    [Fact]
    public void A_panel_has_its_four_pictures_and_a_legend_in_the_class_colours()
    {
        using var d = new TempDir();
        var colors = new[] { new Rgb(0, 0, 0), new Rgb(200, 40, 120), new Rgb(40, 160, 60) };
        var description = new DatasetDescription { Classes = 3, ClassNames = new[] { "bg", "cell", "edge" }, ClassColors = colors };
        var image = new ImageBuffer(32, 32, 1);
        var truth = new byte[32 * 32];
        for (int i = 0; i < truth.Length; i++) truth[i] = (byte)(i % 32 < 10 ? 0 : i % 32 < 20 ? 1 : 2);
        var panel = Previews.Panel("x", image, truth, truth, colors);
        var img = Decode(d, "panel.png", Pictures.Panel(panel, description));
        Assert.True(img.Width >= panel.Width && img.Height > panel.Height + 20, "captions above, legend below");
        // Legend swatches: 14x14 squares of each class colour below the panel (besides the panel's own pixels).
        int inPanel(Rgb c) => Enumerable.Range(0, panel.Width * panel.Height).Count(i => panel.Rgb[i * 3] == c.R && panel.Rgb[i * 3 + 1] == c.G && panel.Rgb[i * 3 + 2] == c.B);
        foreach (var c in colors.Skip(1)) Assert.True(Count(img, c) >= inPanel(c) + 14 * 14, $"swatch of {c}");
        Assert.True(Count(img, new Rgb(230, 30, 30)) >= 14 * 14, "the errors colour has a swatch too");
    }

    [Fact]
    public void Report_writes_one_self_contained_page_and_the_run_has_its_pictures()
    {
        using var d = new TempDir();
        var train = CliResult.Run("train", "--data", "builtin:shapes?count=24&size=32&seed=2", "--epochs", "2", "--base-channels", "8", "--depth", "3", "--batch-size", "4", "--workers", "1", "--device", "cpu", "--out", d["run"], "--no-tensorboard");
        Assert.True(train.Code == 0, train.Err);
        foreach (var f in new[] { "curves.png", "confusion.png" }) Assert.True(File.Exists(d["run/" + f]), f);
        Assert.NotEmpty(Directory.GetFiles(d["run/overlays"], "*.png"));
        var report = CliResult.Run("report", d["run"], "--worst", "2", "--device", "cpu");
        Assert.True(report.Code == 0, report.Err);
        var html = File.ReadAllText(d["run/report.html"]);
        Assert.Equal(2 + 2, System.Text.RegularExpressions.Regex.Matches(html, "<img ").Count);
        Assert.DoesNotContain("src=\"http", html); // nothing fetched from elsewhere
        Assert.Contains("<td><span class=\"swatch\"", html);
        var missing = CliResult.Run("report", d["nothing"]);
        Assert.Equal(1, missing.Code);
        Assert.Contains("run.json", missing.Err);
    }

    [Fact]
    public void Report_reads_its_own_folders_files_and_tolerates_a_cut_last_metrics_line()
    {
        using var d = new TempDir();
        var train = CliResult.Run("train", "--data", "builtin:shapes?count=24&size=32&seed=2", "--epochs", "2", "--base-channels", "8", "--depth", "3", "--batch-size", "4", "--workers", "1", "--device", "cpu", "--out", d["run"], "--no-tensorboard");
        Assert.True(train.Code == 0, train.Err);
        // A copy of the run folder whose best.ckpt is cut short: the report must read the copy's (and fail on it,
        // naming it), not the original's through the absolute path in summary.json.
        Directory.CreateDirectory(d["copy"]);
        foreach (var f in Directory.GetFiles(d["run"])) File.Copy(f, Path.Combine(d["copy"], Path.GetFileName(f)));
        var best = File.ReadAllBytes(d["copy/best.ckpt"]);
        File.WriteAllBytes(d["copy/best.ckpt"], best[..(best.Length / 2)]);
        var report = CliResult.Run("report", d["copy"], "--worst", "1", "--device", "cpu");
        Assert.Equal(1, report.Code);
        Assert.Contains(Path.Combine(d["copy"], "best.ckpt"), report.Err);

        // A last metrics.jsonl line cut short (a kill mid-write): the report is written, with a note.
        File.WriteAllBytes(d["copy/best.ckpt"], best);
        var lines = File.ReadAllLines(d["copy/metrics.jsonl"]);
        File.WriteAllText(d["copy/metrics.jsonl"], lines[0] + "\n" + lines[1][..(lines[1].Length / 2)]);
        report = CliResult.Run("report", d["copy"], "--worst", "1", "--device", "cpu");
        Assert.True(report.Code == 0, report.Err);
        Assert.Contains("its last line is cut short", File.ReadAllText(d["copy/report.html"]));
    }

    [ChromiumFact]
    public void The_report_page_loads_in_a_headless_browser_with_its_table_and_pictures()
    {
        var chromium = ChromiumFactAttribute.Browser!;
        using var d = new TempDir();
        var train = CliResult.Run("train", "--data", "builtin:shapes?count=24&size=32&seed=2", "--epochs", "2", "--base-channels", "8", "--depth", "3", "--batch-size", "4", "--workers", "1", "--device", "cpu", "--out", d["run"]);
        Assert.True(train.Code == 0, train.Err);
        var report = CliResult.Run("report", d["run"], "--worst", "3", "--device", "cpu");
        Assert.True(report.Code == 0, report.Err);
        string Browser(params string[] args) => Chromium(chromium, args);
        var url = new Uri(Path.GetFullPath(d["run/report.html"])).AbsoluteUri;
        var dom = Browser("--virtual-time-budget=5000", "--dump-dom", url);
        Assert.Contains("data-images=\"ok\"", dom);     // every picture decoded
        Assert.Contains("<td>", dom);
        foreach (var name in new[] { "background", "circle", "rectangle", "triangle" }) Assert.Contains(name, dom);
        Assert.Equal(2 + 3, System.Text.RegularExpressions.Regex.Matches(dom, "<img ").Count); // curves, confusion, 3 worst panels
        Browser("--window-size=1200,2400", $"--screenshot={d["shot.png"]}", url);
        var shot = new ImageReader().ReadImage(d["shot.png"], 3);
        var colours = new HashSet<int>();
        for (int i = 0; i < shot.Width * shot.Height; i += 7) colours.Add(shot.Pixels[i * 3] << 16 | shot.Pixels[i * 3 + 1] << 8 | shot.Pixels[i * 3 + 2]);
        Assert.True(colours.Count > 200, $"the screenshot has {colours.Count} colours: the pictures did not render");
    }

    /// <summary>Headless chromium with <paramref name="args"/>; its standard output.</summary>
    private static string Chromium(string chromium, params string[] args)
    {
        var psi = new ProcessStartInfo(chromium) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars" }.Concat(args)) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var errors = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), "chromium did not finish");
        Assert.DoesNotContain("Uncaught", errors.Result);
        return output.Result;
    }

    [ChromiumFact]
    public void An_instance_runs_report_loads_in_a_headless_browser_with_object_panels_and_the_AP_plot()
    {
        using var d = new TempDir();
        var train = CliResult.Run("train", "--data", "builtin:shapes?count=40&size=48&seed=3", "--task", "instance", "--epochs", "2", "--base-channels", "8", "--depth", "2", "--batch-size", "8", "--workers", "1", "--device", "cpu", "--out", d["run"], "--no-tensorboard");
        Assert.True(train.Code == 0, train.Err);
        Assert.Equal(0, CliResult.Run("report", d["run"], "--worst", "3", "--device", "cpu").Code);
        var url = new Uri(Path.GetFullPath(d["run/report.html"])).AbsoluteUri;
        var dom = Chromium(ChromiumFactAttribute.Browser!, "--virtual-time-budget=5000", "--dump-dom", url);
        Assert.Contains("data-images=\"ok\"", dom);
        Assert.Equal(3, System.Text.RegularExpressions.Regex.Matches(dom, "class=\"objects-panel\"").Count);
        Assert.Contains("by their own AP", dom);
        Assert.Contains("class=\"ap-plot\"", dom);
        Chromium(ChromiumFactAttribute.Browser!, "--window-size=1200,2400", $"--screenshot={d["shot.png"]}", url);
        Assert.True(new FileInfo(d["shot.png"]).Length > 10_000);
    }
}
