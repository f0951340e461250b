using System.Text.Json.Nodes;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Tests.Cli;

/// <summary>
/// <c>segment train|eval|predict|export --arch mask2former</c> on instance and panoptic data: one model that gives the
/// class map, the objects and the segments, decoded from its queries alike by the TorchSharp predictor and by ONNX
/// Runtime. The model is a narrow Mask2Former (32 wide, 10 queries) so that the round trip takes seconds; a low
/// threshold lets the barely trained queries through, so that there are objects to compare.
/// </summary>
public class MaskClassificationCliTests
{
    private static CliResult Run(params string[] args) => CliResult.Run(args);

    /// <summary>A run.json of a narrow Mask2Former on the built-in data of <paramref name="task"/>.</summary>
    private static string Config(TempDir d, string task)
    {
        var config = new JsonObject
        {
            ["Data"] = "builtin:shapes?count=24&size=64&seed=4" + (task == "Instance" ? "&instances=1" : ""),
            ["DataOptions"] = new JsonObject { ["Task"] = task },
            ["Model"] = new JsonObject
            {
                ["Architecture"] = "mask2former", ["Encoder"] = new JsonObject { ["Name"] = "resnet18" },
                ["Decoder"] = new JsonObject { ["Name"] = "mask2former-pixel", ["Options"] = new JsonObject
                {
                    ["FeatureSize"] = 32, ["MaskFeatureSize"] = 32, ["Heads"] = 4, ["Layers"] = 1,
                    ["FeedForward"] = 64,
                } },
                ["Head"] = new JsonObject { ["Name"] = "mask2former", ["Options"] = new JsonObject
                {
                    ["Queries"] = 10, ["Layers"] = 2, ["Heads"] = 4, ["FeedForward"] = 64,
                } },
            },
            ["Trainer"] = new JsonObject { ["Epochs"] = 2, ["BatchSize"] = 4 },
        };
        File.WriteAllText(d[$"{task}.json"], config.ToJsonString());
        return d[$"{task}.json"];
    }

