using Segmentation.Data;
using Segmentation.Training;

namespace Segmentation.Tests.Training;

/// <summary>The training plan: rules from the fingerprint, epochs from the measured steps, the same plan from the same
/// timings, and plan.json read back or refused.</summary>
public class PlanTests
{
    private static (SegmentationDataset Train, SegmentationDataset Val) Instances() =>
        SegmentationDataset.Shapes(new ShapesOptions { Count = 40, Size = 64, Seed = 3, Instances = true })
            .Split(0.8, 0);

    private static PlanTiming[] Timings(double base32, double base16, string norm) => new[]
    {
        new PlanTiming($"unet, base 32, depth 4, {norm} norm", 32, base32),
        new PlanTiming($"unet, base 16, depth 4, {norm} norm", 16, base16),
    };

    [Fact]
    public void The_fingerprint_counts_objects_classes_and_intensities()
    {
        var (train, _) = Instances();
        var f = DataFingerprint.Of(train);
        Assert.Equal(train.Count, f.Images);
        Assert.Equal(64, f.Width.Median);
        Assert.NotNull(f.Objects);
        Assert.True(f.Objects!.Total >= train.Count, $"{f.Objects.Total} objects");
        Assert.InRange(f.Objects.Diameter, 3, 64);
        Assert.Equal(3, f.ClassShares.Length); // background, object, boundary
        Assert.Equal(1.0, f.ClassShares.Sum(), 6);
        Assert.InRange(f.ForegroundShare, 0.01, 0.99);
        Assert.True(f.ImageHigh.Median > f.ImageLow.Median);
        Assert.Equal(f.Channels, f.ChannelMean.Length);
    }

    [Fact]
    public void The_same_data_and_timings_give_the_same_plan()
    {
        var (train, val) = Instances();
        var options = new PlannerOptions { TimeLimit = TimeSpan.FromMinutes(20), Threads = 1,
            Timings = Timings(1.0, 0.25, "group") };
        var first = TrainingPlanner.Plan(train, val, options).ToJson();
        var second = TrainingPlanner.Plan(train, val, options).ToJson();
        Assert.Equal(first, second);
    }

    [Fact]
    public void A_short_budget_gets_the_narrower_network_and_a_long_one_the_wider()
    {
        var (train, val) = Instances();
        // 32 training images at batch 16: 2 steps an epoch
        var timings = Timings(base32: 20, base16: 2, "group");
        var shortRun = TrainingPlanner.Plan(train, val, new PlannerOptions { TimeLimit = TimeSpan.FromMinutes(10),
            Threads = 1, Timings = timings });
        var longRun = TrainingPlanner.Plan(train, val, new PlannerOptions { TimeLimit = TimeSpan.FromMinutes(60),
            Threads = 1, Timings = timings });
        Assert.Equal(16, shortRun.BaseChannels);
        Assert.Equal(32, longRun.BaseChannels);
        Assert.True(longRun.Epochs >= TrainingPlanner.MinEpochsForWiderModel, $"{longRun.Epochs} epochs");
        // the expected time fits the budget
        Assert.True(shortRun.ExpectedSeconds.Sum() <= 600 * 1.01, string.Join(", ", shortRun.ExpectedSeconds));
        Assert.Contains(shortRun.Reasons, r => r.StartsWith("model: U-Net, base 16", StringComparison.Ordinal));
    }

    [Fact]
    public void Instance_data_is_planned_with_per_image_percentiles_group_norm_and_sizes_from_its_objects()
    {
        var (train, val) = Instances();
        var plan = TrainingPlanner.Plan(train, val, new PlannerOptions { Threads = 1,
            Timings = Timings(0.5, 0.1, "group") });
        Assert.Equal("instance", plan.Task);
        Assert.Equal("percentile", plan.Normalize);
        Assert.Equal("group", plan.Norm);
        Assert.True(plan.VerticalFlip);
        Assert.Equal(new Size2(64, 64), plan.Crop); // 128 wanted, the images are 64
        Assert.InRange(plan.BoundaryWidth!.Value, 1, 3);
        Assert.InRange(plan.MinObjectSize!.Value, 4, 64);
        Assert.Null(plan.TimeLimit);
        Assert.Contains(plan.Reasons, r => r.Contains("a default hour", StringComparison.Ordinal));
    }

