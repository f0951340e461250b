using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Heads;
using static TorchSharp.torch;

namespace Segmentation.Checkpoints;

/// <summary>
/// A Hugging Face Mask2Former model folder (what <c>save_pretrained</c> writes for
/// <c>Mask2FormerForUniversalSegmentation</c> on a Swin backbone) as a checkpoint of ours, and back. The model from
/// <c>config.json</c> (the backbone's <c>SwinConfig</c>, the pixel decoder's and the transformer decoder's widths,
/// layers and heads, the queries, the classes), the weights from <c>model.safetensors</c> or <c>pytorch_model.bin</c>
/// by name (<c>model.pixel_level_module.encoder.</c> is our encoder's, <c>model.pixel_level_module.decoder.</c> our
/// pixel decoder's, <c>model.transformer_module.</c> and <c>class_predictor.</c> our head's; the loss's
/// <c>criterion.empty_weight</c> is left out), the preprocessing from <c>preprocessor_config.json</c>. The query and
/// class counts, the widths and the layer counts the config gives are checked against the tensors before the model is
/// built: a folder whose config disagrees with its weights is refused, naming the key and both shapes. Files are read
/// as data; nothing in them runs.
/// </summary>
public static class HuggingFaceMask2Former
{
    private const string Encoder = "model.pixel_level_module.encoder.", Decoder = "model.pixel_level_module.decoder.",
        Transformer = "model.transformer_module.", Classifier = "class_predictor.";

    /// <summary>Whether a config.json is a Mask2Former's (its model_type).</summary>
    public static bool Is(JsonObject config) => config["model_type"]?.GetValue<string>() == "mask2former";

    /// <summary>Reads the folder; any problem is an error that names the file and what did not fit.</summary>
    public static Checkpoint Import(string folder, bool allowNonFinite = false, IProgress<string>? warnings = null)
    {
        var (config, configPath) = HuggingFaceSegformer.ReadConfig(folder);
        var description = Describe(config, configPath);
        var weightsPath = SegformerWeights.FileIn(folder);
        using var scope = NewDisposeScope();
        var weights = ToOurs(StateDicts.ReadFile(weightsPath, allowNonFinite, warnings), weightsPath);
        RefuseMisfits(description, config, weights, configPath, weightsPath); // before anything is built
        var (dataset, normalization) = HuggingFaceSegformer.Ours(config, configPath, description, warnings);
        return PyTorchInterop.ImportedCheckpoint(description, weights,
            $"{weightsPath} (Hugging Face Mask2Former weights)",
            HuggingFaceSegformer.ClassNames(config, description.Classes),
            normalization ?? HuggingFaceSegformer.Preprocess(Path.Combine(folder, "preprocessor_config.json"),
                description.InChannels),
            $"imported from {Path.GetFullPath(folder)} (Hugging Face Mask2Former)", dataset);
    }