    [Theory]
    [InlineData("Panoptic")]
    [InlineData("Instance")]
    public void One_model_gives_classes_objects_and_segments_in_TorchSharp_and_ONNX_Runtime(string task)
    {
        using var d = new TempDir();
        var train = Run("train", "--config", Config(d, task), "--out", d["run"], "--workers", "1", "--threads", "1",
            "--loss", "mask2former", "--lr", "1e-3", "--json", "--no-tensorboard");
        Assert.True(train.Code == 0, train.Err);
        var summary = train.LastJson();
        Assert.True(summary.ContainsKey(task == "Panoptic" ? "pq" : "ap"), summary.ToJsonString());
        var ckpt = Checkpoint.Load(d["run/best.ckpt"]);
        // the model predicts the data's classes: the boundary class is the per-pixel instance task's
        Assert.Equal(ckpt.Dataset.Classes - 1, ckpt.Model.Classes);
        Assert.Equal(Segmentation.Training.LossKind.MaskClassification, Segmentation.Training.TrainerOptions.FromCheckpoint(ckpt).Loss.Kind);

        // eval decodes as training's validation did (no views: the queries decode from one pass)
        var eval = Run("eval", "--checkpoint", d["run/best.ckpt"], "--json");
        Assert.True(eval.Code == 0, eval.Err);
        string metric = task == "Panoptic" ? "pq" : "ap";
        Assert.Equal(summary[metric]!.GetValue<double>(), eval.LastJson()[metric]!.GetValue<double>(), 12);

        var data = SegmentationDataset.Shapes(new ShapesOptions { Count = 3, Size = 64, Seed = 9,
            Panoptic = task == "Panoptic", Instances = task == "Instance" });
        for (int i = 0; i < data.Count; i++) MaskWriter.SaveImage(d[$"in/{i}.png"], data.Load(i).Image);
        var torch = Run("predict", "--checkpoint", d["run/best.ckpt"], "--input", d["in"], "--out", d["torch"],
            "--seed-threshold", "0.05");
        Assert.True(torch.Code == 0, torch.Err);
        Assert.Contains("objects", torch.Out);
        Assert.Equal(0, Run("export", "--checkpoint", d["run/best.ckpt"], "--format", "onnx", "--out",
            d["m.onnx"]).Code);
        var onnx = Run("predict", "--onnx", d["m.onnx"], "--input", d["in"], "--out", d["onnx"], "--seed-threshold",
            "0.05");
        Assert.True(onnx.Code == 0, onnx.Err);
        int objects = 0;
        for (int i = 0; i < data.Count; i++)
        {
            if (task == "Panoptic") // the class maps: the objects' classes and the stuff segments'
            {
                using var ta = Image.Load<L8>(d[$"torch/{i}_classes.png"]);
                using var oa = Image.Load<L8>(d[$"onnx/{i}_classes.png"]);
                int agree = 0;
                for (int y = 0; y < 64; y++)
                    for (int x = 0; x < 64; x++)
                        if (ta[x, y].PackedValue == oa[x, y].PackedValue) agree++;
                Assert.True(agree >= 64 * 64 * 99 / 100, $"image {i}: {agree} of {64 * 64} classes agree");
            }
            using var a = Image.Load<L16>(d[$"torch/{i}.png"]);
            using var b = Image.Load<L16>(d[$"onnx/{i}.png"]);
            int same = 0;
            var seen = new HashSet<int>();
            for (int y = 0; y < 64; y++)
                for (int x = 0; x < 64; x++)
                {
                    if (a[x, y].PackedValue == b[x, y].PackedValue) same++;
                    if (a[x, y].PackedValue > 0) seen.Add(a[x, y].PackedValue);
                }
            objects += seen.Count;
            Assert.True(same >= 64 * 64 * 99 / 100, $"image {i}: {same} of {64 * 64} pixels agree");
        }
        // two epochs teach the instance queries objects; the panoptic ones, three classes and no object, mostly the
        // background (the routes' class maps agree above either way)
        if (task == "Instance")
            Assert.True(objects > 0, $"no objects passed the threshold: the comparison would be empty");

        // one model, its outputs chosen: the class map alone from either, objects alone from the panoptic one, the
        // same through ONNX Runtime; what the model does not give is refused by name
        var semantic = Run("predict", "--checkpoint", d["run/best.ckpt"], "--input", d["in"], "--out", d["sem"],
            "--task", "semantic");
        Assert.True(semantic.Code == 0, semantic.Err);
        var semanticOnnx = Run("predict", "--onnx", d["m.onnx"], "--input", d["in"], "--out", d["semonnx"], "--task",
            "semantic");
        Assert.True(semanticOnnx.Code == 0, semanticOnnx.Err);
        Assert.Equal(8, Image.Identify(d["sem/0.png"]).PixelType.BitsPerPixel); // classes, not objects
        Assert.False(File.Exists(d["sem/0_classes.png"]));
        using (var t = Image.Load<L8>(d["sem/0.png"]))
        using (var o = Image.Load<L8>(d["semonnx/0.png"]))
        {
            int agree = 0;
            for (int y = 0; y < 64; y++) for (int x = 0; x < 64; x++) if (t[x, y].PackedValue == o[x, y].PackedValue)
                agree++;
            Assert.True(agree >= 64 * 64 * 99 / 100, $"class maps: {agree} of {64 * 64} pixels agree");
        }
        var instances = Run("predict", "--checkpoint", d["run/best.ckpt"], "--input", d["in"], "--out", d["inst"],
            "--task", "instance", "--seed-threshold", "0.05");
        if (task == "Panoptic")
        {
            Assert.True(instances.Code == 0, instances.Err);
            Assert.Equal(16, Image.Identify(d["inst/0.png"]).PixelType.BitsPerPixel);
            Assert.False(File.Exists(d["inst/0_classes.png"]));
        }
        var panoptic = Run("predict", "--checkpoint", d["run/best.ckpt"], "--input", d["in"], "--out", d["pan"],
            "--task", task == "Panoptic" ? "semantic" : "panoptic");
        if (task == "Instance")
        {
            Assert.NotEqual(0, panoptic.Code);
            Assert.Contains("trained on instance data", panoptic.Err);
        }

        // views do not apply to objects decoded from queries: refused, not silently ignored
        var views = Run("predict", "--checkpoint", d["run/best.ckpt"], "--input", d["in"], "--out", d["views"],
            "--tta", "flips");
        Assert.NotEqual(0, views.Code);
        Assert.Contains("test-time augmentation", views.Err);
    }
}
