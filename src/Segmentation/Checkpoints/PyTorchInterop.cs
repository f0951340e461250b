using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Segmentation.Checkpoints;

/// <summary>The Python model classes whose state dicts map onto ours key for key.</summary>
public enum PyTorchLayout
{
    /// <summary>milesial/Pytorch-UNet's <c>UNet(n_channels, n_classes, bilinear=False)</c>; inputs pixel /
    /// 255.</summary>
    Milesial,
    /// <summary>segmentation_models.pytorch's <c>Unet(encoder_name="resnet18|34|50")</c>; inputs ImageNet-normalised.
    /// Export writes any model on a torchvision-style encoder under its own keys, which are smp's (Unet, FPN) and
    /// torchvision's (ResNet, ConvNeXt).</summary>
    Smp,
    /// <summary>Hugging Face's <c>SegformerForSemanticSegmentation</c>: a model folder (<see
    /// cref="HuggingFaceSegformer"/>).</summary>
    HuggingFace,
    /// <summary>A SegFormer state dict file in the original layout of NVlabs/SegFormer and mmsegmentation 0.x
    /// (<c>patch_embed1</c>, <c>block1</c>, fused <c>attn.kv</c>) or in Hugging Face's; inputs ImageNet-normalised
    /// (<see cref="HuggingFaceSegformer.ImportStateDict"/>).</summary>
    Segformer,
}

/// <summary>
/// PyTorch weights in and out. <see cref="Import"/> reads a state dict saved by PyTorch (<c>.pth</c>, read as data
/// by TorchSharp.PyBridge: tensors and the dictionaries around them, never other objects; or <c>.safetensors</c>),
/// maps its keys onto our model's, infers the model's shape from the tensors, and makes a checkpoint that records the
/// source's preprocessing, so prediction gives the source's masks. <see cref="Export"/> writes the reverse, loadable
/// with
/// <c>torch.load(..., weights_only=True)</c> or <c>safetensors.torch.load_file</c> into the same Python classes.
/// </summary>
public static class PyTorchInterop
{
    // milesial's DoubleConv is nn.Sequential(conv, bn, relu, conv, bn, relu): indices 0, 1, 3, 4 hold weights.
    private static readonly Dictionary<string, string> MilesialIndex = new() { ["0"] = "conv1", ["1"] = "norm1",
        ["3"] = "conv2", ["4"] = "norm2" };
    private static readonly Dictionary<string, string> OursIndex = MilesialIndex.ToDictionary(kv => kv.Value,
        kv => kv.Key);

    /// <summary>Our key for a milesial key (null: not one of milesial's).</summary>
    internal static string? FromMilesial(string key)
    {
        Match m;
        if ((m = Regex.Match(key, @"^inc\.double_conv\.(\d)\.(.+)$")).Success
            && MilesialIndex.TryGetValue(m.Groups[1].Value, out var a))
            return $"encoder.stem.block.{a}.{m.Groups[2].Value}";
        if ((m = Regex.Match(key, @"^down(\d+)\.maxpool_conv\.1\.double_conv\.(\d)\.(.+)$")).Success
            && MilesialIndex.TryGetValue(m.Groups[2].Value, out var b))
            return $"encoder.blocks.{int.Parse(m.Groups[1].Value) - 1}.conv.block.{b}.{m.Groups[3].Value}";
        if ((m = Regex.Match(key, @"^up(\d+)\.up\.(weight|bias)$")).Success)
            return $"decoder.blocks.{int.Parse(m.Groups[1].Value) - 1}.up.{m.Groups[2].Value}";
        if ((m = Regex.Match(key, @"^up(\d+)\.conv\.double_conv\.(\d)\.(.+)$")).Success
            && MilesialIndex.TryGetValue(m.Groups[2].Value, out var c))
            return $"decoder.blocks.{int.Parse(m.Groups[1].Value) - 1}.conv.block.{c}.{m.Groups[3].Value}";
        if ((m = Regex.Match(key, @"^outc\.conv\.(weight|bias)$")).Success) return $"head.{m.Groups[1].Value}";
        return null;
    }

    /// <summary>milesial's key for one of ours (null: ours has no milesial counterpart).</summary>
    internal static string? ToMilesial(string key)
    {
        Match m;
        if ((m = Regex.Match(key, @"^encoder\.stem\.block\.(conv1|norm1|conv2|norm2)\.(.+)$")).Success)
            return $"inc.double_conv.{OursIndex[m.Groups[1].Value]}.{m.Groups[2].Value}";
        if ((m = Regex.Match(key, @"^encoder\.blocks\.(\d+)\.conv\.block\.(conv1|norm1|conv2|norm2)\.(.+)$")).Success)
            return $"down{int.Parse(m.Groups[1].Value) + 1}.maxpool_conv.1.double_conv."
                + $"{OursIndex[m.Groups[2].Value]}.{m.Groups[3].Value}";
        if ((m = Regex.Match(key, @"^decoder\.blocks\.(\d+)\.up\.(weight|bias)$")).Success)
            return $"up{int.Parse(m.Groups[1].Value) + 1}.up.{m.Groups[2].Value}";
        if ((m = Regex.Match(key, @"^decoder\.blocks\.(\d+)\.conv\.block\.(conv1|norm1|conv2|norm2)\.(.+)$")).Success)
            return $"up{int.Parse(m.Groups[1].Value) + 1}.conv.double_conv."
                + $"{OursIndex[m.Groups[2].Value]}.{m.Groups[3].Value}";
        if ((m = Regex.Match(key, @"^head\.(weight|bias)$")).Success) return $"outc.conv.{m.Groups[1].Value}";
        return null;
    }

