using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using static TorchSharp.torch;

namespace Segmentation.Checkpoints;

/// <summary>
/// A Hugging Face SegFormer model folder (what <c>save_pretrained</c> writes for
/// <c>SegformerForSemanticSegmentation</c>) as a checkpoint of ours: the variant, the decoder's width and the classes
/// from <c>config.json</c>, the weights from <c>model.safetensors</c> or <c>pytorch_model.bin</c> by name (the model's
/// keys are Hugging Face's), and the preprocessing from <c>preprocessor_config.json</c> (otherwise rescale 1/255 and
/// ImageNet's mean and std, no resize). Files are read as data; nothing in them runs.
/// </summary>
public static class HuggingFaceSegformer
{
    /// <summary>Reads the folder; any problem is an error that names the file and what did not fit. NaN or infinite
    /// weights are refused unless <paramref name="allowNonFinite"/> (then reported through <paramref
    /// name="warnings"/>).</summary>
    public static Checkpoint Import(string folder, bool allowNonFinite = false, IProgress<string>? warnings = null)
    {
        var (config, configPath) = ReadConfig(folder);
        var description = Describe(config, configPath);
        var weightsPath = SegformerWeights.FileIn(folder);
        using var scope = NewDisposeScope();
        var weights = SegformerWeights.ToHuggingFace(StateDicts.ReadFile(weightsPath, allowNonFinite, warnings),
            weightsPath);
        if (!SegformerWeights.HasDecodeHead(weights)
            || config["architectures"] is JsonArray a && a.Any(x => x?.ToString() == "SegformerForImageClassification"))
            throw new SegmentationException($"{folder}: an encoder-only SegFormer (ImageNet-trained, like "
                + $"nvidia/{description.Encoder.Name}), with no decode head to import; start a model from it with "
                + $"segment train --arch segformer --encoder {description.Encoder.Name} --encoder-weights {folder}.");
        // before anything is built for them (a head, names, colours): masks are 8-bit
        if (description.Classes is < 1 or > MaxClasses)
            throw new SegmentationException($"{configPath}: {description.Classes:N0} classes (id2label or num_labels); "
                + $"a model of this library has 1 to {MaxClasses}.");
        var (dataset, normalization) = Ours(config, configPath, description, warnings);
        return PyTorchInterop.ImportedCheckpoint(description, weights,
            $"{weightsPath} (Hugging Face SegFormer weights)",
            ClassNames(config, description.Classes),
            normalization ?? Preprocess(Path.Combine(folder, "preprocessor_config.json"), description.InChannels),
            $"imported from {Path.GetFullPath(folder)} (Hugging Face SegFormer)", dataset);
    }

    /// <summary>A Hugging Face model folder's config.json, and its path; an error names the folder or the
    /// file.</summary>
    internal static (JsonObject Config, string Path) ReadConfig(string folder)
    {
        var configPath = Path.Combine(folder, "config.json");
        if (!File.Exists(configPath))
            throw new SegmentationException($"{folder}: no config.json; a Hugging Face model folder has one.");
        try
        {
            return (JsonNode.Parse(RegularFile.ReadAllText(configPath, Limits.ConfigFileBytes, "model config"))
                ?.AsObject() ?? throw new JsonException("empty"), configPath);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or InvalidDataException
            or IOException)
        {
            throw new SegmentationException($"{configPath}: not a JSON object ({e.Message}).", e);
        }
    }

    /// <summary>The key of our own in config.json: what transformers' config has no field for (the task, the instance
    /// decoding, the class colours, the per-image normalisation).</summary>
    public const string OwnKey = "segmentation";

