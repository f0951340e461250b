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

    [Fact]
    public void Train_predict_score_and_export_round_trip_on_built_in_instance_data()
    {
        using var d = new TempDir();
        var train = Run("train", "--data", Data, "--task", "instance", "--out", d["run"], "--epochs", "12",
            "--base-channels", "8", "--depth", "3", "--batch-size", "8", "--lr", "0.003", "--workers", "1",
            "--device", "cpu", "--json");
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

        // scoring the written files gives what eval computes in memory
        var score = Run("score", "--task", "instance", "--pred", d["pred"], "--gt", d["truth"], "--json");
        Assert.True(score.Code == 0, score.Err);
        var eval = Run("eval", "--checkpoint", best, "--json");
        Assert.True(eval.Code == 0, eval.Err);
        foreach (var key in new[] { "ap", "ap50", "ap75", "pq", "instancesTrue", "instancesPredicted" })
            Assert.Equal(eval.LastJson()[key]!.GetValue<double>(), score.LastJson()[key]!.GetValue<double>(), 12);
        Assert.Equal(summary["ap"]!.GetValue<double>(), eval.LastJson()["ap"]!.GetValue<double>(), 12);

        // the ONNX export carries the decoding: ONNX Runtime finds the same objects
        var export = Run("export", "--checkpoint", best, "--format", "onnx", "--out", d["m.onnx"]);
        Assert.True(export.Code == 0, export.Err);
        var onnx = Run("predict", "--onnx", d["m.onnx"], "--input", d["images"], "--out", d["onnx"]);
        Assert.True(onnx.Code == 0, onnx.Err);
        Assert.Contains("objects", onnx.Out);
        Assert.Equal(0, Run("predict", "--checkpoint", best, "--input", d["images"], "--out", d["torch"]).Code);
        var same = Run("score", "--task", "instance", "--pred", d["onnx"], "--gt", d["torch"], "--json").LastJson();
        Assert.Equal(1.0, same["ap50"]!.GetValue<double>());
        Assert.True(same["ap"]!.GetValue<double>() > 0.99, same.ToJsonString());
    }

    [Fact]
    public void Instance_flags_without_the_instance_task_are_refused()
    {
        using var d = new TempDir();
        var r = Run("train", "--data", Data, "--boundary-width", "3", "--out", d["run"]);
        Assert.Equal(2, r.Code);
        Assert.Contains("--task instance", r.Err);
    }
}