    /// <summary>
    /// Reads a PyTorch state dict of <paramref name="layout"/> into a checkpoint; problems are errors naming the file
    /// and the keys. Weights with NaN or infinite values are refused unless <paramref name="allowNonFinite"/>, which
    /// reports them through <paramref name="warnings"/>.
    /// </summary>
    public static Checkpoint Import(string path, PyTorchLayout layout, bool allowNonFinite = false,
        IProgress<string>? warnings = null)
    {
        // a model folder, or a weights file in one (its config.json beside it)
        if (layout == PyTorchLayout.HuggingFace)
        {
            var folder = File.Exists(path) ? Path.GetDirectoryName(Path.GetFullPath(path))! : path;
            return HuggingFaceMask2Former.Is(HuggingFaceSegformer.ReadConfig(folder).Config)
                ? HuggingFaceMask2Former.Import(folder, allowNonFinite, warnings)
                : HuggingFaceSegformer.Import(folder, allowNonFinite, warnings);
        }
        if (layout == PyTorchLayout.Segformer)
            return HuggingFaceSegformer.ImportStateDict(path, allowNonFinite, warnings);
        using var scope = NewDisposeScope();
        var source = StateDicts.ReadFile(path, allowNonFinite, warnings);
        var (description, weights, normalization) = layout == PyTorchLayout.Milesial ? Milesial(path, source)
            : Smp(path, source);
        return ImportedCheckpoint(description, weights, $"{path} ({layout} state dict, mapped to ours)",
            DatasetDescription.Defaults(description.Classes).Names.ToArray(), normalization,
            $"imported from {Path.GetFullPath(path)} ({layout})");
    }

    /// <summary>
    /// The checkpoint of an imported model: <paramref name="weights"/> (the model's own keys) loaded into the model
    /// <paramref name="description"/> names (an error naming <paramref name="what"/> when they do not fit), index masks
    /// of those class names in the default colours, the source's normalisation, no training state.
    /// </summary>
    internal static Checkpoint ImportedCheckpoint(ModelDescription description, IReadOnlyDictionary<string,
        Tensor> weights,
        string what, string[] names, Normalization normalization, string origin, DatasetDescription? dataset = null)
    {
        using var model = new SegmentationModel(description);
        StateDicts.Load(model, weights, what);
        return new Checkpoint
        {
            Model = model.Description,
            Dataset = dataset ?? new DatasetDescription
            {
                Classes = description.Classes, ClassNames = names,
                    ClassColors = DatasetDescription.Defaults(description.Classes).Colors,
                Encoding = MaskEncoding.Index, InChannels = description.InChannels,
            },
            Preprocessing = new Preprocessing(normalization),
            TrainerSettings = new JsonObject(), State = new TrainingState(), TrainOrigin = origin,
            Weights = Checkpoint.SerializeWeights(model),
        };
    }

    private static (ModelDescription, Dictionary<string, Tensor>, Normalization) Milesial(string path,
        Dictionary<string, Tensor> source)
    {
        if (!source.ContainsKey("up1.up.weight") && source.ContainsKey("up1.conv.double_conv.0.weight"))
            throw new SegmentationException($"{path}: a milesial UNet with bilinear=True (its up blocks have no "
                + $"weights); only bilinear=False maps onto this library's U-Net.");
        var unknown = source.Keys.Where(k => FromMilesial(k) is null).ToList();
        if (unknown.Count > 0)
            throw new SegmentationException($"{path}: {unknown.Count} key(s) are not milesial/Pytorch-UNet's: "
                + $"{string.Join(", ", unknown.Take(5))}{(unknown.Count > 5 ? ", ..." : "")}.");
        var first = Need(path, source, "inc.double_conv.0.weight");
        var head = Need(path, source, "outc.conv.weight");
        int depth = source.Keys.Select(k => Regex.Match(k, @"^down(\d+)\.")).Where(m => m.Success)
            .Select(m => int.Parse(m.Groups[1].Value)).DefaultIfEmpty(0).Max();
        var options = new ModelDescription
        {
            InChannels = (int)first.shape[1], Classes = (int)head.shape[0],
            Encoder = ModelPart.Of("unet", new UNetEncoderOptions { BaseChannels = (int)first.shape[0],
                Depth = depth }),
        }.Resolve();
        var weights = source.ToDictionary(kv => FromMilesial(kv.Key)!, kv => kv.Value);
        var zero = Enumerable.Repeat(0f, options.InChannels).ToArray();
        return (options, weights, new Normalization(zero, Enumerable.Repeat(1f, options.InChannels).ToArray()));
    }