    /// <summary>
    /// Our settings from config.json's <see cref="OwnKey"/>, checked against the model (classes and channels); a
    /// folder without them imports as a semantic model, and <paramref name="warnings"/> says so.
    /// </summary>
    internal static (DatasetDescription?, Normalization?) Ours(JsonObject config, string path,
        ModelDescription model, IProgress<string>? warnings)
    {
        if (config[OwnKey] is not JsonObject ours)
        {
            warnings?.Report($"{path}: no '{OwnKey}' settings (a folder not written by 'segment export'): imported as "
                + $"a semantic model, normalised as preprocessor_config.json says");
            return (null, null);
        }
        try
        {
            var dataset = DatasetDescription.FromJson(ours["dataset"]!.AsObject());
            var normalization = ours["normalization"].Deserialize<Normalization>(Checkpoint.Json)!;
            normalization.Validate(model.InChannels);
            // a mask classifier of instance data predicts its classes without the per-pixel task's boundary
            bool queries = ModelRegistry.OutputKinds(model).Contains(OutputKind.QueryClassLogits);
            if (dataset.Classes != model.Classes && !(queries && dataset.Classes == model.Classes + 1)
                || dataset.InChannels != model.InChannels)
                throw new FormatException($"{dataset.Classes} classes and {dataset.InChannels} channels for a model of "
                    + $"{model.Classes} and {model.InChannels}");
            return (dataset, normalization);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or NullReferenceException
            or FormatException or ArgumentException or KeyNotFoundException or OptionsException)
        {
            throw new SegmentationException($"{path}: '{OwnKey}' cannot be read ({e.Message}).", e);
        }
    }

    /// <summary>
    /// Reads a SegFormer state dict file (<c>.pth</c>, <c>.bin</c> or <c>.safetensors</c>) in the original layout of
    /// NVlabs/SegFormer and mmsegmentation 0.x (<c>patch_embed1</c>, <c>block1</c>, fused <c>attn.kv</c>, ...;
    /// <see cref="SegformerWeights"/>) or in Hugging Face's, without a config: the variant, decoder width and classes
    /// come from the tensors' shapes, the normalisation is ImageNet's (what those models were trained with).
    /// </summary>
    public static Checkpoint ImportStateDict(string path, bool allowNonFinite = false,
        IProgress<string>? warnings = null)
    {
        using var scope = NewDisposeScope();
        var weights = SegformerWeights.ToHuggingFace(StateDicts.ReadFile(path, allowNonFinite, warnings), path);
        var description = SegformerWeights.Describe(weights, path);
        return PyTorchInterop.ImportedCheckpoint(description, weights, $"{path} (SegFormer state dict)",
            DatasetDescription.Defaults(description.Classes).Names.ToArray(),
            Normalization.DefaultFor(description.InChannels), $"imported from {Path.GetFullPath(path)} (SegFormer)");
    }

    /// <summary>The description <paramref name="config"/> gives: the Mix Transformer whose widths and depths it
    /// names.</summary>
    private static ModelDescription Describe(JsonObject config, string path)
    {
        int[] Ints(string key) => config[key] is JsonArray a ? a.Select(x => x!.GetValue<int>()).ToArray()
            : throw new SegmentationException($"{path}: no '{key}' list; is it a SegFormer config?");
        var hidden = Ints("hidden_sizes");
        var depths = Ints("depths");
        var variant = MixTransformer.Variants
            .FirstOrDefault(v => MixTransformer.Variant(v).Hidden.SequenceEqual(hidden) && MixTransformer.Variant(v)
                .Depths.SequenceEqual(depths))
            ?? throw new SegmentationException($"{path}: hidden sizes [{string.Join(", ", hidden)}] and depths "
            + $"[{string.Join(", ", depths)}] "
                + "are none of MiT-B0 to B5.");
        int classes = config["id2label"] is JsonObject labels ? labels.Count : config["num_labels"]?.GetValue<int>()
            ?? throw new SegmentationException($"{path}: neither id2label nor num_labels says how many classes.");

        return new ModelDescription
        {
            Architecture = "segformer", InChannels = config["num_channels"]?.GetValue<int>() ?? 3, Classes = classes,
            Encoder = ModelPart.Of(variant,
                new MixTransformerOptions { DropPathRate = config["drop_path_rate"]?.GetValue<double>() ?? 0.1 }),
            Decoder = ModelPart.Of("segformer-mlp", new SegformerDecoderOptions
            {
                HiddenSize = config["decoder_hidden_size"]?.GetValue<int>() ?? MixTransformer.Variant(variant)
                    .DecoderHidden,
                ClassifierDropout = config["classifier_dropout_prob"]?.GetValue<double>() ?? 0.1,
            }),
            Head = new ModelPart("resize"),
        }.Resolve();
    }

