using System.CommandLine;
using Segmentation.Checkpoints;
using Segmentation.Training;

namespace Segmentation.Cli;

/// <summary><c>segment import</c>: a PyTorch state dict as a checkpoint of ours.</summary>
internal static class ImportCommand
{
    internal static PyTorchLayout ParseLayout(string value, string option) =>
        Cli.ParseEnum(value, option, ("milesial", PyTorchLayout.Milesial), ("smp", PyTorchLayout.Smp),
            ("hf", PyTorchLayout.HuggingFace), ("hf-segformer", PyTorchLayout.HuggingFace),
            ("hf-mask2former", PyTorchLayout.HuggingFace),
            ("segformer", PyTorchLayout.Segformer));

    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("import",
            "Make a checkpoint from a PyTorch state dict: milesial/Pytorch-UNet's UNet(bilinear=False), "
                + "segmentation_models.pytorch's Unet(resnet18|34|50), a Hugging Face SegFormer or Mask2Former (Swin) "
                + "folder, or a SegFormer file in the original (NVlabs, mmsegmentation 0.x) layout. The model's shape "
                + "is read from the tensors (and a folder's config); the source's preprocessing is recorded, so "
                + "predict gives its masks.");
        var file = new Option<string>("--pytorch") { Description =
            "The state dict: .pth (torch.save(model.state_dict())) or .safetensors; for hf-segformer and "
                + "hf-mask2former, the model folder (config.json, model.safetensors or pytorch_model.bin, "
                + "preprocessor_config.json).", Required = true };
        var from = new Option<string>("--from") { Description =
            "milesial, smp, hf-segformer or hf-mask2former (a model folder) or segformer (a file: patch_embed1.., "
                + "block1.., fused "
                + "attn.kv): whose key names and preprocessing.",
            Required = true };
        var output = new Option<string>("--out") { Description = "The checkpoint to write.", Required = true };
        var overwrite = Cli.OverwriteFlag();
        var allowNonFinite = new Option<bool>("--allow-nonfinite") { Description =
            "Import weights that hold NaN or infinite values (refused otherwise: the model would predict nonsense)." };
        foreach (var o in new Option[] { file, from, output, overwrite, allowNonFinite }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            Cli.RefuseToReplace(p.GetValue(output)!, p.GetValue(overwrite), example: "model.ckpt");
            var checkpoint = PyTorchInterop.Import(p.GetValue(file)!, ParseLayout(p.GetValue(from)!, "--from"),
                p.GetValue(allowNonFinite), new SynchronousProgress<string>(w => ctx.Err.WriteLine($"warning: {w}")));
            var path = p.GetValue(output)!;
            checkpoint.Save(path);
            var m = checkpoint.Model;
            ctx.Out.WriteLine($"wrote {path}: {Cli.Shape(m)}, inputs normalised with "
                + $"{checkpoint.Preprocessing.Normalization}");
            return Cli.Ok;
        });
        return cmd;
    }
}
