using Segmentation.Checkpoints;

namespace Segmentation.Inference;

/// <summary>How an export is written (what some formats need besides the checkpoint).</summary>
public sealed record ExportOptions
{
    /// <summary>PyTorch and safetensors: whose key names to write (default: the one that fits the model).</summary>
    public PyTorchLayout? Layout { get; init; }
}

/// <summary>One format a checkpoint's model can be written in for another runtime or library.</summary>
public interface IModelExporter
{
    /// <summary>The format's name (<c>--format</c>).</summary>
    string Format { get; }

    /// <summary>The file extension the format's files have.</summary>
    string Extension { get; }

    /// <summary>One line of help.</summary>
    string Description { get; }

    /// <summary>Writes <paramref name="checkpoint"/>'s model to <paramref name="path"/> (atomically); returns what was
    /// written, in a line.</summary>
    string Write(Checkpoint checkpoint, string path, ExportOptions options);
}

/// <summary>The exporters there are, by format: ONNX, PyTorch's <c>.pth</c>, safetensors. The one seam the CLI and
/// scripts write through.</summary>
public static class ModelExporters
{
    private static readonly object Gate = new();
    private static readonly List<IModelExporter> Registered = new() { new OnnxExporter(), new PyTorchExporter(false),
        new PyTorchExporter(true) };

    /// <summary>Every exporter, the library's first.</summary>
    public static IReadOnlyList<IModelExporter> All
    {
        get { lock (Gate) return Registered.ToList(); }
    }

    /// <summary>Adds an exporter; a format already there is an error.</summary>
    public static void Add(IModelExporter exporter)
    {
        lock (Gate)
        {
            if (Registered.Any(e => e.Format == exporter.Format))
                throw new OptionsException($"An exporter for '{exporter.Format}' is registered already.");
            Registered.Add(exporter);
        }
    }

    /// <summary>The exporter of <paramref name="format"/>; an unknown one is an error that lists those there
    /// are.</summary>
    public static IModelExporter Find(string format)
        => All.FirstOrDefault(e => string.Equals(e.Format, format, StringComparison.OrdinalIgnoreCase))
        ?? throw new OptionsException($"--format '{format}' is not one of: "
        + $"{string.Join(", ", All.Select(e => e.Format))}.");

    private sealed class OnnxExporter : IModelExporter
    {
        public string Format => "onnx";
        public string Extension => ".onnx";
        public string Description
            => $"ONNX opset {OnnxExport.Opset}, any batch and image size, with the metadata a predictor needs";

        public string Write(Checkpoint c, string path, ExportOptions options)
        {
            OnnxExport.Write(c, path);
            var size = c.Preprocessing.Size is { } s ? $", resized to {s}" : "";
            return $"ONNX opset {OnnxExport.Opset}, input '{OnnxExport.Input}' N x {c.Model.InChannels} x H x W "
                + $"float32 normalised "
                + $"({c.Preprocessing.Normalization}{size}), output '{OnnxExport.Output}' N x {c.Model.Classes} x H x "
                + $"W";
        }
    }

    private sealed class PyTorchExporter(bool safetensors) : IModelExporter
    {
        public string Format => safetensors ? "safetensors" : "pytorch";
        public string Extension => safetensors ? ".safetensors" : ".pth";
        public string Description
            => "the weights under milesial/Pytorch-UNet's or segmentation_models.pytorch's key names";

        public string Write(Checkpoint c, string path, ExportOptions options)
        {
            var wanted = options.Layout ?? (c.Model.Architecture is "segformer" or "mask2former"
                ? PyTorchLayout.HuggingFace : (PyTorchLayout?)null);
            if (wanted == PyTorchLayout.Segformer)
                throw new OptionsException("The original SegFormer layout (patch_embed1, fused attn.kv) is read only; "
                    + "a SegFormer is written in Hugging Face's: --format safetensors --layout hf.");
            if (wanted == PyTorchLayout.HuggingFace && !safetensors)
                throw new OptionsException("The Hugging Face layout is written as a folder of safetensors: --format "
                    + "safetensors --layout hf.");
            if (wanted == PyTorchLayout.HuggingFace && c.Model.Architecture == "mask2former")
            {
                HuggingFaceMask2Former.Export(c, path);
                return "a Hugging Face Mask2Former folder (config.json, model.safetensors, preprocessor_config.json) "
                    + "that transformers' from_pretrained reads";
            }
            if (wanted == PyTorchLayout.HuggingFace)
            {
                HuggingFaceSegformer.Export(c, path);
                return "a Hugging Face SegFormer folder (config.json, model.safetensors, preprocessor_config.json) "
                    + "that transformers' "
                    + "from_pretrained reads";
            }
            if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) != safetensors)
                throw new OptionsException($"--out {path}: name a {Format} file (*{Extension}).");
            var layout = options.Layout ?? (c.Model.Encoder.Name == "unet" ? PyTorchLayout.Milesial
                : PyTorchLayout.Smp);
            PyTorchInterop.Export(c, path, layout);
            bool milesial = layout == PyTorchLayout.Milesial;
            var names = milesial ? "milesial/Pytorch-UNet's UNet(bilinear=False)"
                : "segmentation_models.pytorch's Unet";
            return $"the weights under {names} names; "
                + $"inputs {(milesial ? "pixel / 255" : "ImageNet-normalised")} in the source, ours: "
                + $"{c.Preprocessing.Normalization}";
        }
    }
}
