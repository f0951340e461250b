using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Tests.Cli;

/// <summary>
/// <c>segment train|eval|predict|score|export --task instance</c> on the built-in touching objects: a model that
/// learns to separate them, predictions written as 16-bit object numbers, and one score however they are made.
/// </summary>
public class InstanceCliTests
{
    private static CliResult Run(params string[] args) => CliResult.Run(args);

    private const string Data = "builtin:shapes?count=200&size=64&seed=4&instances=1";

    /// <summary>Both targets: the boundary (the classes alone) and the distance (one more output plane, which the
    /// export carries and ONNX Runtime decodes alike).</summary>
    [Theory]
    [InlineData("boundary")]
    [InlineData("distance")]
    public void Train_predict_score_and_export_round_trip_on_built_in_instance_data(string target)
    {
        using var d = new TempDir();
        var train = Run("train", "--data", Data, "--task", "instance", "--out", d["run"], "--epochs", "12",
            "--base-channels", "8", "--depth", "3", "--batch-size", "8", "--lr", "0.003", "--workers", "1",
            "--device", "cpu", "--json", "--instance-target", target);
        Assert.True(train.Code == 0, train.Err);
        Assert.Contains("AP", train.Err + train.Out);
        var summary = train.LastJson();
        double ap50 = summary["ap50"]!.GetValue<double>();
        // separating touching objects is learned: a model that merged every touching pair or missed the objects
        // would stay far below this
        Assert.True(ap50 > 0.6, $"AP50 {ap50}");
        string best = d["run/best.ckpt"];
        var ckpt = Checkpoint.Load(best);
        Assert.Equal(SegmentationTaskKind.Instance, ckpt.Dataset.Task); // eval and predict need no flag
        Assert.Equal(target, ckpt.Dataset.Instances!.Target.ToString().ToLowerInvariant());
        Assert.Equal(target == "distance" ? 4 : 3, ckpt.Model.Classes); // the distance: a plane after the classes

        // the validation images and their true objects, as a user's folders
        var val = SegmentationDataset.FromOrigin(ckpt.ValOrigin!, new DatasetOptions { Description = ckpt.Dataset });
        Directory.CreateDirectory(d["images"]); Directory.CreateDirectory(d["truth"]);
        for (int i = 0; i < val.Count; i++)
        {
            var s = val.Load(i);
            MaskWriter.SaveImage(d[$"images/{s.Name}.png"], s.Image);
            MaskWriter.SaveInstances(d[$"truth/{s.Name}.png"], Array.ConvertAll(s.Instances!, v => (int)v), s.Width,
                s.Height);
        }

        var predict = Run("predict", "--checkpoint", best, "--input", d["images"], "--out", d["pred"], "--overlay");
        Assert.True(predict.Code == 0, predict.Err);
        Assert.Contains("objects", predict.Out);
        var first = Directory.EnumerateFiles(d["pred"], "*_overlay.png").Count();
        Assert.Equal(val.Count, first);
        Assert.Equal(16, Image.Identify(Path.Combine(d["pred"], val.NameOf(0) + ".png")).PixelType.BitsPerPixel);

        // scoring the written files gives what eval computes in memory (both with flip TTA, the default for objects)
        var score = Run("score", "--task", "instance", "--pred", d["pred"], "--gt", d["truth"], "--json");
        Assert.True(score.Code == 0, score.Err);
        var eval = Run("eval", "--checkpoint", best, "--json");
        Assert.True(eval.Code == 0, eval.Err);
        foreach (var key in new[] { "ap", "ap50", "ap75", "pq", "instancesTrue", "instancesPredicted" })
            Assert.Equal(eval.LastJson()[key]!.GetValue<double>(), score.LastJson()[key]!.GetValue<double>(), 12);
        // without TTA, eval gives what the training's own validation gave
        var plain = Run("eval", "--checkpoint", best, "--json", "--tta", "none");
        Assert.Equal(summary["ap"]!.GetValue<double>(), plain.LastJson()["ap"]!.GetValue<double>(), 12);

        // the ONNX export carries the decoding: ONNX Runtime finds the same objects
        var export = Run("export", "--checkpoint", best, "--format", "onnx", "--out", d["m.onnx"]);
        Assert.True(export.Code == 0, export.Err);
        var onnx = Run("predict", "--onnx", d["m.onnx"], "--input", d["images"], "--out", d["onnx"]);
        Assert.True(onnx.Code == 0, onnx.Err);
        Assert.Contains("objects", onnx.Out);
        var torch = Run("predict", "--checkpoint", best, "--input", d["images"], "--out", d["torch"]);
        Assert.True(torch.Code == 0, torch.Err);
        var same = Run("score", "--task", "instance", "--pred", d["onnx"], "--gt", d["torch"], "--json").LastJson();
        Assert.Equal(1.0, same["ap50"]!.GetValue<double>());
        Assert.True(same["ap"]!.GetValue<double>() > 0.99, same.ToJsonString());

        // a seed threshold, given to both routes, decodes alike too
        var onnx9 = Run("predict", "--onnx", d["m.onnx"], "--input", d["images"], "--out", d["onnx9"],
            "--seed-threshold", "0.9");
        Assert.True(onnx9.Code == 0, onnx9.Err);
        var torch9 = Run("predict", "--checkpoint", best, "--input", d["images"], "--out", d["torch9"],
            "--seed-threshold", "0.9");
        Assert.True(torch9.Code == 0, torch9.Err); // the error, should it fail
        var same9 = Run("score", "--task", "instance", "--pred", d["onnx9"], "--gt", d["torch9"], "--json")
            .LastJson();
        Assert.Equal(1.0, same9["ap50"]!.GetValue<double>());
    }