    /// <summary>The description <paramref name="config"/> gives; what this library cannot build (another backbone, a
    /// hidden width other than the feature size) is refused, naming the key.</summary>
    internal static ModelDescription Describe(JsonObject config, string path)
    {
        if (!Is(config))
            throw new SegmentationException($"{path}: model_type '{config["model_type"]}'; expected mask2former.");
        var backbone = config["backbone_config"] as JsonObject ?? throw new SegmentationException(
            $"{path}: no backbone_config; a Mask2Former names its backbone's.");
        string kind = backbone["model_type"]?.GetValue<string>() ?? "";
        if (kind != "swin")
            throw new SegmentationException($"{path}: backbone_config.model_type is '{kind}'; Mask2Formers on Swin "
                + "backbones import (a ResNet's keys are Hugging Face's own, not torchvision's as this library's "
                + "ResNets).");
        int Int(JsonObject o, string key, int fallback) => o[key]?.GetValue<int>() ?? fallback;
        int[] Ints(JsonObject o, string key) => o[key] is JsonArray a ? a.Select(x => x!.GetValue<int>()).ToArray()
            : throw new SegmentationException($"{path}: backbone_config has no '{key}' list.");
        int feature = Int(config, "feature_size", 256), hidden = Int(config, "hidden_dim", 256);
        if (hidden != feature)
            throw new SegmentationException($"{path}: hidden_dim {hidden} differs from feature_size {feature}; "
                + "transformers then projects the pixel decoder's maps with convolutions it does not save "
                + "(enforce_input_projection's list is not a module), so such a model cannot be read back.");
        int classes = config["id2label"] is JsonObject labels ? labels.Count : config["num_labels"]?.GetValue<int>()
            ?? throw new SegmentationException($"{path}: neither id2label nor num_labels says how many classes.");
        if (classes is < 1 or > HuggingFaceSegformer.MaxClasses)
            throw new SegmentationException($"{path}: {classes:N0} classes (id2label or num_labels); a model of this "
                + $"library has 1 to {HuggingFaceSegformer.MaxClasses}.");
        var embed = Int(backbone, "embed_dim", 96);
        var depths = Ints(backbone, "depths");
        var heads = Ints(backbone, "num_heads");
        int window = Int(backbone, "window_size", 7);
        var variant = SwinShape.Variants.FirstOrDefault(v => SwinShape.Of(v, window) is var s && s.EmbedDim == embed
            && s.Depths.SequenceEqual(depths) && s.Heads.SequenceEqual(heads));
        int attentionHeads = Int(config, "num_attention_heads", 8);
        try
        {
            return new ModelDescription
            {
                Architecture = "mask2former", InChannels = Int(backbone, "num_channels", 3), Classes = classes,
                Encoder = ModelPart.Of(variant ?? "swin-tiny", new SwinOptions
                {
                    DropPathRate = backbone["drop_path_rate"]?.GetValue<double>() ?? 0.1, WindowSize = window,
                    EmbedDim = variant is null ? embed : null, Depths = variant is null ? depths : null,
                    Heads = variant is null ? heads : null,
                }),
                Decoder = ModelPart.Of(Mask2FormerPixelDecoder.Name, new Mask2FormerPixelDecoderOptions
                {
                    FeatureSize = feature, MaskFeatureSize = Int(config, "mask_feature_size", 256),
                    Heads = attentionHeads, Layers = Int(config, "encoder_layers", 6),
                    FeedForward = Int(config, "encoder_feedforward_dim", 1024),
                }),
                Head = ModelPart.Of("mask2former", new Mask2FormerHeadOptions
                {
                    Queries = Int(config, "num_queries", 100), Layers = Int(config, "decoder_layers", 10) - 1,
                    Heads = attentionHeads, FeedForward = Int(config, "dim_feedforward", 2048),
                }),
            }.Resolve();
        }
        catch (OptionsException e)
        {
            throw new SegmentationException($"{path}: {e.Message}", e);
        }
    }

    /// <summary>Hugging Face's keys as ours; any key of neither the model nor its loss is an error.</summary>
    internal static Dictionary<string, Tensor> ToOurs(Dictionary<string, Tensor> source, string path)
    {
        var ours = new Dictionary<string, Tensor>();
        foreach (var (key, value) in source)
        {
            string? mapped = key.StartsWith(Encoder, StringComparison.Ordinal) ? "encoder." + key[Encoder.Length..]
                : key.StartsWith(Decoder, StringComparison.Ordinal) ? "decoder." + key[Decoder.Length..]
                : key.StartsWith(Transformer, StringComparison.Ordinal) ? "head.transformer_module."
                    + key[Transformer.Length..]
                : key.StartsWith(Classifier, StringComparison.Ordinal) ? "head." + key
                : key.StartsWith("criterion.", StringComparison.Ordinal) ? null
                : throw new SegmentationException($"{path}: '{key}' is not a key of a Mask2Former "
                    + "(model.pixel_level_module., model.transformer_module., class_predictor., criterion.).");
            if (mapped is not null) ours[mapped] = value;
        }
        return ours;
    }

    /// <summary>Ours as Hugging Face's.</summary>
    internal static Dictionary<string, Tensor> ToHuggingFace(IReadOnlyDictionary<string, Tensor> ours) =>
        ours.ToDictionary(kv => HuggingFaceName(kv.Key), kv => kv.Value);

