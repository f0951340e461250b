using System.Globalization;
using Segmentation.Data;
using Segmentation.Models;

namespace Segmentation.Training;

/// <summary>What a plan is made for, besides the data.</summary>
public sealed record PlannerOptions
{
    /// <summary>The budget, wall clock, for the whole run; null plans a default hour.</summary>
    public TimeSpan? TimeLimit { get; init; }
    /// <summary>Path of ML.NET's ImageNet-trained ResNet-18 when it is at hand (the CLI looks in the NuGet cache);
    /// every data set is then planned on it, pretrained.</summary>
    public string? PretrainedResNet18 { get; init; }
    /// <summary>libtorch's CPU threads to plan and train with; null: the free cores (<see
    /// cref="CpuThreads.Auto"/>).</summary>
    public int? Threads { get; init; }
    /// <summary>Known step timings (a plan.json's): candidates found here are not measured again, so a plan made from
    /// the same timings is the same plan.</summary>
    public IReadOnlyList<PlanTiming>? Timings { get; init; }
    /// <summary>Device for the timings: the one the run trains on (auto, cpu, cuda).</summary>
    public string Device { get; init; } = "auto";
}

/// <summary>
/// Makes a <see cref="TrainingPlan"/> from a data set's <see cref="DataFingerprint"/> and this machine's measured step
/// times, nnU-Net's idea with a time budget: the patch from the images and objects, the batch from the patch, the
/// width from what fits the budget, the epochs and evaluations from the measured seconds. The rules and the figures
/// behind each are in docs/plan.md.
/// </summary>
public static class TrainingPlanner
{
    /// <summary>The budget planned when none is given.</summary>
    public static readonly TimeSpan DefaultBudget = TimeSpan.FromHours(1);
    /// <summary>A wider network is taken only while it still gets this many epochs in the budget.</summary>
    public const int MinEpochsForWiderModel = 30;
    /// <summary>The share of the budget validation may take.</summary>
    public const double ValidationShare = 0.15;
    /// <summary>What the data check is assumed to decode a second (a floor: PNG decoding runs at several times
    /// this).</summary>
    public const double DecodedBytesPerSecond = 64 << 20;
    /// <summary>Pixels in a batch the crop and batch are sized around (8 crops of 128 x 128).</summary>
    public const int BatchPixels = 8 * 128 * 128;

    /// <summary>Plans training on <paramref name="train"/> (validated on <paramref name="val"/>), timing a step of
    /// each candidate model here. <paramref name="progress"/> gets a line per stage.</summary>
    public static TrainingPlan Plan(SegmentationDataset train, SegmentationDataset? val, PlannerOptions options,
        IProgress<string>? progress = null, DataFingerprint? fingerprint = null)
    {
        var f = fingerprint ?? DataFingerprint.Of(train);
        var reasons = new List<string>();
        bool objects = train.Description.Task != SegmentationTaskKind.Semantic;
        var (threads, why) = options.Threads is { } given ? (given, "as given") : CpuThreads.Auto();
        reasons.Add($"threads {threads}: {why}");
        // ImageNet features wherever the weights are at hand: colour photographs, DSB2018's gray and colour
        // microscopy, ISBI 2012's electron microscopy (docs/plan.md)
        bool pretrained = options.PretrainedResNet18 is not null;
        string normalize = Normalize(f, objects, pretrained, reasons);
        var crop = Crop(f, objects, reasons);
        int batch = Math.Clamp((int)Math.Round(BatchPixels / (double)(crop.Height * crop.Width)), 2, 16);
        reasons.Add($"batch {batch}: about {BatchPixels:N0} pixels a step ({BatchPixels / (128 * 128)} crops of "
            + $"128x128), at least 2");
        string norm = NormLayer(objects, pretrained, batch, reasons);
        CpuThreads.Apply(threads);
        var timings = (pretrained ? new[] { 0 } : new[] { 32, 16 }).Select(width => Timing(width, pretrained, norm,
            f.Channels, train.Description.Classes, batch, crop, options, progress)).ToList();
        var chosen = Budget(train, val, f, objects, batch, crop, timings, options.TimeLimit, pretrained, reasons);
        var (boundary, minSize) = objects ? InstanceSizes(f, reasons) : (null, null);
        string? classWeights = ClassWeights(f, objects, train.Description.Classes, reasons);
        bool vflip = objects || f.Channels == 1;
        if (vflip) reasons.Add("vertical flips: microscopy and other images without an up");
        var (scaleMin, scaleMax) = ScaleRange(f, reasons);
        long cacheBytes = Math.Min((long)(f.DecodedBytes * 1.1), GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4);
        return new TrainingPlan
        {
            Task = train.Description.Task.ToString().ToLowerInvariant(),
            Encoder = pretrained ? "mlnet-resnet18" : "unet", EncoderWeights = pretrained ? "builtin" : null,
            BaseChannels = pretrained ? 32 : chosen.Timing.BaseChannels, Depth = 4, Norm = norm, Crop = crop,
            BatchSize = batch, ValBatchSize = val?.UniformSize() is null ? 1 : batch, Epochs = chosen.Epochs,
            EvalEvery = chosen.EvalEvery, LearningRate = 1e-3, ScaleMin = scaleMin, ScaleMax = scaleMax,
                VerticalFlip = vflip, Normalize = normalize,
            BoundaryWidth = boundary, MinObjectSize = minSize, ClassWeights = classWeights, Threads = threads,
                CacheMb = (int)(cacheBytes >> 20),
            TimeLimit = options.TimeLimit, Timings = timings.ToArray(), ExpectedSeconds = chosen.Expected,
            Machine = $"{NativeRuntime.CpuModel()}, {Environment.ProcessorCount} core(s), {threads} thread(s)",
            Reasons = reasons.ToArray(), Fingerprint = f,
        };
    }