    private static (ModelDescription, Dictionary<string, Tensor>, Normalization) Smp(string path, Dictionary<string,
        Tensor> source)
    {
        var first = Need(path, source, "encoder.conv1.weight");
        var head = Need(path, source, "segmentation_head.0.weight");
        var blocks = Enumerable.Range(1, 4)
            .Select(l => source.Keys.Select(k => Regex.Match(k, $@"^encoder\.layer{l}\.(\d+)\.")).Where(m => m.Success)
                .Select(m => m.Groups[1].Value).Distinct().Count()).ToArray();
        bool bottleneck = source.Keys.Any(k => k.Contains(".conv3.", StringComparison.Ordinal));
        var kind = ResNetEncoder.Layouts.Where(l => l.Blocks.SequenceEqual(blocks) && l.Bottleneck == bottleneck)
            .Select(l => l.Name).FirstOrDefault()
            ?? throw new SegmentationException($"{path}: an encoder with blocks "
            + $"{string.Join("-", blocks)}{(bottleneck ? " (bottlenecks)" : "")}; this library has smp's resnet18 "
            + $"(2-2-2-2), resnet34 (3-4-6-3) and resnet50 (3-4-6-3, bottlenecks).");
        var decoder = Enumerable.Range(0, 5).Select(i => (int)Need(path, source, $"decoder.blocks.{i}.conv1.0.weight")
            .shape[0]).ToArray();
        var options = new ModelDescription
        {
            Encoder = new ModelPart(kind), InChannels = (int)first.shape[1], Classes = (int)head.shape[0],
            Decoder = ModelPart.Of("smp-unet", new SmpUNetDecoderOptions { Channels = decoder }),
        }.Resolve();
        return (options, source, Normalization.DefaultFor(options.InChannels));
    }

    /// <summary>The model must be one the layout's class can hold; otherwise an error that says how it
    /// differs.</summary>
    private static void CheckLayout(ModelDescription d, PyTorchLayout layout)
    {
        if (layout == PyTorchLayout.Milesial)
        {
            var milesial = new ModelDescription { InChannels = d.InChannels, Classes = d.Classes,
                Seed = d.Seed }.Resolve();
            if (d.Encoder.Name != "unet" || d.Decoder?.Name != "unet" || d.Head?.Name != "conv")
                throw new OptionsException($"milesial's UNet(bilinear=False) is the plain U-Net; this checkpoint's "
                    + $"model is {d.Summary}.");
            if (!d.Encoder.Equals(milesial.Encoder) || !d.Decoder!.Equals(milesial.Decoder)
                || !d.Head!.Equals(milesial.Head))
                throw new OptionsException("milesial's UNet class has 64 base channels and depth 4, batch norm and "
                    + "transposed upsampling; this checkpoint's "
                    + $"model has encoder {d.Encoder}, decoder {d.Decoder} (the keys might map, but its class could "
                    + $"not take them).");
        }
        else if (d.Encoder.Name == "unet" || d.Architecture == "segformer"
            || d.Encoder.Name.StartsWith("mit-b", StringComparison.Ordinal))
            throw new OptionsException($"segmentation_models.pytorch's layout holds a torchvision-style encoder "
                + $"(resnet*, convnext-tiny) with smp's decoder and head (Unet, FPN); this checkpoint's model is "
                + $"{d.Summary}: export the paper's U-Net with --layout milesial, SegFormer with --layout hf.");
        else if (d.Decoder?.Name == "smp-unet" && d.Decoder.OptionsAs<SmpUNetDecoderOptions>()
            .FullResolutionChannels > 0)
            throw new OptionsException($"smp's Unet has no full-resolution skip; this checkpoint's decoder has one "
                + $"({d.Decoder}).");
    }

    private static Tensor Need(string path, Dictionary<string, Tensor> source, string key) =>
        source.TryGetValue(key, out var t) ? t
            : throw new SegmentationException($"{path}: no '{key}'; is it a state dict of that model?");

    /// <summary>
    /// Writes the checkpoint's weights with <paramref name="layout"/>'s key names: a PyTorch <c>.pth</c>, or a
    /// <c>.safetensors</c> file when the path ends so. The model must be one that layout describes.
    /// </summary>
    public static void Export(Checkpoint checkpoint, string path, PyTorchLayout layout)
    {
        CheckLayout(checkpoint.Model, layout);
        using var scope = NewDisposeScope();
        using var model = checkpoint.CreateModel();
        var dict = model.state_dict().ToDictionary(kv => layout == PyTorchLayout.Milesial ? ToMilesial(kv.Key)
            ?? throw new InvalidOperationException($"no milesial key for {kv.Key}") : kv.Key, kv => kv.Value.cpu());
        bool safetensors = path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase);
        var bytes = new MemoryStream(); // PyBridge closes the stream it writes to
        if (safetensors) Safetensors.SaveStateDict(bytes, dict);
        else PyTorchPickler.PickleStateDict(bytes, dict);
        AtomicFile.Write(path, stream => stream.Write(bytes.ToArray()));
    }
}