    /// <summary>One key of ours as Hugging Face's.</summary>
    private static string HuggingFaceName(string key) => key switch
    {
        var k when k.StartsWith("encoder.", StringComparison.Ordinal) => Encoder + k["encoder.".Length..],
        var k when k.StartsWith("decoder.", StringComparison.Ordinal) => Decoder + k["decoder.".Length..],
        var k when k.StartsWith("head.transformer_module.", StringComparison.Ordinal) => Transformer
            + k["head.transformer_module.".Length..],
        var k => k.StartsWith("head.", StringComparison.Ordinal) ? k["head.".Length..]
            : throw new InvalidOperationException($"'{k}' is not a Mask2Former key of ours."),
    };

    /// <summary>
    /// The counts the config gives against the tensors that hold them, before a model is built: the queries
    /// (<c>queries_features</c>), the classes and the hidden width (<c>class_predictor</c>), the mask features
    /// (<c>mask_projection</c>), the layers of both decoders (their last layer's key present, the next one's absent).
    /// A misfit names the config's key and value and the tensor's key and shape.
    /// </summary>
    private static void RefuseMisfits(ModelDescription d, JsonObject config, Dictionary<string, Tensor> weights,
        string configPath, string weightsPath)
    {
        var head = d.Head!.OptionsAs<Mask2FormerHeadOptions>();
        var pixel = d.Decoder!.OptionsAs<Mask2FormerPixelDecoderOptions>();
        void Expect(string key, long[] shape, string said)
        {
            if (!weights.TryGetValue(key, out var t))
                throw new SegmentationException($"{weightsPath}: no '{HuggingFaceName(key)}', which {configPath}'s "
                    + $"{said} needs.");
            if (!t.shape.SequenceEqual(shape))
                throw new SegmentationException($"{configPath}: {said}, so '{HuggingFaceName(key)}' would be "
                    + $"[{string.Join(", ", shape)}]; {weightsPath} holds [{string.Join(", ", t.shape)}].");
        }
        Expect("head.transformer_module.queries_features.weight", new long[] { head.Queries, pixel.FeatureSize },
            $"num_queries is {head.Queries} and hidden_dim {pixel.FeatureSize}");
        Expect("head.class_predictor.weight", new long[] { d.Classes + 1, pixel.FeatureSize },
            $"{(config["id2label"] is null ? "num_labels" : "id2label")} gives {d.Classes} classes (and no object) "
                + $"and hidden_dim is {pixel.FeatureSize}");
        var swin = SwinShape.Of(d.Encoder.Name, d.Encoder.OptionsAs<SwinOptions>());
        long table = (2L * swin.Window - 1) * (2L * swin.Window - 1);
        Expect("encoder.encoder.layers.0.blocks.0.attention.self.relative_position_bias_table",
            new long[] { table, swin.Heads[0] }, $"backbone_config's window_size is {swin.Window} (position tables "
                + "are not resized) and num_heads[0] {swin.Heads[0]}");
        Expect("decoder.mask_projection.weight", new long[] { pixel.MaskFeatureSize, pixel.FeatureSize, 1, 1 },
            $"mask_feature_size is {pixel.MaskFeatureSize} and feature_size {pixel.FeatureSize}");
        void Layers(string prefix, int count, string key)
        {
            bool last = count == 0 || weights.Keys.Any(k => k.StartsWith($"{prefix}{count - 1}.", StringComparison
                .Ordinal));
            bool more = weights.Keys.Any(k => k.StartsWith($"{prefix}{count}.", StringComparison.Ordinal));
            if (!last || more)
                throw new SegmentationException($"{configPath}: {key} says {count} layer(s) (under "
                    + $"{HuggingFaceName(prefix)[..^1]}); {weightsPath} holds {(more ? "more" : "fewer")}.");
        }
        Layers("decoder.encoder.layers.", pixel.Layers, $"encoder_layers {pixel.Layers}");
        Layers("head.transformer_module.decoder.layers.", head.Layers, $"decoder_layers {head.Layers + 1} (the "
            + "first prediction's own)");
    }

