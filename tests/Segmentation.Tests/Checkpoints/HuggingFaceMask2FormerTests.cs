using System.Text.Json.Nodes;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Tests.Models;
using static TorchSharp.torch;

namespace Segmentation.Tests.Checkpoints;

/// <summary>
/// A whole Hugging Face Mask2Former folder (tests/fixtures/mask2former/hf, written by
/// tools/interop/mask2former_hf_folder.py from the PyTorch references of transformers' modeling files: a small Swin,
/// random weights with perturbed norms, 8 queries, 3 classes) imported and run end to end against the reference's own
/// predictions for its image; written back; and folders whose config disagrees with their weights refused.
/// </summary>
public class HuggingFaceMask2FormerTests
{
    private static string Folder => Path.GetDirectoryName(Mask2FormerFixtures.File("hf/config.json"))!;

    [Fact]
    public void An_imported_folder_predicts_what_the_reference_predicts_its_queries_classes_and_segments()
    {
        var checkpoint = HuggingFaceMask2Former.Import(Folder);
        Assert.Equal(("mask2former", "swin-tiny", 3), (checkpoint.Model.Architecture, checkpoint.Model.Encoder.Name,
            checkpoint.Model.Classes));
        Assert.Equal(new[] { "background", "cell", "debris" }, checkpoint.Dataset.ClassNames);
        var expected = StateDicts.ReadFile(Mask2FormerFixtures.File("hf/expected.pth"));

        // the queries, through the model as the predictor normalises the image
        using var model = checkpoint.CreateModel();
        model.eval();
        var image = new ImageReader().ReadImage(Path.Combine(Folder, "image.png"), 3);
        var batch = DataLoader.Collate(new[] { new Sample(image, new byte[image.Width * image.Height], "image") },
            checkpoint.Preprocessing.Normalization);
        var (x, _) = batch.ToDevice(CPU);
        using (no_grad())
        {
            var outputs = model.forward(checkpoint.Preprocessing.Normalization.Apply(x, batch));
            foreach (var name in new[] { "class_queries_logits", "masks_queries_logits" })
                Mask2FormerFixtures.Near(expected[name], outputs[name], name);

            // the segments at threshold 0, decoded as predict and Segmentation.Onnx decode them
            var classes = outputs["class_queries_logits"][0].data<float>().ToArray();
            var masks = outputs["masks_queries_logits"][0].data<float>().ToArray();
            var instance = MaskClassificationDecoder.Instances(classes, masks, 8, 12, 16, 45, 61, threshold: 0);
            Assert.Equal(Ints(expected["instance"]), instance.Map);
            foreach (var (overlap, key) in new[] { (0.8f, "panoptic"), (0.1f, "panoptic_overlap_0.1") })
            {
                var panoptic = MaskClassificationDecoder.Panoptic(classes, masks, 8, 12, 16, 45, 61, threshold: 0,
                    overlap: overlap, fuse: new HashSet<int> { 0 });
                Assert.Equal(Ints(expected[key]), panoptic.Map);
            }
            Assert.True(instance.Segments.Count >= 4 && Ints(expected["panoptic_overlap_0.1"]).Distinct().Count() >= 2,
                "the fixture's segments are too few to compare");
        }

        // the semantic map through the predictor: the same on at least 99 % of pixels
        using var predictor = new Predictor(checkpoint, new PredictorOptions { Device = "cpu" });
        var labels = predictor.Predict(image).Labels;
        var truth = Ints(expected["semantic"]);
        Assert.True(truth.Distinct().Count() >= 2, "the fixture's semantic map holds one class");
        int same = labels.Where((l, i) => l == truth[i]).Count();
        Assert.True(same >= labels.Length * 99 / 100, $"{same} of {labels.Length} pixels agree");
    }

    /// <summary>Through the CLI: import, predict, export to ONNX and predict with ONNX Runtime; both maps are the
    /// reference's semantic map on at least 99 % of pixels.</summary>
    [Fact]
    public void Import_predict_and_ONNX_Runtime_through_the_CLI_give_the_reference_semantic_map()
    {
        using var d = new TempDir();
        var import = Cli.CliResult.Run("import", "--from", "hf-mask2former", "--pytorch", Folder, "--out",
            d["m.ckpt"]);
        Assert.True(import.Code == 0, import.Err);
        Directory.CreateDirectory(d["in"]);
        File.Copy(Path.Combine(Folder, "image.png"), d["in/image.png"]);
        Assert.Equal(0, Cli.CliResult.Run("predict", "--checkpoint", d["m.ckpt"], "--input", d["in"], "--out",
            d["torch"]).Code);
        var export = Cli.CliResult.Run("export", "--checkpoint", d["m.ckpt"], "--format", "onnx", "--out",
            d["m.onnx"]);
        Assert.True(export.Code == 0, export.Err);
        var onnx = Cli.CliResult.Run("predict", "--onnx", d["m.onnx"], "--input", d["in"], "--out", d["onnx"]);
        Assert.True(onnx.Code == 0, onnx.Err);
        var truth = Ints(StateDicts.ReadFile(Mask2FormerFixtures.File("hf/expected.pth"))["semantic"]);
        foreach (var route in new[] { "torch", "onnx" })
        {
            using var map = SixLabors.ImageSharp.Image.Load<SixLabors.ImageSharp.PixelFormats.L8>(
                d[$"{route}/image.png"]);
            int same = 0;
            for (int y = 0; y < 45; y++) for (int x = 0; x < 61; x++) if (map[x, y].PackedValue == truth[y * 61 + x])
                same++;
            Assert.True(same >= 45 * 61 * 99 / 100, $"{route}: {same} of {45 * 61} pixels agree");
        }
    }

