using System.Text.Json.Nodes;
using Segmentation.Checkpoints;
using Segmentation.Models;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace Segmentation.Tests.Checkpoints;

/// <summary>A Hugging Face SegFormer folder (config.json, model.safetensors, preprocessor_config.json) imported as a checkpoint.</summary>
public class HuggingFaceSegformerTests
{
    /// <summary>What save_pretrained writes for SegformerForSemanticSegmentation, made here from a model of ours (its keys are Hugging Face's).</summary>
    private static void WriteFolder(string dir, SegmentationModel model, JsonObject config)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var weights = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
        using (var stream = File.Create(Path.Combine(dir, "model.safetensors"))) TorchSharp.PyBridge.Safetensors.SaveStateDict(stream, weights);
        File.WriteAllText(Path.Combine(dir, "preprocessor_config.json"), new JsonObject
        {
            ["do_rescale"] = true, ["rescale_factor"] = 1 / 255.0, ["do_normalize"] = true,
            ["image_mean"] = new JsonArray(0.5, 0.4, 0.3), ["image_std"] = new JsonArray(0.2, 0.25, 0.3),
        }.ToJsonString());
    }

    private static JsonObject B0Config(int classes) => new()
    {
        ["model_type"] = "segformer", ["num_channels"] = 3, ["hidden_sizes"] = new JsonArray(32, 64, 160, 256),
        ["depths"] = new JsonArray(2, 2, 2, 2), ["decoder_hidden_size"] = 256, ["drop_path_rate"] = 0.1,
        ["classifier_dropout_prob"] = 0.1,
        ["id2label"] = new JsonObject(Enumerable.Range(0, classes).Select(i => KeyValuePair.Create($"{i}", (JsonNode?)$"label{i}"))),
    };

    [Fact]
    public void A_hugging_face_folder_imports_with_its_variant_classes_preprocessing_and_weights()
    {
        using var dir = new TempDir();
        using var source = new SegmentationModel(new ModelDescription { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 3, Seed = 9 });
        WriteFolder(dir["hf"], source, B0Config(3));

        var checkpoint = HuggingFaceSegformer.Import(dir["hf"]);
        Assert.Equal("mit-b0", checkpoint.Model.Encoder.Name);
        Assert.Equal(new[] { "label0", "label1", "label2" }, checkpoint.Dataset.ClassNames);
        Assert.Equal(new[] { 0.5f, 0.4f, 0.3f }, checkpoint.Preprocessing.Normalization.Mean);
        using var imported = checkpoint.CreateModel();
        source.eval();
        imported.eval();
        using var scope = NewDisposeScope();
        using var grad = no_grad();
        var x = randn(new long[] { 1, 3, 67, 45 }, generator: new Generator(1));
        Assert.True(source.Logits(x).allclose(imported.Logits(x), rtol: 0, atol: 0)); // every weight, by Hugging Face's name
    }

    [Fact]
    public void A_config_of_no_known_variant_is_refused_naming_the_file()
    {
        using var dir = new TempDir();
        using var source = new SegmentationModel(new ModelDescription { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 2 });
        var config = B0Config(2);
        config["depths"] = new JsonArray(2, 2, 3, 2);
        WriteFolder(dir["hf"], source, config);
        var e = Assert.Throws<SegmentationException>(() => HuggingFaceSegformer.Import(dir["hf"]));
        Assert.Contains("config.json", e.Message);
        Assert.Contains("[2, 2, 3, 2]", e.Message);
    }

    [Fact]
    public void Export_to_a_hugging_face_folder_then_import_is_bit_exact()
    {
        using var dir = new TempDir();
        using var model = new SegmentationModel(new ModelDescription { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 4, Seed = 2 });
        var checkpoint = new Checkpoint
        {
            Model = model.Description, Weights = Checkpoint.SerializeWeights(model), TrainerSettings = new JsonObject(), State = new TrainingState(),
            Preprocessing = new Preprocessing(new Segmentation.Data.Normalization(new[] { 0.4f, 0.5f, 0.6f }, new[] { 0.2f, 0.3f, 0.4f })),
            Dataset = new Segmentation.Data.DatasetDescription
            {
                Classes = 4, ClassNames = new[] { "road", "car", "sky", "tree" }, ClassColors = Segmentation.Data.DatasetDescription.Defaults(4).Colors,
            },
        };
        checkpoint.Save(dir["a.ckpt"]);
        var r = Segmentation.Tests.Cli.CliResult.Run("export", "--checkpoint", dir["a.ckpt"], "--format", "safetensors", "--out", dir["hf"]);
        Assert.True(r.Code == 0, r.Err);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir["hf"], "config.json")))!;
        Assert.Equal("SegformerForSemanticSegmentation", (string)config["architectures"]![0]!);
        Assert.Equal("sky", (string)config["id2label"]!["2"]!);

        var back = HuggingFaceSegformer.Import(dir["hf"]);
        Assert.Equal(checkpoint.Model with { Seed = null }, back.Model with { Seed = null }); // the seed of fresh weights does not travel
        Assert.Equal(checkpoint.Dataset.ClassNames, back.Dataset.ClassNames);
        Assert.Equal(checkpoint.Preprocessing.Normalization.Mean, back.Preprocessing.Normalization.Mean);
        Assert.Equal(checkpoint.Preprocessing.Normalization.Std, back.Preprocessing.Normalization.Std);
        using var original = checkpoint.CreateModel();
        using var imported = back.CreateModel();
        foreach (var (key, value) in original.state_dict())
            Assert.True(value.equal(imported.state_dict()[key]).all().item<bool>(), key); // every tensor, bit for bit

        var again = Segmentation.Tests.Cli.CliResult.Run("export", "--checkpoint", dir["a.ckpt"], "--format", "safetensors", "--out", dir["hf"]);
        Assert.Equal(2, again.Code);
        Assert.Contains("not empty", again.Err); // nothing the user had is replaced
    }

    [Fact]
    public void An_instance_segformer_keeps_its_task_decoding_and_per_image_normalisation_through_the_hf_layout()
    {
        using var dir = new TempDir();
        using var model = new SegmentationModel(new ModelDescription { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 3, Seed = 2 });
        var instances = new Segmentation.Data.InstanceSettings { BoundaryWidth = 3, MinSize = 17 };
        var checkpoint = new Checkpoint
        {
            Model = model.Description, Weights = Checkpoint.SerializeWeights(model), TrainerSettings = new JsonObject(), State = new TrainingState(),
            Preprocessing = new Preprocessing(Segmentation.Data.Normalization.Percentiles(3, 2, 99)),
            Dataset = instances.Describe(3),
        };
        HuggingFaceSegformer.Export(checkpoint, dir["hf"]);
        var warnings = new List<string>();
        var back = HuggingFaceSegformer.Import(dir["hf"], warnings: new Segmentation.Training.SynchronousProgress<string>(warnings.Add));
        Assert.Empty(warnings);
        Assert.Equal(Segmentation.Data.SegmentationTaskKind.Instance, back.Dataset.Task);
        Assert.Equal(17, back.Dataset.Instances!.MinSize);
        Assert.Equal(Segmentation.Data.NormalizationScheme.Percentile, back.Preprocessing.Normalization.Scheme);
        Assert.Equal(99, back.Preprocessing.Normalization.HighPercentile);

        // A folder without our settings imports as semantic, and says so.
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir["hf"], "config.json")))!.AsObject();
        config.Remove(HuggingFaceSegformer.OwnKey);
        File.WriteAllText(Path.Combine(dir["hf"], "config.json"), config.ToJsonString());
        var plain = HuggingFaceSegformer.Import(dir["hf"], warnings: new Segmentation.Training.SynchronousProgress<string>(warnings.Add));
        Assert.Equal(Segmentation.Data.SegmentationTaskKind.Semantic, plain.Dataset.Task);
        Assert.Contains(warnings, w => w.Contains("imported as a semantic model"));
    }

    [Fact]
    public void A_class_count_from_the_config_is_checked_before_anything_is_built()
    {
        using var dir = new TempDir();
        using var source = new SegmentationModel(new ModelDescription { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 2 });
        var config = B0Config(2);
        config.Remove("id2label");
        config["num_labels"] = 1_000_000;
        WriteFolder(dir["hf"], source, config);
        var e = Assert.Throws<SegmentationException>(() => HuggingFaceSegformer.Import(dir["hf"]));
        Assert.Contains("1,000,000 classes", e.Message); // from config.json, before the weights or a model
    }

    /// <summary>
    /// NVlabs/SegFormer's names for ours, written here from the original code's modules (not from the library's
    /// mapping): patch_embed{i+1}.proj/norm, block{i+1}.{j}.norm1/attn.q/attn.kv (keys then values)/attn.sr/attn.norm/
    /// attn.proj/norm2/mlp.fc1/mlp.dwconv.dwconv/mlp.fc2, norm{i+1}, decode_head.linear_c{i+1}.proj,
    /// linear_fuse.conv/.bn, linear_pred.
    /// </summary>
    private static Dictionary<string, Tensor> Original(SegmentationModel model, string encoderPrefix, bool withHead)
    {
        var sd = model.state_dict();
        var result = new Dictionary<string, Tensor>();
        var inner = new (string Hf, string Original)[]
        {
            ("layer_norm_1", "norm1"), ("layer_norm_2", "norm2"), ("attention.self.query", "attn.q"), ("attention.self.sr", "attn.sr"),
            ("attention.self.layer_norm", "attn.norm"), ("attention.output.dense", "attn.proj"), ("mlp.dense1", "mlp.fc1"),
            ("mlp.dense2", "mlp.fc2"), ("mlp.dwconv.dwconv", "mlp.dwconv.dwconv"),
        };
        foreach (var (key, value) in sd)
        {
            var parts = key.Split('.');
            string? name = null;
            if (key.StartsWith("segformer.encoder.patch_embeddings.", StringComparison.Ordinal))
                name = $"{encoderPrefix}patch_embed{int.Parse(parts[3]) + 1}.{(parts[4] == "proj" ? "proj" : "norm")}.{parts[^1]}";
            else if (key.StartsWith("segformer.encoder.layer_norm.", StringComparison.Ordinal))
                name = $"{encoderPrefix}norm{int.Parse(parts[3]) + 1}.{parts[^1]}";
            else if (key.StartsWith("segformer.encoder.block.", StringComparison.Ordinal))
            {
                var layer = string.Join('.', parts[5..^1]);
                var block = $"{encoderPrefix}block{int.Parse(parts[3]) + 1}.{parts[4]}.";
                if (layer == "attention.self.key")
                    result[block + "attn.kv." + parts[^1]] = cat(new[] { value, sd[key.Replace(".key.", ".value.")] }, 0);
                else if (layer != "attention.self.value")
                    name = block + inner.Single(m => m.Hf == layer).Original + "." + parts[^1];
            }
            else if (withHead && key.StartsWith("decode_head.linear_c.", StringComparison.Ordinal))
                name = $"decode_head.linear_c{int.Parse(parts[2]) + 1}.proj.{parts[^1]}";
            else if (withHead && key == "decode_head.linear_fuse.weight") name = "decode_head.linear_fuse.conv.weight";
            else if (withHead && key.StartsWith("decode_head.batch_norm.", StringComparison.Ordinal)) name = "decode_head.linear_fuse.bn." + parts[^1];
            else if (withHead && key.StartsWith("decode_head.classifier.", StringComparison.Ordinal)) name = "decode_head.linear_pred." + parts[^1];
            if (name is not null) result[name] = value;
        }
        return result;
    }

    private static void SavePth(string path, Dictionary<string, Tensor> weights)
    {
        using var stream = File.Create(path);
        TorchSharp.PyBridge.PyTorchPickler.PickleStateDict(stream, weights);
    }

    [Fact]
    public void The_original_layout_with_fused_key_value_maps_to_the_same_model()
    {
        using var dir = new TempDir();
        using var source = new SegmentationModel(new ModelDescription { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 5, Seed = 4 });
        using var scope = NewDisposeScope();
        var weights = Original(source, "backbone.", withHead: true);
        Assert.Contains("backbone.block2.1.attn.kv.weight", weights.Keys);
        Assert.Equal(new long[] { 128, 64 }, weights["backbone.block2.1.attn.kv.weight"].shape); // keys and values fused
        weights["decode_head.conv_seg.weight"] = zeros(5, 256, 1, 1); // mmsegmentation's unused classifier: dropped
        weights["decode_head.conv_seg.bias"] = zeros(5);
        SavePth(dir["segformer.pth"], weights);

        var checkpoint = PyTorchInterop.Import(dir["segformer.pth"], PyTorchLayout.Segformer);
        Assert.Equal("mit-b0", checkpoint.Model.Encoder.Name);
        Assert.Equal(5, checkpoint.Model.Classes);
        using var imported = checkpoint.CreateModel();
        var back = imported.state_dict();
        foreach (var (key, value) in source.state_dict())
            Assert.True(value.equal(back[key]).all().item<bool>(), key); // every tensor, keys and values split right

        weights["backbone.block9.0.attn.q.weight"] = zeros(1);
        SavePth(dir["bad.pth"], weights);
        var e = Assert.Throws<SegmentationException>(() => PyTorchInterop.Import(dir["bad.pth"], PyTorchLayout.Segformer));
        Assert.Contains("backbone.block9.0.attn.q.weight", e.Message);
    }

    [Fact]
    public void An_encoder_only_checkpoint_seeds_the_encoder_and_leaves_a_new_head()
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        using var pretrained = new SegmentationModel(new ModelDescription { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 3, Seed = 5 });
        // The ImageNet mit_b0.pth layout: encoder keys with no prefix, and the ImageNet classifier as head.*.
        var weights = Original(pretrained, "", withHead: false);
        weights["head.weight"] = zeros(1000, 256);
        weights["head.bias"] = zeros(1000);
        SavePth(dir["mit_b0.pth"], weights);

        using var model = new SegmentationModel(new ModelDescription { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 7, Seed = 6 });
        var fresh = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        Assert.Equal(weights.Count - 2 + 16, model.LoadEncoderWeights(dir["mit_b0.pth"])); // 16 fused kv tensors, each split in two
        foreach (var (key, value) in model.state_dict())
        {
            var expected = key.StartsWith("segformer.encoder.", StringComparison.Ordinal) ? pretrained.state_dict()[key] : fresh[key];
            Assert.True(value.equal(expected).all().item<bool>(), key); // the encoder from the file, the head as it was
        }

        // Importing it as a model, or seeding another variant, says what to do instead.
        var e = Assert.Throws<SegmentationException>(() => PyTorchInterop.Import(dir["mit_b0.pth"], PyTorchLayout.Segformer));
        Assert.Contains("--encoder-weights", e.Message);
        using var b1 = new SegmentationModel(new ModelDescription { Architecture = "segformer", Encoder = new ModelPart("mit-b1"), Classes = 7 });
        var wrong = Assert.Throws<SegmentationException>(() => b1.LoadEncoderWeights(dir["mit_b0.pth"]));
        Assert.Contains("mit-b0", wrong.Message);
    }

    [Fact]
    public void An_encoder_only_hugging_face_folder_is_refused_as_a_model_and_seeds_an_encoder()
    {
        using var dir = new TempDir();
        using var source = new SegmentationModel(new ModelDescription { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 3, Seed = 8 });
        var config = B0Config(1000);
        config["architectures"] = new JsonArray("SegformerForImageClassification");
        Directory.CreateDirectory(dir["nvidia-mit-b0"]);
        File.WriteAllText(Path.Combine(dir["nvidia-mit-b0"], "config.json"), config.ToJsonString());
        using var scope = NewDisposeScope();
        var weights = source.state_dict().Where(kv => kv.Key.StartsWith("segformer.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value);
        weights["classifier.weight"] = zeros(1000, 256);
        weights["classifier.bias"] = zeros(1000);
        using (var stream = File.Create(Path.Combine(dir["nvidia-mit-b0"], "model.safetensors"))) TorchSharp.PyBridge.Safetensors.SaveStateDict(stream, weights);

        var e = Assert.Throws<SegmentationException>(() => HuggingFaceSegformer.Import(dir["nvidia-mit-b0"]));
        Assert.Contains("--encoder-weights", e.Message);
        using var model = new SegmentationModel(new ModelDescription { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 2, Seed = 1 });
        model.LoadEncoderWeights(dir["nvidia-mit-b0"]);
        Assert.True(model.state_dict()["segformer.encoder.block.1.0.attention.self.key.weight"]
            .equal(source.state_dict()["segformer.encoder.block.1.0.attention.self.key.weight"]).all().item<bool>());
    }
}