    /// <summary>
    /// Writes <paramref name="checkpoint"/> (a Mask2Former on a Swin) as a Hugging Face model folder:
    /// <c>config.json</c> (a <c>Mask2FormerConfig</c> with its <c>SwinConfig</c>, the classes, and our own settings
    /// under <c>segmentation</c>), <c>model.safetensors</c> under transformers' names, and
    /// <c>preprocessor_config.json</c>. The folder must be new or empty.
    /// </summary>
    public static void Export(Checkpoint checkpoint, string folder)
    {
        var d = checkpoint.Model;
        if (d.Architecture != "mask2former" || !d.Encoder.Name.StartsWith("swin-", StringComparison.Ordinal)
            || d.Head?.Name != "mask2former" || d.Decoder?.Name != Mask2FormerPixelDecoder.Name)
            throw new OptionsException($"The Hugging Face layout holds Mask2Formers on Swin backbones; this "
                + $"checkpoint's model is {d.Summary}.");
        if (Directory.Exists(folder) && Directory.EnumerateFileSystemEntries(folder).Any())
            throw new OptionsException($"{folder}: the folder is not empty; export writes a new Hugging Face model "
                + "folder.");
        var config = Config(checkpoint);
        using var scope = NewDisposeScope();
        using var model = checkpoint.CreateModel();
        var weights = ToHuggingFace(model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.cpu()));
        HuggingFaceSegformer.WriteFolder(checkpoint, folder, config, weights, "Mask2FormerImageProcessor");
    }

    /// <summary>The config.json of <paramref name="c"/>'s model.</summary>
    private static JsonObject Config(Checkpoint c)
    {
        var d = c.Model;
        var swin = d.Encoder.OptionsAs<SwinOptions>();
        var shape = SwinShape.Of(d.Encoder.Name, swin);
        var pixel = d.Decoder!.OptionsAs<Mask2FormerPixelDecoderOptions>();
        var head = d.Head!.OptionsAs<Mask2FormerHeadOptions>();
        var names = c.Dataset.ClassNames.Take(d.Classes).ToArray();
        static JsonArray Array(IEnumerable<int> v) => new(v.Select(x => (JsonNode?)x).ToArray());
        return new JsonObject
        {
            ["architectures"] = new JsonArray("Mask2FormerForUniversalSegmentation"), ["model_type"] = "mask2former",
            ["backbone_config"] = new JsonObject
            {
                ["model_type"] = "swin", ["embed_dim"] = shape.EmbedDim, ["depths"] = Array(shape.Depths),
                ["num_heads"] = Array(shape.Heads), ["window_size"] = shape.Window, ["num_channels"] = d.InChannels,
                ["patch_size"] = 4, ["mlp_ratio"] = 4.0, ["qkv_bias"] = true, ["hidden_act"] = "gelu",
                ["layer_norm_eps"] = 1e-5, ["drop_path_rate"] = swin.DropPathRate,
                ["out_features"] = new JsonArray("stage1", "stage2", "stage3", "stage4"),
            },
            ["feature_size"] = pixel.FeatureSize, ["mask_feature_size"] = pixel.MaskFeatureSize,
            ["hidden_dim"] = pixel.FeatureSize, ["encoder_feedforward_dim"] = pixel.FeedForward,
            ["activation_function"] = "relu", ["encoder_layers"] = pixel.Layers, ["decoder_layers"] = head.Layers + 1,
            ["num_attention_heads"] = head.Heads, ["dropout"] = 0.0, ["dim_feedforward"] = head.FeedForward,
            ["pre_norm"] = false, ["enforce_input_projection"] = false, ["common_stride"] = 4,
            ["ignore_value"] = Labels.Ignore, ["num_queries"] = head.Queries, ["no_object_weight"] = 0.1,
            ["class_weight"] = 2.0, ["mask_weight"] = 5.0, ["dice_weight"] = 5.0, ["train_num_points"] = 12544,
            ["oversample_ratio"] = 3.0, ["importance_sample_ratio"] = 0.75, ["use_auxiliary_loss"] = true,
            ["feature_strides"] = Array(new[] { 4, 8, 16, 32 }),
            ["id2label"] = new JsonObject(names.Select((n, i) => KeyValuePair.Create(
                i.ToString(CultureInfo.InvariantCulture), (JsonNode?)n))),
            ["label2id"] = new JsonObject(names.Select((n, i) => KeyValuePair.Create(n, (JsonNode?)i))
                .DistinctBy(kv => kv.Key)),
            [HuggingFaceSegformer.OwnKey] = new JsonObject
            {
                ["dataset"] = c.Dataset.ToJson(),
                ["normalization"] = JsonSerializer.SerializeToNode(c.Preprocessing.Normalization, Checkpoint.Json),
            },
        };
    }
}
