using System.Text.RegularExpressions;

namespace Segmentation.Tests.Cli;

/// <summary>The report of an instance run: object metrics with AP per threshold as a plot, and the worst images by
/// their own AP drawn object by object.</summary>
public class InstanceReportTests
{
    [Fact]
    public void An_instance_runs_report_ranks_images_by_AP_and_draws_their_objects()
    {
        using var d = new TempDir();
        var train = CliResult.Run("train", "--data", "builtin:shapes?count=40&size=48&seed=3", "--task", "instance",
            "--epochs", "2", "--base-channels", "8", "--depth", "2", "--batch-size", "8", "--workers", "1", "--device",
            "cpu", "--out", d["run"], "--no-tensorboard");
        Assert.True(train.Code == 0, train.Err);
        var report = CliResult.Run("report", d["run"], "--worst", "3");
        Assert.True(report.Code == 0, report.Err);
        var html = File.ReadAllText(d["run/report.html"]);
        Assert.Contains("worst validation images, by their own AP", html);
        Assert.Equal(3, Regex.Matches(html, "<figure class=\"objects-panel\">").Count);
        var aps = Regex.Matches(html, @"<figcaption>[^<]*: AP (\d\.\d{4}), AP50").Select(m => double.Parse(
            m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(3, aps.Count);
        Assert.Equal(aps.Order(), aps); // worst first
        Assert.Contains("class=\"ap-plot\"", html);
        Assert.Equal(10, Regex.Matches(html, "<circle ").Count); // a point per IoU threshold
        Assert.Contains("<td>AP50</td>", html);
        Assert.DoesNotContain("mean IoU 0.", Regex.Match(html, "worst validation images.*", RegexOptions.Singleline)
            .Value); // not ranked by the per-class IoU that counts the boundary class
    }
}
