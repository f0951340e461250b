using System.Text.Json.Nodes;
using Segmentation.Checkpoints;
using Segmentation.Models;
using static TorchSharp.torch;

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
}
