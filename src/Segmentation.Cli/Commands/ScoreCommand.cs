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
        var gt = new Option<string>("--gt") { Description = "Folder of ground-truth masks (same file names).",
            Required = true };
        var d = DataFlags.Add(cmd);
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
                var scores = MaskScorer.ScoreInstanceFolders(p.GetValue(pred)!, p.GetValue(gt)!);
                (p.GetValue(json) ? ctx.Err : ctx.Out).WriteLine(scores.ToString());
                if (p.GetValue(json)) ctx.Out.WriteLine(scores.ToJsonObject().ToJsonString());
                return Cli.Ok;
            }
            var o = DataFlags.Read(p, d, 1);
            if (o.Classes is null && o.PaletteFile is null && o.Encoding != MaskEncoding.Binary)
                throw new OptionsException("score needs --classes (or a --palette, or --mask binary).");
            var metrics = MaskScorer.ScoreFolders(p.GetValue(pred)!, p.GetValue(gt)!, o.Classes ?? 2, o.IgnoreIndex,
                o.Encoding, o.PaletteFile);
            var log = p.GetValue(json) ? ctx.Err : ctx.Out;
            log.Write(metrics.ToString());
            if (p.GetValue(json)) ctx.Out.WriteLine(metrics.ToJson());
            return Cli.Ok;
        });
        return cmd;
    }
}
