using System.CommandLine;
using Segmentation.Checkpoints;
using Segmentation.Inference;

namespace Segmentation.Cli;

/// <summary><c>segment export</c>: a checkpoint's model in a format other tools run.</summary>
internal static class ExportCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("export", "Write a checkpoint's model for other runtimes: --format onnx (opset 17, any batch and image size, ONNX Runtime and the like).");
        var checkpoint = new Option<string>("--checkpoint") { Description = "The checkpoint (best.ckpt of a run).", Required = true };
        var format = new Option<string>("--format") { Description = "onnx.", DefaultValueFactory = _ => "onnx" };
        var output = new Option<string>("--out") { Description = "The file to write.", Required = true };
        foreach (var o in new Option[] { checkpoint, format, output }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            Cli.ParseEnum(p.GetValue(format)!, "--format", ("onnx", "onnx"));
            var ckpt = Checkpoint.Load(p.GetValue(checkpoint)!);
            var path = p.GetValue(output)!;
            OnnxExport.Write(ckpt, path);
            ctx.Out.WriteLine($"wrote {path} ({new FileInfo(path).Length / 1048576.0:F1} MB): ONNX opset {OnnxExport.Opset}, input '{OnnxExport.Input}' N x {ckpt.Model.InChannels} x H x W float32 normalised (mean [{string.Join(", ", ckpt.Preprocessing.Normalization.Mean)}], std [{string.Join(", ", ckpt.Preprocessing.Normalization.Std)}]{(ckpt.Preprocessing.Size is { } s ? $", resized to {s}" : "")}), output '{OnnxExport.Output}' N x {ckpt.Model.Classes} x H x W");
            return Cli.Ok;
        });
        return cmd;
    }
}
