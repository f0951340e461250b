using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using Segmentation.Checkpoints;
using Segmentation.Training;

namespace Segmentation.Tests.Training;

/// <summary>
/// The trainer's options are grouped (optimiser, schedule, precision, checkpoints, distribution); what earlier builds
/// recorded flat, in checkpoints and run.json, reads back as the same options, grouped.
/// </summary>
public class TrainerOptionGroupTests
{
    /// <summary>Options with every recorded value away from its default, so that a value that goes astray shows.</summary>
    private static TrainerOptions Unusual() => new()
    {
        Epochs = 7, BatchSize = 3, Seed = 11, Recipe = "r",
        Optimizer = new()
        {
            Kind = OptimizerKind.Sgd, LearningRate = 0.02, Fused = false, WeightDecay = 0.3, Momentum = 0.7,
            GradientClipNorm = 1.5, WeightAverageDecay = 0.99, AccumulationSteps = 2, EncoderLearningRateScale = 0.1,
            FreezeEncoderEpochs = 3,
        },
        Schedule = new()
        {
            Kind = ScheduleKind.Cosine, PolyPower = 2, WarmupFraction = 0.2, TimeLimit = TimeSpan.FromMinutes(9),
            FitToTimeLimit = true,
        },
        Precision = new() { Kind = Segmentation.Models.Precision.BFloat16, InitialLossScale = 128, LossScaleGrowthInterval = 5 },
        Checkpoints = new() { Directory = "/tmp/x", EvalEvery = 4, EarlyStoppingPatience = 6, PreviewImages = 2 },
        Distribution = new() { SyncBatchNorm = true },
    };

    /// <summary>The flat form earlier builds wrote: each group's values at the top, under their old names.</summary>
    private static JsonObject Flat(JsonObject grouped)
    {
        var moves = (ValueTuple<string, string, string>[])typeof(TrainerOptions).Assembly
            .GetType("Segmentation.Training.TrainerOptionGroups")!
            .GetField("Moves", BindingFlags.NonPublic | BindingFlags.Static)!.GetValue(null)!;
        var flat = grouped.DeepClone().AsObject();
        var groups = moves.Select(m => m.Item2).Distinct().ToList();
        foreach (var g in groups) flat.Remove(g);
        foreach (var (old, group, name) in moves) flat[old] = grouped[group]![name]?.DeepClone();
        Assert.DoesNotContain(flat, kv => kv.Value is JsonObject && groups.Contains(kv.Key)); // really flat
        return flat;
    }

    [Fact]
    public void Every_flat_value_of_an_earlier_checkpoint_reads_back_into_its_group()
    {
        var options = Unusual();
        var flat = Flat(options.ToJson());
        foreach (var old in new[] { "Optimizer", "LearningRate", "FusedOptimizer", "FitScheduleToTimeLimit",
            "Precision", "InitialLossScale", "CheckpointDirectory", "PreviewImages", "SyncBatchNorm" })
            Assert.True(flat[old] is JsonValue, old); // the old names, with values
        var checkpoint = new Checkpoint
        {
            Model = Segmentation.Models.ModelDescription.UNet(classes: 4), Dataset = Segmentation.Data.ShapesSource.Description(3),
            Preprocessing = new Preprocessing(Segmentation.Data.Normalization.ImageNet), TrainerSettings = flat,
            State = new TrainingState(), Weights = Array.Empty<byte>(),
        };
        Assert.Equal(options, TrainerOptions.FromCheckpoint(checkpoint));
        // today's form reads back as it is
        Assert.Equal(options, TrainerOptions.FromCheckpoint(new Checkpoint
        {
            Model = checkpoint.Model, Dataset = checkpoint.Dataset, Preprocessing = checkpoint.Preprocessing,
            TrainerSettings = options.ToJson(), State = checkpoint.State, Weights = checkpoint.Weights,
        }));
    }

    [Fact]
    public void An_earlier_run_json_with_flat_trainer_options_loads_grouped()
    {
        using var dir = new TempDir();
        var config = new RunConfig
        {
            Data = "builtin:shapes", DataOptions = new Segmentation.Data.DatasetOptions(),
            Model = Segmentation.Models.ModelDescription.UNet(classes: 4), Trainer = Unusual(),
        };
        var path = Path.Combine(dir.Path, "run.json");
        config.Save(path);
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        json["Trainer"] = Flat(json["Trainer"]!.AsObject());
        File.WriteAllText(path, json.ToJsonString());
        Assert.Equal(Unusual(), RunConfig.Load(path).Trainer);
    }

    [Fact]
    public void A_checkpoint_of_the_previous_format_keeps_its_trainer_options()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Segmentation.sln"))) dir = dir.Parent;
        var file = Path.Combine(dir!.FullName, "tests", "fixtures", "checkpoints-0.3", "unet-batch-transposed.ckpt");
        var checkpoint = Checkpoint.Load(file);
        var flat = checkpoint.TrainerSettings;
        var options = TrainerOptions.FromCheckpoint(checkpoint);
        Assert.Equal((double)flat["LearningRate"]!, options.Optimizer.LearningRate);
        Assert.Equal((int)flat["Epochs"]!, options.Epochs);
        Assert.Equal((string)flat["Precision"]!, options.Precision.Kind.ToString());
        Assert.Equal((string?)flat["CheckpointDirectory"], options.Checkpoints.Directory);
        Assert.Equal((int)flat["EvalEvery"]!, options.Checkpoints.EvalEvery);
    }
}