    [Fact]
    public void Panoptic_runs_choose_by_PQ_and_predict_objects_with_a_class_map()
    {
        using var d = new TempDir();
        var train = Run("train", "--data", "builtin:shapes?count=24&size=48&seed=2", "--task", "panoptic", "--out",
            d["run"], "--epochs", "2", "--base-channels", "8", "--depth", "3", "--batch-size", "4", "--workers", "1",
            "--device", "cpu", "--json");
        Assert.True(train.Code == 0, train.Err);
        var summary = train.LastJson();
        foreach (var key in new[] { "pq", "sq", "rq", "pqThings", "pqStuff", "ap" })
            Assert.True(summary.ContainsKey(key), key);
        Assert.True(summary["perClassPq"]!.AsObject().ContainsKey("background"));
        Assert.Contains("PQ", train.Err + train.Out);
        var ckpt = Checkpoint.Load(d["run/best.ckpt"]);
        Assert.Equal(SegmentationTaskKind.Panoptic, ckpt.Dataset.Task);
        Assert.Equal(new[] { "background", "round", "oval", "boundary" }, ckpt.Dataset.ClassNames);
        var eval = Run("eval", "--checkpoint", d["run/best.ckpt"], "--json", "--tta", "none");
        Assert.True(eval.Code == 0, eval.Err);
        Assert.Equal(summary["pq"]?.GetValue<double>(), eval.LastJson()["pq"]?.GetValue<double>());

        var image = SegmentationDataset.Shapes(new ShapesOptions { Count = 1, Size = 48, Panoptic = true }).Load(0);
        MaskWriter.SaveImage(d["in/a.png"], image.Image);
        var predict = Run("predict", "--checkpoint", d["run/best.ckpt"], "--input", d["in"], "--out", d["out"]);
        Assert.True(predict.Code == 0, predict.Err);
        Assert.True(File.Exists(d["out/a_classes.png"]));
        Assert.Equal(16, Image.Identify(d["out/a.png"]).PixelType.BitsPerPixel);

        // ONNX Runtime gives the same class map
        Assert.Equal(0, Run("export", "--checkpoint", d["run/best.ckpt"], "--format", "onnx", "--out", d["m.onnx"])
            .Code);
        var onnx = Run("predict", "--onnx", d["m.onnx"], "--input", d["in"], "--out", d["onnx"]);
        Assert.True(onnx.Code == 0, onnx.Err);
        using var torchMap = Image.Load<L8>(d["out/a_classes.png"]);
        using var onnxMap = Image.Load<L8>(d["onnx/a_classes.png"]);
        int same = 0;
        for (int y = 0; y < 48; y++) for (int x = 0; x < 48; x++) if (torchMap[x, y] == onnxMap[x, y]) same++;
        Assert.True(same >= 48 * 48 * 99 / 100, $"{same} of {48 * 48} pixels agree");
    }

    [Fact]
    public void An_instance_run_resumes_exactly_and_keeps_its_AP_history()
    {
        using var d = new TempDir();
        string[] Flags(string dir) => new[] { "train", "--data", "builtin:shapes?count=48&size=48&seed=4&instances=1",
            "--task", "instance", "--base-channels", "8", "--depth", "3", "--batch-size", "8", "--workers", "1",
            "--device", "cpu", "--epochs", "3", "--out", dir };
        Assert.Equal(0, Run(Flags(d["whole"])).Code);
        var first = Run(Flags(d["parts"]).Append("--time-limit").Append("0.001s").ToArray()); // stops after epoch 1
        Assert.True(first.Code == 0, first.Err);
        Assert.Contains("time limit", first.Err + first.Out);
        var rest = Run("train", "--out", d["parts"], "--resume", "--time-limit", "1h");
        Assert.True(rest.Code == 0, rest.Err);
        // auto threads: the resumed run takes the interrupted run's count, whatever the load on the machine now (it
        // once took fewer under a full suite's load and computed the sums otherwise)
        Assert.Contains("the interrupted run's", rest.Err + rest.Out);
        var whole = File.ReadAllLines(d["whole/metrics.jsonl"]).Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!)
            .ToList();
        var parts = File.ReadAllLines(d["parts/metrics.jsonl"]).Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!)
            .ToList();
        Assert.Equal(3, parts.Count);
        for (int e = 0; e < 3; e++)
            foreach (var key in new[] { "trainLoss", "valLoss", "meanIoU", "ap", "ap50", "pq" })
                Assert.Equal(whole[e]![key]!.GetValue<double>(), parts[e]![key]!.GetValue<double>());
    }

    [Fact]
    public void Instance_flags_without_the_instance_task_are_refused()
    {
        using var d = new TempDir();
        var r = Run("train", "--data", Data, "--boundary-width", "3", "--out", d["run"]);
        Assert.Equal(2, r.Code);
        Assert.Contains("--task instance", r.Err);
        var target = Run("train", "--data", Data, "--instance-target", "distance", "--out", d["run2"]);
        Assert.Equal(2, target.Code);
        Assert.Contains("--task instance", target.Err);
        var unknown = Run("train", "--data", Data, "--task", "instance", "--instance-target", "flows", "--out",
            d["run3"]);
        Assert.Equal(2, unknown.Code);
        Assert.Contains("flows", unknown.Err);
        Assert.False(Directory.Exists(d["run"]) || Directory.Exists(d["run2"]) || Directory.Exists(d["run3"]));
    }
}
