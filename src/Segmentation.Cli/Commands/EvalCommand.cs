using System.CommandLine;
using System.Diagnostics;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Layers;

namespace Segmentation.Cli;

/// <summary><c>segment eval</c>: metrics of a checkpoint on a data set.</summary>
internal static class EvalCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("eval",
            "Evaluate a checkpoint (mean IoU and the rest) on a data set; by default its own validation data.");
        var f = PredictFlags.Add(cmd);
        var data = new Option<string?>("--data") { Description =
            "Folder with images/ and masks/ (a folder with train/ and val/ is read from val/), or builtin:shapes. "
                + "Default: the checkpoint's validation data." };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 1 };
        var workers = new Option<int>("--workers") { DefaultValueFactory = _ => 0 };
        var json = new Option<bool>("--json") { Description = "Print the metrics as JSON on the last line." };
        foreach (var o in new Option[] { data, batch, workers, json }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var ckpt = Checkpoint.Load(f.CheckpointPath(p));
            var spec = p.GetValue(data) ?? ckpt.ValOrigin
                ?? throw new OptionsException("The checkpoint has no validation data; give --data.");
            if (DataFlags.IsSplitFolder(spec)) spec = Path.Combine(spec, "val");
            var set = SegmentationDataset.FromOrigin(spec, new DatasetOptions { Description = ckpt.Dataset });
            using var predictor = f.Open(p, ckpt);
            var clock = Stopwatch.StartNew();
            var metrics = predictor.Evaluate(set, p.GetValue(batch), p.GetValue(workers));
            var log = p.GetValue(json) ? ctx.Err : ctx.Out;
            log.WriteLine($"{set.Origin}: {set.Count} images in {clock.Elapsed.TotalSeconds:F1} s");
            log.Write(metrics.ToString());
            if (p.GetValue(json)) ctx.Out.WriteLine(metrics.ToJson());
            return Cli.Ok;
        });
        return cmd;
    }
}
