using System.CommandLine;
using Segmentation.Checkpoints;
using Segmentation.Inference;
using Segmentation.Models.Encoders;

namespace Segmentation.Cli;

/// <summary><c>segment export</c>: a checkpoint's model in a format other tools run or load.</summary>
internal static class ExportCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("export",
            "Write a checkpoint's model for other runtimes: onnx (opset 17, any batch and image size), or its weights "
                + "for PyTorch (pytorch: .pth; safetensors) under milesial/Pytorch-UNet's or "
                + "segmentation_models.pytorch's key names.");
        var checkpoint = new Option<string>("--checkpoint") { Description = "The checkpoint (best.ckpt of a run).",
            Required = true };
        var format = new Option<string>("--format")
        {
            Description = string.Join("; ", ModelExporters.All.Select(e => $"{e.Format}: {e.Description}")) + ".",
                DefaultValueFactory = _ => "onnx",
        };
        var layout = new Option<string?>("--layout") { Description =
            "pytorch and safetensors: milesial (the plain U-Net), smp (smp's Unet or FPN on a ResNet or ConvNeXt, "
                + "torchvision's encoder names) or hf (a SegFormer, as a Hugging Face model folder); default: the one "
                + "that fits the model." };
        var output = new Option<string>("--out") { Description = "The file to write.", Required = true };
        var overwrite = Cli.OverwriteFlag();
        foreach (var o in new Option[] { checkpoint, format, layout, output, overwrite }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var exporter = ModelExporters.Find(p.GetValue(format)!);
            var ckpt = Checkpoint.Load(p.GetValue(checkpoint)!);
            var path = p.GetValue(output)!;
            Cli.RefuseToReplace(path, p.GetValue(overwrite), exporter.Format == "safetensors" ? null // a folder for hf
                : "model" + exporter.Extension);
            var options = new ExportOptions { Layout = p.GetValue(layout) is { } l ? ImportCommand.ParseLayout(l,
                "--layout") : null };
            var what = exporter.Write(ckpt, path, options);
            var size = exporter.Format == "onnx" ? $" ({new FileInfo(path).Length / 1048576.0:F1} MB)" : "";
            ctx.Out.WriteLine($"wrote {path}{size}: {what}");
            return Cli.Ok;
        });
        return cmd;
    }
}