    /// <summary>The random scale before the crop: nnU-Net's 0.7 to 1.4 for gray images (microscopy, electron
    /// microscopy: one pixel size across the set), the presets' 0.5 to 2 otherwise (photographs, whose objects' size
    /// varies with their distance, and the mixed magnifications of DSB2018).</summary>
    private static (double Min, double Max) ScaleRange(DataFingerprint f, List<string> reasons)
    {
        if (f.Channels == 1)
        {
            reasons.Add("scale 0.7-1.4 (nnU-Net's): gray images, taken at one pixel size (ISBI 2012: pixel accuracy "
                + "0.9123 against 0.9072 at 0.5-2, docs/plan.md)");
            return (0.7, 1.4);
        }
        reasons.Add("scale 0.5-2: colour images, whose objects' size varies");
        return (0.5, 2.0);
    }

    /// <summary>A class whose share of the labelled training pixels is below this is rare.</summary>
    public const double RareClassShare = 0.02;

    /// <summary>Median-frequency class weights (SegNet's) for semantic data of three or more classes where some class
    /// is rare (under <see cref="RareClassShare"/> of the labelled pixels): mean IoU counts every class alike, and
    /// without weights the rare ones are learned last. None for two classes and for instance data (whose boundary
    /// class has its own weight).</summary>
    private static string? ClassWeights(DataFingerprint f, bool objects, int classes, List<string> reasons)
    {
        var shares = f.ClassShares.Take(classes).ToArray();
        if (objects || classes < 3 || shares.Length == 0) return null;
        double rarest = shares.Min();
        if (rarest >= RareClassShare)
        {
            reasons.Add(string.Create(CultureInfo.InvariantCulture,
                $"class weights none: every class has {RareClassShare:P0}+ of the pixels (rarest {rarest:P1})"));
            return null;
        }
        int rare = shares.Count(s => s < RareClassShare);
        var inv = CultureInfo.InvariantCulture;
        reasons.Add($"class weights median-frequency: {rare} of {classes} classes under "
            + $"{RareClassShare.ToString("P0", inv)} of the pixels (rarest {rarest.ToString("P1", inv)}); mean IoU "
            + "counts each class alike");
        return "median-frequency";
    }

    /// <summary>Group norm for instance data (validated on whole images) and small batches.</summary>
    private static string NormLayer(bool objects, bool pretrained, int batch, List<string> reasons)
    {
        string norm = pretrained ? "batch" : objects || batch < 8 ? "group" : "batch";
        reasons.Add(pretrained ? "norm batch: the pretrained encoder's own" : norm == "group"
            ? "norm group: " + (objects ? "instance data validated on whole images (batch norm's statistics of crops "
                + "swung the DSB2018 scores, docs/instances.md)" : $"batch {batch} is too small for batch statistics")
            : $"norm batch: batch {batch}");
        return norm;
    }