    /// <summary>The most classes a model of this library has (masks hold 8-bit labels).</summary>
    internal const int MaxClasses = 256;

    internal static string[] ClassNames(JsonObject config, int classes)
    {
        var names = DatasetDescription.Defaults(classes).Names.ToArray();
        if (config["id2label"] is not JsonObject labels) return names;
        foreach (var (key, value) in labels)
            if (int.TryParse(key, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) && i >= 0
                && i < classes && value is not null)
                names[i] = value.GetValue<string>();
        return names;
    }

    /// <summary>
    /// The normalisation of <c>preprocessor_config.json</c> (rescale by 1/255, then mean and std per channel, which is
    /// ours exactly), or ImageNet's when there is no such file. Other rescales are refused: ours divides by 255.
    /// </summary>
    internal static Normalization Preprocess(string path, int channels)
    {
        if (!File.Exists(path)) return Normalization.DefaultFor(channels);
        var o = JsonNode.Parse(RegularFile.ReadAllText(path, Limits.ConfigFileBytes, "preprocessor config"))?.AsObject()
            ?? throw new SegmentationException($"{path}: not a JSON object.");
        double rescale = o["do_rescale"]?.GetValue<bool>() == false ? 1 : o["rescale_factor"]?.GetValue<double>()
            ?? 1 / 255.0;
        if (Math.Abs(rescale * 255 - 1) > 1e-6)
            throw new SegmentationException($"{path}: rescale factor {rescale}; models here take pixels / 255 "
                + $"(rescale_factor 1/255).");
        if (o["do_normalize"]?.GetValue<bool>() == false) return new Normalization(new float[channels],
            Enumerable.Repeat(1f, channels).ToArray());
        float[] Floats(string key)
        {
            try
            {
                return o[key] is JsonArray a ? a.Select(x => (float)x!.GetValue<double>()).ToArray()
                    : throw new SegmentationException($"{path}: no '{key}' list of numbers.");
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
            {
                throw new SegmentationException($"{path}: '{key}' = {o[key]?.ToJsonString()}; expected a list of "
                    + $"numbers, one per channel.", e);
            }
        }
        var (mean, std) = (Floats("image_mean"), Floats("image_std"));
        if (mean.Length != channels || std.Length != channels)
            throw new SegmentationException($"{path}: image_mean and image_std have {mean.Length} and {std.Length} "
                + $"values; the model takes {channels} channels.");
        var normalization = new Normalization(mean, std);
        try { normalization.Validate(channels); } // at import, not at the first prediction
        catch (OptionsException e) { throw new SegmentationException($"{path}: {e.Message}", e); }
        return normalization;
    }

    /// <summary>
    /// Writes <paramref name="checkpoint"/>'s SegFormer as a Hugging Face model folder that transformers'
    /// <c>from_pretrained</c> reads: <c>config.json</c>, <c>model.safetensors</c> (the keys are already Hugging Face's)
    /// and <c>preprocessor_config.json</c> (the normalisation, no resize). The folder must not exist, or be empty.
    /// </summary>
    public static void Export(Checkpoint checkpoint, string folder)
    {
        var d = checkpoint.Model;
        if (d.Architecture != "segformer" || !d.Encoder.Name.StartsWith("mit-b", StringComparison.Ordinal)
            || d.Head?.Name != "resize")
            throw new OptionsException($"The Hugging Face layout holds SegFormers (--arch segformer, mit-b0 to "
                + $"mit-b5); this checkpoint's model is {d.Summary}.");
        if (Directory.Exists(folder) && Directory.EnumerateFileSystemEntries(folder).Any())
            throw new OptionsException($"{folder}: the folder is not empty; export writes a new Hugging Face model "
                + $"folder.");
        var (hidden, depths, _) = MixTransformer.Variant(d.Encoder.Name);
        var decoder = d.Decoder!.OptionsAs<SegformerDecoderOptions>();
        var names = checkpoint.Dataset.ClassNames;
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("SegformerForSemanticSegmentation"), ["model_type"] = "segformer",
            ["num_channels"] = d.InChannels, ["num_encoder_blocks"] = 4, ["depths"] = Array(depths),
                ["hidden_sizes"] = Array(hidden),
            ["sr_ratios"] = Array(MixTransformer.Reductions), ["num_attention_heads"] = Array(MixTransformer.Heads),
            ["patch_sizes"] = Array(MixTransformer.Patches), ["strides"] = Array(MixTransformer.Strides),
            ["mlp_ratios"] = Array(4, 4, 4, 4), ["hidden_act"] = "gelu",
                ["hidden_dropout_prob"] = 0.0,
            ["attention_probs_dropout_prob"] = 0.0, ["classifier_dropout_prob"] = decoder.ClassifierDropout,
                ["initializer_range"] = 0.02,
            ["drop_path_rate"] = d.Encoder.OptionsAs<MixTransformerOptions>().DropPathRate, ["layer_norm_eps"] = 1e-6,
            ["decoder_hidden_size"] = decoder.HiddenSize, ["semantic_loss_ignore_index"] = Labels.Ignore,
                ["reshape_last_stage"] = true,
            ["id2label"] =
                new JsonObject(names.Select((n, i) => KeyValuePair.Create(i.ToString(CultureInfo.InvariantCulture),
                    (JsonNode?)n))),
            ["label2id"] = new JsonObject(names.Select((n, i) => KeyValuePair.Create(n, (JsonNode?)i))
                .DistinctBy(kv => kv.Key)),
            [OwnKey] = new JsonObject
            {
                ["dataset"] = checkpoint.Dataset.ToJson(),
                ["normalization"] = JsonSerializer.SerializeToNode(checkpoint.Preprocessing.Normalization,
                    Checkpoint.Json),
            },
        };
        using var scope = NewDisposeScope();
        using var model = checkpoint.CreateModel();
        WriteFolder(checkpoint, folder, config, model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.cpu()),
            "SegformerImageProcessor");
    }

    /// <summary>Writes a Hugging Face model folder: the weights as <c>model.safetensors</c>, the preprocessing (no
    /// resize, rescale 1/255, the checkpoint's mean and std) as <c>preprocessor_config.json</c> for <paramref
    /// name="processor"/>, and <paramref name="config"/> as <c>config.json</c>, last, each atomically.</summary>
    internal static void WriteFolder(Checkpoint checkpoint, string folder, JsonObject config,
        Dictionary<string, Tensor> weights, string processor)
    {
        var p = checkpoint.Preprocessing.Normalization;
        var preprocessor = new JsonObject
        {
            ["image_processor_type"] = processor, ["do_resize"] = false, ["do_rescale"] = true,
                ["rescale_factor"] = 1 / 255.0,
            ["do_normalize"] = true, ["image_mean"] = new JsonArray(p.Mean.Select(v => (JsonNode?)(double)v).ToArray()),
            ["image_std"] = new JsonArray(p.Std.Select(v => (JsonNode?)(double)v).ToArray()),
                ["do_reduce_labels"] = false,
        };
        var bytes = new MemoryStream(); // PyBridge closes the stream it writes to
        TorchSharp.PyBridge.Safetensors.SaveStateDict(bytes, weights);
        Directory.CreateDirectory(folder);
        AtomicFile.Write(Path.Combine(folder, "model.safetensors"), s => s.Write(bytes.ToArray()));
        AtomicFile.WriteAllText(Path.Combine(folder, "preprocessor_config.json"),
            preprocessor.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        AtomicFile.WriteAllText(Path.Combine(folder, "config.json"),
            config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    private static JsonArray Array(params int[] values) => new(values.Select(v => (JsonNode?)v).ToArray());
}