    [Fact]
    public void Instance_data_is_planned_on_the_pretrained_encoder_with_per_image_percentiles_when_its_weights_are_at_hand()
    {
        var (train, val) = Instances();
        var timings = Timings(0.5, 0.1, "group").Append(new PlanTiming("mlnet-resnet18", 0, 0.3)).ToArray();
        var plan = TrainingPlanner.Plan(train, val, new PlannerOptions { Threads = 1, Timings = timings,
            PretrainedResNet18 = "ResNet18.onnx" });
        Assert.Equal(("mlnet-resnet18", "builtin", "percentile", "batch"), (plan.Encoder, plan.EncoderWeights,
            plan.Normalize, plan.Norm));
        Assert.Contains(plan.Reasons, r => r.Contains("objects: on DSB2018", StringComparison.Ordinal));
        Assert.NotNull(plan.BoundaryWidth);
    }

    [Fact]
    public void Colour_semantic_data_is_planned_on_the_pretrained_encoder_when_its_weights_are_at_hand()
    {
        var (train, val) = SegmentationDataset.Shapes(new ShapesOptions { Count = 30, Size = 64, Seed = 2 }).Split(0.8);
        var timings = Timings(0.5, 0.1, "group").Append(new PlanTiming("mlnet-resnet18", 0, 0.3)).ToArray();
        var pretrained = TrainingPlanner.Plan(train, val, new PlannerOptions { Threads = 1, Timings = timings,
            PretrainedResNet18 = "ResNet18.onnx" });
        Assert.Equal(("mlnet-resnet18", "builtin", "imagenet"), (pretrained.Encoder, pretrained.EncoderWeights,
            pretrained.Normalize));
        var scratch = TrainingPlanner.Plan(train, val, new PlannerOptions { Threads = 1, Timings = timings });
        Assert.Equal("unet", scratch.Encoder);
        Assert.Null(scratch.EncoderWeights);
        Assert.NotEqual("imagenet", scratch.Normalize);
    }

    /// <summary>Gray semantic data (ISBI 2012's electron microscopy) goes on the pretrained encoder too, with its own
    /// normalisation (ImageNet's means are colour ones).</summary>
    [Fact]
    public void Gray_semantic_data_is_planned_on_the_pretrained_encoder_with_its_own_normalisation()
    {
        var (train, val) = SegmentationDataset.Shapes(new ShapesOptions { Count = 30, Size = 64, Seed = 2,
            Channels = 1 }).Split(0.8);
        var timings = Timings(0.5, 0.1, "group").Append(new PlanTiming("mlnet-resnet18", 0, 0.3)).ToArray();
        var plan = TrainingPlanner.Plan(train, val, new PlannerOptions { Threads = 1, Timings = timings,
            PretrainedResNet18 = "ResNet18.onnx" });
        Assert.Equal(1, plan.Fingerprint!.Channels);
        Assert.Equal(("mlnet-resnet18", "builtin", "batch"), (plan.Encoder, plan.EncoderWeights, plan.Norm));
        Assert.NotEqual("imagenet", plan.Normalize);
        Assert.Contains(plan.Reasons, r => r.Contains("gray images: on ISBI 2012", StringComparison.Ordinal));
    }

    [Fact]
    public void Plan_json_reads_back_and_a_bad_plan_is_refused_naming_the_field()
    {
        var (train, val) = Instances();
        var plan = TrainingPlanner.Plan(train, val, new PlannerOptions { Threads = 1,
            Timings = Timings(0.5, 0.1, "group") });
        using var d = new TempDir();
        File.WriteAllText(d["plan.json"], plan.ToJson());
        var back = TrainingPlan.Load(d["plan.json"]);
        Assert.Equal(plan.ToJson(), back.ToJson());

        File.WriteAllText(d["bad.json"], plan.ToJson().Replace("\"BaseChannels\": 16", "\"BaseChannels\": 0")
            .Replace("\"BaseChannels\": 32", "\"BaseChannels\": 0"));
        var e = Assert.Throws<OptionsException>(() => TrainingPlan.Load(d["bad.json"]));
        Assert.Contains("BaseChannels 0", e.Message);
        Assert.Contains("bad.json", e.Message);
        var folder = Assert.Throws<OptionsException>(() => TrainingPlan.Load(d.Path));
        Assert.Contains(d.Path, folder.Message);
        File.WriteAllText(d["text.json"], "not json");
        Assert.Contains("not a plan", Assert.Throws<OptionsException>(() => TrainingPlan.Load(d["text.json"])).Message);
        foreach (var (edit, named) in new[] { (plan with { InstanceTarget = "flows" }, "InstanceTarget 'flows'"),
            (plan with { InstanceTarget = "distance", Task = "semantic" }, "with Task semantic"),
            (plan with { Encoder = "unet", FullResolutionSkip = 16 }, "FullResolutionSkip 16 with Encoder unet"),
            (plan with { Encoder = "mlnet-resnet18", FullResolutionSkip = -1 }, "FullResolutionSkip -1: expected 0") })
        {
            File.WriteAllText(d["edited.json"], edit.ToJson());
            Assert.Contains(named, Assert.Throws<OptionsException>(() => TrainingPlan.Load(d["edited.json"])).Message);
        }
        File.WriteAllText(d["distance.json"], (plan with { InstanceTarget = "distance" }).ToJson());
        Assert.Equal("distance", TrainingPlan.Load(d["distance.json"]).InstanceTarget);
    }