    /// <summary>What a candidate model gets of the budget: its epochs and evaluations, and the expected seconds of
    /// training, validation and the rest.</summary>
    private sealed record Fit(PlanTiming Timing, int Epochs, int EvalEvery, double EpochSeconds, double EvalSeconds,
        double[] Expected);

    /// <summary>
    /// The epochs and evaluations each candidate gets within the budget (less the data check, counted from the decoded
    /// size so that the same data and timings give the same plan, and validation: whole images, a forward pass at
    /// about 0.4 of a training step per pixel, and the watershed for objects, at most <see cref="ValidationShare"/>),
    /// and the widest candidate that still gets <see cref="MinEpochsForWiderModel"/> epochs.
    /// </summary>
    private static Fit Budget(SegmentationDataset train, SegmentationDataset? val, DataFingerprint f, bool objects,
        int batch, Size2 crop, List<PlanTiming> timings, TimeSpan? limit, bool pretrained, List<string> reasons)
    {
        var inv = CultureInfo.InvariantCulture;
        var budget = limit ?? DefaultBudget;
        double checkSeconds = f.DecodedBytes / DecodedBytesPerSecond
            * (1 + (val?.Count ?? 0) / (double)Math.Max(1, train.Count));
        double valPixels = val?.TotalPixels() ?? 0, room = budget.TotalSeconds - checkSeconds - 20;
        int stepsPerEpoch = Math.Max(1, train.Count / batch);
        var fits = timings.Select(t =>
        {
            double epochSeconds = stepsPerEpoch * t.StepSeconds * 1.05;
            double evalSeconds = t.StepSeconds * valPixels / (batch * (double)crop.Height * crop.Width) * 0.4
                + (objects ? valPixels * 5e-8 : 0);
            int evaluations = evalSeconds <= 0 ? 0 : Math.Clamp((int)(room * ValidationShare / evalSeconds), 1, 40);
            int epochs = Math.Max(1, (int)((room - evaluations * evalSeconds) / epochSeconds));
            evaluations = Math.Min(evaluations, epochs);
            int every = evaluations == 0 ? 1 : Math.Max(1, (int)Math.Ceiling(epochs / (double)evaluations));
            return new Fit(t, epochs, every, epochSeconds, evalSeconds, new[] { epochs * epochSeconds,
                evaluations * evalSeconds, checkSeconds + 20 }.Select(s => Math.Round(s, 1)).ToArray());
        }).ToList();
        var chosen = fits.FirstOrDefault(x => x.Epochs >= MinEpochsForWiderModel) ?? fits[^1];
        reasons.Add(pretrained ? $"model: mlnet-resnet18 pretrained on ImageNet, the weights at hand ({(objects
            ? "objects: on DSB2018 it reached AP50 0.758 in 20 minutes where the U-Net from scratch reached 0.712"
            : f.Channels == 3 ? $"{f.ColourImages} of {f.Images} images in colour" : "gray images: on ISBI 2012 it "
                + "reached pixel accuracy 0.9157 in 20 minutes, the U-Net from scratch 0.9123, at half its epoch "
                + "time")}, docs/plan.md)"
            : $"model: U-Net, base {chosen.Timing.BaseChannels}: the widest measured that gets "
                + $"{MinEpochsForWiderModel}+ epochs in the budget (" + string.Join(", ", fits.Select(x =>
                    string.Create(inv, $"base {x.Timing.BaseChannels}: {x.Timing.StepSeconds:F3} s a step, "
                        + $"{x.Epochs} epochs"))) + ")");
        reasons.Add(string.Create(inv, $"epochs {chosen.Epochs}, evaluating every {chosen.EvalEvery}: "
            + $"{budget.TotalMinutes:F0} min{(limit is null ? " (no --time-limit: a default hour)" : "")} less the "
            + $"data check (~{checkSeconds:F0} s) and validation (~{chosen.EvalSeconds:F0} s each, at most "
            + $"{ValidationShare:P0} of the budget), at ~{chosen.EpochSeconds:F1} s an epoch"));
        return chosen;
    }

    /// <summary>Per-image percentiles where images differ in exposure (microscopy, and every instance data set:
    /// StarDist's), ImageNet's for a pretrained encoder on colour images, else the data set's own mean and
    /// std.</summary>
    private static string Normalize(DataFingerprint f, bool objects, bool pretrained, List<string> reasons)
    {
        var inv = CultureInfo.InvariantCulture;
        if (pretrained && !objects && f.Channels == 3)
        {
            reasons.Add("normalisation imagenet: the pretrained encoder's, for colour images");
            return "imagenet";
        }
        if (objects || f.IntensityVariation > 0.3)
        {
            var why = new List<string>();
            if (objects) why.Add("instance data");
            if (f.IntensityVariation > 0.3)
                why.Add(string.Create(inv, $"intensity ranges differ between images (variation "
                    + $"{f.IntensityVariation:F2} > 0.3)"));
            reasons.Add($"normalisation percentile (1-99.8 per image, StarDist's): {string.Join(", and ", why)}");
            return "percentile";
        }
        reasons.Add(string.Create(inv, $"normalisation dataset (mean and std over the set): images alike in intensity "
            + $"(variation {f.IntensityVariation:F2})"));
        return "dataset";
    }

    /// <summary>The patch: for objects, room for about six median objects across (at least 128); otherwise up to
    /// 256; never over the median image, in steps of 16 (four halvings).</summary>
    private static Size2 Crop(DataFingerprint f, bool objects, List<string> reasons)
    {
        int side = (int)Math.Min(f.Width.Median, f.Height.Median);
        int wanted = objects ? Math.Max(128, (int)Math.Round(6 * (f.Objects?.Diameter ?? 0) / 32) * 32) : 256;
        int crop = Math.Max(32, Math.Min(wanted, side) / 16 * 16);
        reasons.Add(objects ? string.Create(CultureInfo.InvariantCulture, $"crop {crop}x{crop}: six median objects "
            + $"({f.Objects?.Diameter:F0} px across) or 128, within the median image ({side} px)")
            : $"crop {crop}x{crop}: 256 or the median image's shorter side ({side} px)");
        return new Size2(crop, crop);
    }

    /// <summary>The boundary about an eighth of the median object's diameter (1 to 3 px); the smallest object kept
    /// half the 2nd percentile of the areas (4 to 64 px).</summary>
    private static (int?, int?) InstanceSizes(DataFingerprint f, List<string> reasons)
    {
        var o = f.Objects!;
        int boundary = Math.Clamp((int)Math.Round(o.Diameter / 8), 1, 3);
        int minSize = Math.Clamp((int)Math.Round(o.SmallArea / 2), 4, 64);
        reasons.Add(string.Create(CultureInfo.InvariantCulture, $"boundary {boundary} px (median object "
            + $"{o.Diameter:F0} px across / 8, 1 to 3); smallest object {minSize} px (half the 2nd percentile of the "
            + $"areas, {o.SmallArea:F0} px, 4 to 64)"));
        return (boundary, minSize);
    }

    private static PlanTiming Timing(int width, bool pretrained, string norm, int channels, int classes, int batch,
        Size2 crop, PlannerOptions options, IProgress<string>? progress)
    {
        var name = pretrained ? "mlnet-resnet18" : $"unet, base {width}, depth 4, {norm} norm";
        if (options.Timings?.FirstOrDefault(t => t.Model == name) is { } known) return known;
        var layer = norm == "group" ? Models.Layers.NormLayer.Group : Models.Layers.NormLayer.Batch;
        var model = (pretrained ? ModelDescription.For("mlnet-resnet18", classes, channels)
            : ModelDescription.UNet(classes, channels, width, 4, Models.Decoders.UpsamplingMode.Transposed, layer, 0))
            .Resolve();
        progress?.Report($"timing a training step of {name} at batch {batch}, {crop}");
        var result = TrainingBenchmark.Run(new TrainingBenchmarkOptions
        {
            Model = model, BatchSize = batch, Size = crop, Steps = 3, Warmup = 1, CompareBare = false,
            Device = options.Device,
        });
        return new PlanTiming(name, width, Math.Round(result.StepSeconds, 4));
    }
}
