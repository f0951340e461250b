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
        var cmd = new Command("export", "Write a checkpoint's model for other runtimes: onnx (opset 17, any batch and image size), or its weights for PyTorch (pytorch: .pth; safetensors) under milesial/Pytorch-UNet's or segmentation_models.pytorch's key names.");
        var checkpoint = new Option<string>("--checkpoint") { Description = "The checkpoint (best.ckpt of a run).", Required = true };
        var format = new Option<string>("--format") { Description = "onnx, pytorch or safetensors.", DefaultValueFactory = _ => "onnx" };
        var layout = new Option<string?>("--layout") { Description = "pytorch and safetensors: milesial (the plain U-Net) or smp (ResNet encoders); default: the one that fits the model." };
        var output = new Option<string>("--out") { Description = "The file to write.", Required = true };
        foreach (var o in new Option[] { checkpoint, format, layout, output }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var what = Cli.ParseEnum(p.GetValue(format)!, "--format", ("onnx", "onnx"), ("pytorch", "pytorch"), ("safetensors", "safetensors"));
            var ckpt = Checkpoint.Load(p.GetValue(checkpoint)!);
            var path = p.GetValue(output)!;
            if (what == "onnx")
            {
                OnnxExport.Write(ckpt, path);
                ctx.Out.WriteLine($"wrote {path} ({new FileInfo(path).Length / 1048576.0:F1} MB): ONNX opset {OnnxExport.Opset}, input '{OnnxExport.Input}' N x {ckpt.Model.InChannels} x H x W float32 normalised ({ckpt.Preprocessing.Normalization}{(ckpt.Preprocessing.Size is { } s ? $", resized to {s}" : "")}), output '{OnnxExport.Output}' N x {ckpt.Model.Classes} x H x W");
                return Cli.Ok;
            }
            var keys = p.GetValue(layout) is { } l ? ImportCommand.ParseLayout(l, "--layout") : ckpt.Model.Encoder.Name == "unet" ? PyTorchLayout.Milesial : PyTorchLayout.Smp;
            bool safetensors = what == "safetensors";
            if (safetensors != path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
                throw new OptionsException($"--out {path}: name a {what} file {(safetensors ? "*.safetensors" : "*.pth")}.");
            PyTorchInterop.Export(ckpt, path, keys);
            ctx.Out.WriteLine($"wrote {path}: the weights under {(keys == PyTorchLayout.Milesial ? "milesial/Pytorch-UNet's UNet(bilinear=False)" : "segmentation_models.pytorch's Unet")} names; inputs {(keys == PyTorchLayout.Milesial ? "pixel / 255" : "ImageNet-normalised")} in the source, ours: {ckpt.Preprocessing.Normalization}");
            return Cli.Ok;
        });
        return cmd;
    }
}