    [Fact]
    public void Busy_cores_are_measured_now_within_the_machines_cores()
    {
        if (!OperatingSystem.IsLinux()) return;
        var busy = Segmentation.Models.CpuThreads.BusyCores();
        Assert.NotNull(busy);
        Assert.InRange(busy!.Value, 0, Environment.ProcessorCount);
    }
    [Fact]
    public void With_a_time_limit_the_schedule_is_laid_out_to_end_at_the_limit_not_cut()
    {
        var (train, val) = SegmentationDataset.Shapes(new ShapesOptions { Count = 40, Size = 32, Seed = 4 })
            .Split(0.8);
        using var model = new Segmentation.Models.SegmentationModel(Segmentation.Models.ModelDescription.UNet(
            classes: 4, baseChannels: 4, depth: 2, seed: 1));
        var options = new TrainerOptions
        {
            Epochs = 100000, BatchSize = 8, Workers = 1, Device = "cpu",
            ManageProcessMemory = false,
            Optimizer = new() { LearningRate = 1e-3 },
            Schedule = new() { TimeLimit = TimeSpan.FromSeconds(6), FitToTimeLimit = true },
            Checkpoints = new() { EvalEvery = 2 },
        };
        using var trainer = new Trainer(model, options);
        var result = trainer.Fit(train, val);
        Assert.InRange(result.Epochs, 2, 99999);
        // the poly schedule was laid over the epochs that fit: its rate at the end is a small part of the base rate
        // (without the fitting it would still be at the base rate when the limit cut the run)
        Assert.True(result.History[^1].LearningRate < 0.5e-3, $"last rate {result.History[^1].LearningRate}");
        Assert.True(result.Seconds < 6 * 2, $"{result.Seconds} s");
    }

    /// <summary>A plan's epoch time comes from a short step benchmark, which can be well above what epochs take (a
    /// 30-minute CamVid plan of 18 epochs whose epochs took half the time it expected): the fitting lengthens the
    /// schedule to the epochs that fit, up to three times the plan, rather than leave the budget unused.</summary>
    [Fact]
    public void Faster_epochs_than_planned_lengthen_the_schedule_up_to_its_cap()
    {
        var (train, val) = SegmentationDataset.Shapes(new ShapesOptions { Count = 20, Size = 32, Seed = 4 })
            .Split(0.8);
        using var model = new Segmentation.Models.SegmentationModel(Segmentation.Models.ModelDescription.UNet(
            classes: 4, baseChannels: 4, depth: 2, seed: 1));
        var options = new TrainerOptions
        {
            Epochs = 3, BatchSize = 8, Workers = 1, Device = "cpu",
            ManageProcessMemory = false,
            Optimizer = new() { LearningRate = 1e-3 },
            Schedule = new() { TimeLimit = TimeSpan.FromSeconds(60), FitToTimeLimit = true },
            Checkpoints = new() { EvalEvery = 1 },
        };
        using var trainer = new Trainer(model, options);
        var result = trainer.Fit(train, val);
        Assert.Equal(3 * 3, result.Epochs); // tiny epochs: all three times the plan fit in a minute
        Assert.True(result.History[^1].LearningRate < 0.2e-3, $"last rate {result.History[^1].LearningRate}");
    }
}
