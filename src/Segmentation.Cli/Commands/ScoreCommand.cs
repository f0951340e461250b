using System.CommandLine;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Models;
using Segmentation.Models.Layers;

namespace Segmentation.Cli;

/// <summary><c>segment score</c>: our Mean IoU rule on two folders of masks.</summary>
internal static class ScoreCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("score",
            "Score predicted masks against ground truth with the mmsegmentation / HF evaluate Mean IoU rule; with "
                + "--task instance, instance masks by AP (IoU 0.50..0.95, the Data Science Bowl 2018 metric) and "
                + "panoptic quality.");
        var pred = new Option<string>("--pred") { Description =
            "Folder of predicted masks (class indices, or colours with a palette).", Required = true };
        var gt = new Option<string>("--gt") { Description = "Folder of ground-truth masks (same file names), a data "
            + "folder (its masks/), or with --task instance the Data Science Bowl layout (ID/masks/*.png).",
            Required = true };
        var d = DataFlags.Add(cmd);
        d.Task.Description = "semantic (class masks, by mean IoU; the default) or instance (object numbers, by AP and "
            + "panoptic quality). A panoptic model is scored by 'segment eval' on its data.";
        d.SkipUnpaired.Description = "Score the pairs there are: leave out (and list) ground-truth masks without a "
            + "prediction and predictions without a ground truth, instead of failing.";
        var json = new Option<bool>("--json") { Description = "Print the metrics as JSON on the last line." };
        cmd.Options.Add(pred); cmd.Options.Add(gt); cmd.Options.Add(json);
        cmd.SetAction(p =>
        {
            var task = DataFlags.ReadTask(p, d);
            if (task == SegmentationTaskKind.Panoptic)
                throw new OptionsException("score compares class masks (the default) or instance masks (--task "
                    + "instance); panoptic quality of a model is measured by 'segment eval' on its data.");
            if (task == SegmentationTaskKind.Instance)
            {
                // object numbers on both sides: AP over IoU 0.50..0.95 and panoptic quality
                var pairs = MaskScorer.PairFolders(p.GetValue(pred)!, p.GetValue(gt)!, p.GetValue(d.SkipUnpaired));
                var scores = MaskScorer.ScoreInstanceFolders(pairs);
                if (pairs.Describe() is { } left) ctx.Err.WriteLine($"left out {left}");
                (p.GetValue(json) ? ctx.Err : ctx.Out).WriteLine(scores.ToString());
                if (p.GetValue(json)) ctx.Out.WriteLine(scores.ToJsonObject().ToJsonString());
                return Cli.Ok;
            }
            var o = DataFlags.Read(p, d, 1);
            if (o.Classes is null && o.PaletteFile is null && o.Encoding != MaskEncoding.Binary)
                throw new OptionsException("score needs --classes (or a --palette, or --mask binary).");
            var pairing = MaskScorer.PairFolders(p.GetValue(pred)!, p.GetValue(gt)!, o.SkipUnpaired);
            var metrics = MaskScorer.ScoreFolders(pairing, o.Classes ?? 2, o.IgnoreIndex, o.Encoding, o.PaletteFile);
            if (pairing.Describe() is { } skipped) ctx.Err.WriteLine($"left out {skipped}");
            var log = p.GetValue(json) ? ctx.Err : ctx.Out;
            log.Write(metrics.ToString());
            if (p.GetValue(json)) ctx.Out.WriteLine(metrics.ToJson());
            return Cli.Ok;
        });
        return cmd;
    }
}
