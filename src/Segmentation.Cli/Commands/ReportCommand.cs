using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Inference;
using Segmentation.Training;

namespace Segmentation.Cli;

/// <summary><c>segment report RUN</c>: one self-contained HTML page per run.</summary>
internal static class ReportCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("report",
            "Write RUN/report.html: one self-contained page with the run's set-up, data, per-class table, curves, "
                + "confusion matrix and the worst validation images with their panels.");
        var runDir = new Argument<string>("run") { Description = "The run folder (written by segment train)." };
        var worst = new Option<int>("--worst") { Description =
            "How many of the worst validation images (by their mean IoU) to show.", DefaultValueFactory = _ => 6 };
        var device = new Option<string>("--device") { Description = "auto, cpu or cuda.", DefaultValueFactory = _
            => "auto" };
        var output = new Option<string?>("--out") { Description = "The page to write (default RUN/report.html)." };
        var overwrite = Cli.OverwriteFlag();
        cmd.Arguments.Add(runDir);
        foreach (var o in new Option[] { worst, device, output, overwrite }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var run = new RunRecorder(p.GetValue(runDir)!);
            if (p.GetValue(worst) < 0) throw new OptionsException($"--worst {p.GetValue(worst)} must be 0 or more.");
            var path = p.GetValue(output) ?? run.Report;
            // the run's own report.html is the report's to replace; any other file the user has is not
            Cli.RefuseToReplace(path, p.GetValue(overwrite) || Path.GetFullPath(path) == Path.GetFullPath(run.Report),
                "report.html");
            var html = Build(run, p.GetValue(worst), p.GetValue(device)!);
            run.WriteReport(html, path);
            ctx.Out.WriteLine($"wrote {path} ({html.Length / 1024} KiB)");
            return Cli.Ok;
        });
        return cmd;
    }

    /// <summary>The page: everything inline (styles, and pictures as data URIs), so it can be mailed or archived
    /// alone.</summary>
    internal static string Build(RunRecorder run, int worstCount, string device)
    {
        foreach (var needed in new[] { run.RunJson, run.Summary })
            if (!File.Exists(needed))
                throw new SegmentationException($"{needed}: not found; segment report needs a finished run folder "
                    + $"(run.json, summary.json, best.ckpt).");
        var config = RunConfig.Load(run.RunJson, run.Directory);
        var summary = JsonNode.Parse(RegularFile.ReadAllText(run.Summary, Limits.ConfigFileBytes, "run summary"))!
            .AsObject();
        var metrics = summary["meanIoU"] is null ? null : SegmentationMetrics.FromJsonObject(summary);
        var (history, notes) = ReadHistory(run.Metrics);
        // This folder's own best.ckpt first: a copied run folder must not report on the original's checkpoint.
        var checkpoint = run.Best;
        if (!File.Exists(checkpoint) && (string?)summary["checkpoint"] is { } named && File.Exists(named))
        {
            checkpoint = named;
            notes.Add($"{run.Best} is missing; the worst images come from {named}, which summary.json names.");
        }
        var (train, val) = config.OpenData();

        var page = new StringBuilder();
        page.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Segmentation run ")
            .Append(E(Path.GetFileName(Path.GetFullPath(run.Directory)))).Append("</title><style>")
            .Append("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}")
            .Append("td,th{border:1px solid #ccc;padding:3px "
                + "8px;text-align:right}th{background:#eee}td:first-child{text-align:left}")
            .Append("pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}")
            .Append("img{max-width:100%}figure{margin:1em 0}figcaption{overflow-wrap:anywhere}")
            .Append(".swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}")
            .Append("</style></head><body>");
        page.Append("<h1>Run ").Append(E(Path.GetFullPath(run.Directory))).Append("</h1>");
        page.Append("<p>")
            .Append(E($"{summary["epochs"]} epochs, best epoch {summary["bestEpoch"]}, stopped: "
                + $"{summary["stopReason"]}; {summary["params"]:N0} parameters on {summary["device"]} "
                + $"({summary["precision"]}), {summary["seconds"]} s.")).Append("</p>");
        foreach (var note in notes) page.Append("<p><strong>Note:</strong> ").Append(E(note)).Append("</p>");
        page.Append("<h2>Data</h2><p>").Append(E(train.DetectionReport)).Append("</p><p>")
            .Append(E($"{train.Count} training images, {val?.Count ?? 0} validation images.")).Append("</p>");
        if (metrics is not null) page.Append(Table(metrics, train.Description));
        if (metrics?.Instances is { } objects) // instance and panoptic runs: AP and panoptic quality
            page.Append(ObjectReport.Metrics(objects));
        page.Append("<h2>Curves</h2>").Append(Img(Pictures.Curves(history), "curves: losses and mean IoU per epoch"));
        if (metrics is not null) page.Append("<h2>Confusion matrix</h2>")
            .Append(Img(Pictures.Confusion(metrics), "confusion matrix"));
        if (val is not null && File.Exists(checkpoint) && worstCount > 0) page.Append(Worst(checkpoint, val,
            worstCount, device));
        page.Append("<h2>Set-up</h2><p>Repeat it with <code>segment train --config ")
            .Append(E(Path.GetFullPath(run.RunJson))).Append(" --out NEW_FOLDER</code>.</p>")
            .Append("<details><summary>run.json</summary><pre>")
                .Append(E(RegularFile.ReadAllText(run.RunJson, Limits.ConfigFileBytes, "run record")))
                .Append("</pre></details>");
        page.Append("<script>window.addEventListener('load',()=>{")
            .Append("const bad=[...document.images].filter(i=>!i.complete||i.naturalWidth===0).length;")
            .Append("document.body.dataset.images=bad===0?'ok':'broken '+bad;});</script>");
        page.Append("</body></html>");
        return page.ToString();
    }

    /// <summary>
    /// metrics.jsonl's epochs. A last line cut short (a run killed while writing it, or a full disk) is left out with a
    /// note, as training's resume leaves it out; a malformed line before it is an error naming the line.
    /// </summary>
    internal static (List<EpochRecord> History, List<string> Notes) ReadHistory(string path)
    {
        var history = new List<EpochRecord>();
        var notes = new List<string>();
        if (!File.Exists(path)) return (history, notes);
        var lines = RegularFile.ReadAllText(path, Limits.ConfigFileBytes, "metrics record").Split('\n');
        int last = Array.FindLastIndex(lines, l => l.Trim().Length > 0);
        for (int i = 0; i <= last; i++)
        {
            if (lines[i].Trim().Length == 0) continue;
            try { history.Add(EpochRecord.FromJson(JsonNode.Parse(lines[i])!.AsObject())); }
            catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException
                or NullReferenceException or FormatException)
            {
                if (i < last)
                    throw new SegmentationException($"{path}: line {i + 1} is not an epoch record ({e.Message}).", e);
                notes.Add($"{path}: its last line is cut short (line {i + 1}); the curves end at the epoch before.");
            }
        }
        return (history, notes);
    }

    private static string Table(SegmentationMetrics m, DatasetDescription d)
    {
        var t = new StringBuilder("<h2>Validation, best "
            + "epoch</h2><table><tr><th>class</th><th>IoU</th><th>accuracy</th><th>Dice</th></tr>");
        for (int c = 0; c < m.ClassNames.Length; c++)
        {
            var rgb = c < d.ClassColors.Length ? d.ClassColors[c].ToString() : "#808080";
            t.Append("<tr><td><span class=\"swatch\" style=\"background:").Append(rgb).Append("\"></span>")
                .Append(E(m.ClassNames[c])).Append("</td>")
                .Append(Cell(m.PerClassIoU[c])).Append(Cell(m.PerClassAccuracy[c])).Append(Cell(m.PerClassDice[c]))
                    .Append("</tr>");
        }
        t.Append("<tr><th>mean</th>").Append(Cell(m.MeanIoU)).Append(Cell(m.MeanAccuracy)).Append(Cell(m.MeanDice))
            .Append("</tr></table>");
        t.Append("<p>")
            .Append(E($"pixel accuracy {m.PixelAccuracy:F4}, frequency-weighted IoU {m.FrequencyWeightedIoU:F4}"))
                .Append("</p>");
        return t.ToString();
    }

    /// <summary>The validation images with the lowest mean IoU (classes in the truth or the prediction), with their
    /// panels.</summary>
    private static string Worst(string checkpoint, SegmentationDataset val, int count, string device)
    {
        using var predictor = Predictor.FromFile(checkpoint, new PredictorOptions { Device = device });
        var d = predictor.Description;
        // objects: ranked by each image's AP, drawn object by object
        if (d.Task != SegmentationTaskKind.Semantic) return ObjectReport.Worst(predictor, val, count);
        var scored = new List<(double IoU, Sample Sample, byte[] Labels)>();
        for (int i = 0; i < val.Count; i++)
        {
            var sample = val.Load(i);
            var labels = predictor.Predict(sample.Image).Labels;
            scored.Add((ImageMeanIoU(sample.Mask, labels, sample.Height, sample.Width, d.Classes), sample, labels));
            scored = scored.OrderBy(s => s.IoU).Take(count).ToList(); // keep only the worst few in memory
        }
        var html = new StringBuilder($"<h2>The {scored.Count} worst validation images</h2>");
        foreach (var (iou, sample, labels) in scored)
        {
            var panel = Previews.Panel(sample.Name, sample.Image, sample.Mask, labels, d.ClassColors);
            html.Append("<figure>").Append(Img(Pictures.Panel(panel, d), sample.Name)).Append("<figcaption>")
                .Append(E($"{sample.Name}: mean IoU {iou:F4}")).Append("</figcaption></figure>");
        }
        return html.ToString();
    }

    /// <summary>The image's own mean IoU, by the evaluator's rule (classes in neither its truth nor its prediction left
    /// out).</summary>
    private static double ImageMeanIoU(byte[] truth, byte[] prediction, int height, int width, int classes)
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        using var cm = new ConfusionMatrix(classes);
        cm.Update(TorchSharp.torch.tensor(prediction, new long[] { height, width }),
            TorchSharp.torch.tensor(truth, new long[] { height, width }));
        return cm.Compute().MeanIoU;
    }

    private static string Cell(double v) => "<td>"
        + (double.IsFinite(v) ? v.ToString("F4", CultureInfo.InvariantCulture) : "-") + "</td>";
    private static string Img(byte[] png, string alt)
        => $"<img alt=\"{E(alt)}\" src=\"data:image/png;base64,{Convert.ToBase64String(png)}\">";
    private static string E(string? text) => WebUtility.HtmlEncode(text ?? "");
}