    private static int[] Ints(Tensor t) => t.to(ScalarType.Int32).data<int>().ToArray();

    [Fact]
    public void A_model_written_back_as_a_folder_imports_to_the_same_weights_and_config()
    {
        using var d = new TempDir();
        var checkpoint = HuggingFaceMask2Former.Import(Folder);
        HuggingFaceMask2Former.Export(checkpoint, d["out"]);
        var again = HuggingFaceMask2Former.Import(d["out"]);
        Assert.Equal(System.Text.Json.JsonSerializer.Serialize(checkpoint.Model, Checkpoint.Json),
            System.Text.Json.JsonSerializer.Serialize(again.Model, Checkpoint.Json));
        Assert.Equal(checkpoint.Weights, again.Weights);
        var config = JsonNode.Parse(File.ReadAllText(d["out/config.json"]))!;
        var source = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder, "config.json")))!;
        foreach (var key in new[] { "num_queries", "decoder_layers", "encoder_layers", "hidden_dim", "feature_size",
            "mask_feature_size", "dim_feedforward", "encoder_feedforward_dim", "num_attention_heads" })
            Assert.Equal(source[key]!.GetValue<int>(), config[key]!.GetValue<int>());
        Assert.Equal(source["backbone_config"]!["embed_dim"]!.GetValue<int>(),
            config["backbone_config"]!["embed_dim"]!.GetValue<int>());
        // a folder that exists with files in it is not written into
        Assert.Throws<OptionsException>(() => HuggingFaceMask2Former.Export(checkpoint, d["out"]));
    }

    /// <summary>Each count the config gives that the weights cannot hold, refused before a model is built, naming
    /// the config's key, the tensor's key and both shapes.</summary>
    [Theory]
    [InlineData("num_queries", 9, "model.transformer_module.queries_features.weight' would be [9, 32]", "[8, 32]")]
    [InlineData("num_labels", 5, "class_predictor.weight' would be [6, 32]", "[4, 32]")]
    [InlineData("mask_feature_size", 16, "model.pixel_level_module.decoder.mask_projection.weight' would be [16, 32",
        "[32, 32, 1, 1]")]
    [InlineData("encoder_layers", 3, "encoder_layers 3 says 3 layer(s)", "holds fewer")]
    [InlineData("decoder_layers", 3, "decoder_layers 3", "holds more")]
    [InlineData("window_size", 7, "window_size is 7", "relative_position_bias_table' would be [169, 1]; ")]
    [InlineData("hidden_dim", 64, "hidden_dim 64 differs from feature_size 32", "cannot be read back")]
    [InlineData("model_type", 0, "backbone_config.model_type is 'resnet'", "Swin backbones")]
    public void A_folder_whose_config_disagrees_with_its_weights_is_refused_by_key_and_shapes(string key, int value,
        string message, string more)
    {
        using var d = new TempDir();
        Directory.CreateDirectory(d["hf"]);
        foreach (var file in Directory.EnumerateFiles(Folder))
            File.Copy(file, Path.Combine(d["hf"], Path.GetFileName(file)));
        var config = JsonNode.Parse(File.ReadAllText(d["hf/config.json"]))!.AsObject();
        var backbone = config["backbone_config"]!.AsObject();
        switch (key)
        {
            case "num_labels": config.Remove("id2label"); config["num_labels"] = value; break;
            case "window_size": backbone[key] = value; break;
            case "model_type": backbone[key] = "resnet"; break;
            default: config[key] = value; break;
        }
        File.WriteAllText(d["hf/config.json"], config.ToJsonString());
        var e = Assert.Throws<SegmentationException>(() => HuggingFaceMask2Former.Import(d["hf"]));
        Assert.Contains(message, e.Message);
        Assert.Contains(more, e.Message);
    }
}
