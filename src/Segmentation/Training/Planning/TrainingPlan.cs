using System.Text.Json;
using System.Text.Json.Serialization;
using Segmentation.Data;

namespace Segmentation.Training;

/// <summary>One measured training step of a candidate model: what the plan's epochs are counted from.</summary>
/// <param name="Model">"unet, base 16, depth 4, group norm".</param>
/// <param name="BaseChannels">The candidate's width.</param>
/// <param name="StepSeconds">Median seconds of a training step at the plan's batch and crop.</param>
public sealed record PlanTiming(string Model, int BaseChannels, double StepSeconds);

/// <summary>
/// A training plan: the model, the patch and batch, the schedule, the normalisation and the instance settings chosen
/// for one data set on one machine within a time budget (<see cref="TrainingPlanner"/>), with the reason for each
/// choice and the measurements they came from. <c>segment plan</c> writes it as <c>plan.json</c>; edit it and pass it
/// to <c>segment train --plan</c> (flags given on the command line win over it).
/// </summary>
public sealed record TrainingPlan
{
    /// <summary>semantic, instance or panoptic.</summary>
    public string Task { get; init; } = "semantic";
    /// <summary>The encoder (unet: the paper's; or a registered one).</summary>
    public string Encoder { get; init; } = "unet";
    /// <summary>Pretrained encoder weights (builtin for ML.NET's ResNet-18), or null.</summary>
    public string? EncoderWeights { get; init; }
    /// <summary>The U-Net's first-level channels.</summary>
    public int BaseChannels { get; init; } = 32;
    /// <summary>The U-Net's down-samplings.</summary>
    public int Depth { get; init; } = 4;
    /// <summary>A ResNet encoder's full-resolution skip into smp's decoder, its channels (0: none;
    /// <c>--full-res-skip</c>).</summary>
    public int FullResolutionSkip { get; init; }
    /// <summary>batch or group.</summary>
    public string Norm { get; init; } = "batch";
    /// <summary>The random training crop (patch).</summary>
    public Size2? Crop { get; init; }
    /// <summary>Images per step.</summary>
    public int BatchSize { get; init; } = 4;
    /// <summary>Validation images per batch (1 when their sizes differ).</summary>
    public int ValBatchSize { get; init; } = 1;
    /// <summary>Epochs: the schedule is laid out over them.</summary>
    public int Epochs { get; init; } = 40;
    /// <summary>Evaluate every this many epochs (and after the last).</summary>
    public int EvalEvery { get; init; } = 1;
    /// <summary>AdamW's base learning rate, with the poly schedule after a 5 % warm-up.</summary>
    public double LearningRate { get; init; } = 1e-3;
    /// <summary>The random scale range before the crop (the augmentation's strength).</summary>
    public double ScaleMin { get; init; } = 0.5;
    /// <summary>The random scale range before the crop.</summary>
    public double ScaleMax { get; init; } = 2;
    /// <summary>The decay of the weight average validated and saved (<c>--ema</c>); null for none.</summary>
    public double? WeightAverageDecay { get; init; }
    /// <summary>Flip vertically too (no up or down in microscopy and aerial images).</summary>
    public bool VerticalFlip { get; init; }
    /// <summary>percentile, zscore, dataset, imagenet or symmetric (<c>--normalize</c>).</summary>
    public string Normalize { get; init; } = "imagenet";
    /// <summary>Class weights of the loss (<c>--class-weights</c>): median-frequency, inverse-frequency, or null for
    /// none.</summary>
    public string? ClassWeights { get; init; }
    /// <summary>Instance data: the boundary width in pixels.</summary>
    public int? BoundaryWidth { get; init; }
    /// <summary>Instance data: the smallest object kept, in pixels.</summary>
    public int? MinObjectSize { get; init; }
    /// <summary>Instance data: what the model predicts besides the classes, boundary or distance
    /// (<c>--instance-target</c>); null: the boundary.</summary>
    public string? InstanceTarget { get; init; }
    /// <summary>libtorch's CPU threads.</summary>
    public int Threads { get; init; } = 1;
    /// <summary>Decoded samples kept in memory, MiB.</summary>
    public int CacheMb { get; init; }
    /// <summary>The budget the epochs were fitted to; null when none was given (the plan then fits a default
    /// hour).</summary>
    public TimeSpan? TimeLimit { get; init; }
    /// <summary>The budget's expected use: seconds of training, of validation and of the rest (data check, layer
    /// check, checkpoints).</summary>
    public double[] ExpectedSeconds { get; init; } = Array.Empty<double>();
    /// <summary>The step of each candidate model, as measured on <see cref="Machine"/>: a plan made again from these
    /// timings is the same plan.</summary>
    public PlanTiming[] Timings { get; init; } = Array.Empty<PlanTiming>();
    /// <summary>Where the timings were taken: the CPU (or GPU) and its threads.</summary>
    public string Machine { get; init; } = "";
    /// <summary>Why each value is what it is, a line each.</summary>
    public string[] Reasons { get; init; } = Array.Empty<string>();
    /// <summary>The data it was made for.</summary>
    public DataFingerprint? Fingerprint { get; init; }

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, Converters = { new JsonStringEnumConverter() },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>The plan as plan.json holds it.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Reads plan.json; a file that is not a plan is an <see cref="OptionsException"/> naming it.</summary>
    public static TrainingPlan Load(string path)
    {
        string text;
        try { text = RegularFile.ReadAllText(path, Limits.ConfigFileBytes, "plan (plan.json from 'segment plan')"); }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            throw new OptionsException(e.Message);
        }
        try
        {
            var plan = JsonSerializer.Deserialize<TrainingPlan>(text, Json)
                ?? throw new OptionsException($"{path}: empty plan.");
            plan.Validate(path);
            return plan;
        }
        catch (JsonException e)
        {
            throw new OptionsException($"{path}: not a plan ({e.Message}).");
        }
    }

    /// <summary>Refuses values no training could use, naming the field.</summary>
    public void Validate(string origin)
    {
        void Check(bool ok, string what) { if (!ok) throw new OptionsException($"{origin}: {what}."); }
        Check(BaseChannels is >= 1 and <= 1024, $"BaseChannels {BaseChannels}: expected 1 to 1024");
        Check(Depth is >= 1 and <= 8, $"Depth {Depth}: expected 1 to 8");
        Check(FullResolutionSkip is >= 0 and <= 1024, $"FullResolutionSkip {FullResolutionSkip}: expected 0 (none) to "
            + "1024");
        Check(FullResolutionSkip == 0 || Encoder != "unet", $"FullResolutionSkip {FullResolutionSkip} with Encoder "
            + "unet: the skip is for a ResNet encoder's decoder");
        Check(Norm is "batch" or "group" or "none", $"Norm '{Norm}': expected batch, group or none");
        Check(BatchSize is >= 1 and <= 4096, $"BatchSize {BatchSize}: expected 1 to 4096");
        Check(ValBatchSize >= 1, $"ValBatchSize {ValBatchSize}: expected at least 1");
        Check(Epochs is >= 1 and <= 100000, $"Epochs {Epochs}: expected 1 to 100000");
        Check(EvalEvery >= 1, $"EvalEvery {EvalEvery}: expected at least 1");
        Check(LearningRate > 0 && double.IsFinite(LearningRate), $"LearningRate {LearningRate}: expected a positive "
            + "number");
        Check(ScaleMin > 0 && ScaleMax >= ScaleMin && ScaleMax <= 10, $"ScaleMin {ScaleMin}, ScaleMax {ScaleMax}: "
            + "expected 0 < min <= max <= 10");
        Check(WeightAverageDecay is null or (> 0 and < 1), $"WeightAverageDecay {WeightAverageDecay}: expected "
            + "between 0 and 1, or null");
        Check(Threads >= 1, $"Threads {Threads}: expected at least 1");
        Check(CacheMb >= 0, $"CacheMb {CacheMb}: expected 0 or more");
        Check(Task is "semantic" or "instance" or "panoptic", $"Task '{Task}': expected semantic, instance or "
            + "panoptic");
        Check(Normalize is "percentile" or "zscore" or "dataset" or "imagenet" or "symmetric",
            $"Normalize '{Normalize}': expected percentile, zscore, dataset, imagenet or symmetric");
        Check(Crop is null || Crop.Value.Height >= 1 && Crop.Value.Width >= 1, $"Crop {Crop}: expected HxW");
        Check(BoundaryWidth is null or (>= 1 and <= 16), $"BoundaryWidth {BoundaryWidth}: expected 1 to 16");
        Check(MinObjectSize is null or >= 1, $"MinObjectSize {MinObjectSize}: expected at least 1");
        Check(InstanceTarget is null or "boundary" or "distance", $"InstanceTarget '{InstanceTarget}': expected "
            + "boundary or distance, or null");
        Check(InstanceTarget is null || Task != "semantic", $"InstanceTarget '{InstanceTarget}' with Task semantic: "
            + "the target is instance data's");
        Check(ClassWeights is null or "none" or "median-frequency" or "inverse-frequency", $"ClassWeights "
            + $"'{ClassWeights}': expected none, median-frequency or inverse-frequency");
    }
}
