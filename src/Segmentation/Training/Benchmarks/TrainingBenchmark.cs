using System.Diagnostics;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>What <see cref="TrainingBenchmark"/> measures.</summary>
internal sealed record TrainingBenchmarkOptions
{
    /// <summary>The model.</summary>
    public ModelDescription Model { get; init; } = new();
    /// <summary>Images per step.</summary>
    public int BatchSize { get; init; } = 2;
    /// <summary>Input size.</summary>
    public Size2 Size { get; init; } = new(256, 256);
    /// <summary>Timed steps (per contender).</summary>
    public int Steps { get; init; } = 10;
    /// <summary>Untimed steps first (per contender).</summary>
    public int Warmup { get; init; } = 2;
    /// <summary>Device.</summary>
    public string Device { get; init; } = "auto";
    /// <summary>
    /// The trainer's step is timed once per precision listed, each with its own model and optimiser, alternating step
    /// by step (the first is the baseline of the ratios).
    /// </summary>
    public IReadOnlyList<Precision> Precisions { get; init; } = new[] { Precision.Float32 };
    /// <summary>Also time a bare TorchSharp loop (forward, cross-entropy, backward, AdamW step, in the first precision,
    /// without loss scaling) on the same batch, alternating step by step.</summary>
    public bool CompareBare { get; init; } = true;
    /// <summary>Seed.</summary>
    public int Seed { get; init; }
    /// <summary>Also time the first precision's trainer as one process of this group (gradients all-reduced in
    /// buckets every step), alternating with the others: the cost of data-parallel machinery at this world
    /// size.</summary>
    public Distributed.ProcessGroup? Group { get; init; }
    /// <summary>Also time the first precision's trainer with TorchSharp's per-parameter AdamW (and the host-side loss
    /// scaler) instead of the fused step, alternating with the others.</summary>
    public bool ComparePerParameterOptimizer { get; init; }
    /// <summary>After the timed steps, as many more of the first contender, timed by part (<see
    /// cref="TrainingBenchmarkResult.Profile"/>).</summary>
    public bool Profile { get; init; }
}

/// <summary>One contender's timings.</summary>
/// <param name="Name">trainer fp32, trainer bf16, ..., or bare fp32.</param>
/// <param name="Precision">Its precision.</param>
/// <param name="Steps">Every timed step, in seconds.</param>
/// <param name="BatchSize">Images per step.</param>
internal sealed record BenchmarkContender(string Name, Precision Precision, double[] Steps, int BatchSize)
{
    /// <summary>Median seconds per step.</summary>
    public double StepSeconds => TrainingBenchmark.Median(Steps);
    /// <summary>Batch / median.</summary>
    public double ImagesPerSecond => BatchSize / StepSeconds;
}

/// <summary>
/// How many times as long one contender's step takes as another's, from steps timed in alternation: each round's ratio
/// (adjacent in time, so the machine's drift cancels), their geometric mean, and a 95 % confidence interval from
/// Student's t on the logarithms. A noisy machine widens the interval instead of moving the figure unseen.
/// </summary>
/// <param name="Ratio">Geometric mean of the per-round ratios.</param>
/// <param name="Low">Lower end of the 95 % interval.</param>
/// <param name="High">Upper end.</param>
/// <param name="Pairs">Rounds compared.</param>
internal sealed record PairedRatio(double Ratio, double Low, double High, int Pairs)
{
    /// <summary>The ratio of <paramref name="numerator"/>'s steps to <paramref name="denominator"/>'s, round by
    /// round.</summary>
    public static PairedRatio Of(IReadOnlyList<double> numerator, IReadOnlyList<double> denominator)
    {
        int n = Math.Min(numerator.Count, denominator.Count);
        var logs = Enumerable.Range(0, n).Select(i => Math.Log(numerator[i] / denominator[i])).ToArray();
        double mean = logs.Average();
        if (n < 2) return new PairedRatio(Math.Exp(mean), double.NaN, double.NaN, n);
        double sd = Math.Sqrt(logs.Sum(x => (x - mean) * (x - mean)) / (n - 1));
        double half = StudentT975(n - 1) * sd / Math.Sqrt(n);
        return new PairedRatio(Math.Exp(mean), Math.Exp(mean - half), Math.Exp(mean + half), n);
    }

    /// <summary>The 97.5th percentile of Student's t with <paramref name="df"/> degrees of freedom.</summary>
    public static double StudentT975(int df) => df switch
    {
        1 => 12.706, 2 => 4.303, 3 => 3.182, 4 => 2.776, 5 => 2.571, 6 => 2.447, 7 => 2.365, 8 => 2.306,
        9 => 2.262, 10 => 2.228, <= 12 => 2.179, <= 15 => 2.131, <= 20 => 2.086, <= 30 => 2.042, <= 60 => 2.000,
        _ => 1.96,
    };

    /// <summary>"1.042 (95 % CI 1.031-1.054, 20 pairs)".</summary>
    public override string ToString() => string.Create(System.Globalization.CultureInfo.InvariantCulture,
        $"{Ratio:F3} (95 % CI {Low:F3}-{High:F3}, {Pairs} pairs)");
}

/// <summary>Timings of <see cref="TrainingBenchmark.Run"/>.</summary>
internal sealed record TrainingBenchmarkResult
{
    /// <summary>The trainer once per precision asked for, then the bare loop if compared.</summary>
    public IReadOnlyList<BenchmarkContender> Contenders { get; init; } = Array.Empty<BenchmarkContender>();
    /// <summary>Median seconds of the first trainer's step.</summary>
    public double StepSeconds => Contenders[0].StepSeconds;
    /// <summary>Images per second of the first trainer's step.</summary>
    public double ImagesPerSecond => Contenders[0].ImagesPerSecond;
    /// <summary>Median seconds of the bare loop's step (NaN when not compared).</summary>
    public double BareStepSeconds
        => Contenders.FirstOrDefault(c => c.Name.StartsWith("bare", StringComparison.Ordinal))?.StepSeconds
        ?? double.NaN;
    /// <summary>First trainer median / bare median (NaN when not compared).</summary>
    public double OverheadRatio => StepSeconds / BareStepSeconds;
    /// <summary>Each contender's steps against the first's, round by round (the first itself excluded).</summary>
    public IEnumerable<(BenchmarkContender Contender, PairedRatio Ratio)> RatiosToFirst =>
        Contenders.Skip(1).Select(c => (c, PairedRatio.Of(c.Steps, Contenders[0].Steps)));
    /// <summary>Model parameters.</summary>
    public long Parameters { get; init; }
    /// <summary>Device used.</summary>
    public string Device { get; init; } = "";
    /// <summary>Allocator tuning status.</summary>
    public string Allocator { get; init; } = "";
    /// <summary>What the convolution checks chose, one line per precision.</summary>
    public IReadOnlyList<string> Convolutions { get; init; } = Array.Empty<string>();
    /// <summary>With <see cref="TrainingBenchmarkOptions.Profile"/>: the mean seconds of a step in each part
    /// (<c>StepProfile</c>'s names, a part's parts after it: "forward: decoder: deformable sampling"), and of the whole
    /// step; empty otherwise.</summary>
    public IReadOnlyList<(string Part, double Seconds)> Profile { get; init; } = Array.Empty<(string, double)>();
    /// <summary>Seconds the convolution checks took (once per process, shape and precision).</summary>
    public double CheckSeconds { get; init; }
    /// <summary>CUDA: device memory in use after the timed steps (the caching allocator keeps its peak), in MiB; null
    /// elsewhere.</summary>
    public double? DeviceMemoryMiB { get; init; }
}

/// <summary>
/// Times the trainer's training step on one fixed random batch, once per precision and, side by side (alternating step
/// by step, each with its own model and optimiser), the same step written as a bare TorchSharp loop.
/// </summary>
internal static class TrainingBenchmark
{
    /// <summary>Runs the benchmark. Allocator tuning is whatever the process has (see <see
    /// cref="AllocatorTuning"/>).</summary>
    public static TrainingBenchmarkResult Run(TrainingBenchmarkOptions o, IProgress<string>? progress = null)
    {
        if (o.Steps < 1 || o.Warmup < 0 || o.BatchSize < 1)
            throw new OptionsException("Benchmark steps and batch size must be at least 1 and warm-up at least 0.");
        if (o.Precisions.Count == 0 || o.Precisions.Distinct().Count() != o.Precisions.Count)
            throw new OptionsException("Benchmark precisions must be listed once each, at least one.");
        random.manual_seed(o.Seed);
        var batch = RandomBatch(o);
        var norm = Normalization.DefaultFor(o.Model.InChannels);
        var disposables = new List<IDisposable>();
        try
        {
            var steps = new List<(string Name, Precision Precision, Action Step)>();
            var routes = new List<ConvolutionReport>();
            Device device = CPU;
            long parameters = 0;
            foreach (var precision in o.Precisions)
            {
                steps.Add(Contender(o, $"trainer {precision.ShortName()}", ContenderOptions(o, precision), batch, norm,
                    disposables, out var trainer, out var report));
                (device, parameters) = (trainer.Device, trainer.Model.ParameterCount());
                routes.Add(report);
                progress?.Report($"{precision.ShortName()}: {report.Summary()}");
            }
            var first = ContenderOptions(o, o.Precisions[0]);
            if (o.ComparePerParameterOptimizer)
                steps.Add(Contender(o, $"trainer {o.Precisions[0].ShortName()} per-parameter", first with
                    { Optimizer = first.Optimizer with { Fused = false } }, batch, norm, disposables));
            if (o.Group is { } group)
                steps.Add(Contender(o, $"trainer {o.Precisions[0].ShortName()} {group.Backend} x{group.WorldSize}",
                    first with { BatchSize = group.WorldSize, Distribution = new() { ProcessGroup = group } }, batch,
                    norm, disposables));
            if (o.CompareBare)
            {
                var bare = o.Model.Encoder.Name == "unet" ? o.Precisions[0] : Precision.Float32;
                steps.Add(($"bare {bare.ShortName()}", bare, BareLoop(o, bare, batch, norm, device, disposables)));
            }
            var timings = Alternate(steps, o, progress);
            return new TrainingBenchmarkResult
            {
                Profile = o.Profile ? Profile(steps[0].Step, o.Steps) : Array.Empty<(string, double)>(),
                Contenders = steps.Select((s, i) => new BenchmarkContender(s.Name, s.Precision, timings[i].ToArray(),
                    o.BatchSize)).ToArray(),
                Parameters = parameters, Device = device.ToString(), Allocator = AllocatorTuning.Status,
                Convolutions = routes.Select((r, i) => $"{o.Precisions[i].ShortName()}: {r.Summary()}").ToArray(),
                    CheckSeconds = routes.Sum(r => r.Seconds),
                DeviceMemoryMiB = device.type == DeviceType.CUDA ? NativeRuntime.CudaMemoryInUse() / 1048576.0 : null,
            };
        }
        finally
        {
            foreach (var d in Enumerable.Reverse(disposables)) d.Dispose();
        }
    }

    /// <summary><paramref name="steps"/> steps timed by part: each part's mean seconds, and the whole step's
    /// ("step"), in order of first use.</summary>
    private static IReadOnlyList<(string, double)> Profile(Action step, int steps)
    {
        var totals = new Dictionary<string, double>(StringComparer.Ordinal);
        var order = new List<string>();
        double whole = 0;
        for (int i = 0; i < steps; i++)
        {
            var clock = Stopwatch.StartNew();
            var parts = StepProfile.Record(step);
            whole += clock.Elapsed.TotalSeconds;
            foreach (var (part, seconds) in parts)
            {
                if (!totals.ContainsKey(part)) order.Add(part);
                totals[part] = totals.GetValueOrDefault(part) + seconds;
            }
        }
        return order.Select(p => (p, totals[p] / steps)).Prepend(("step", whole / steps)).ToList();
    }

    /// <summary>The trainer's options for a contender: the benchmark's device, a small learning rate, and the
    /// architecture's own loss and gradient clipping (Mask2Former's set loss), so that the step is the one training
    /// takes.</summary>
    private static TrainerOptions ContenderOptions(TrainingBenchmarkOptions o, Precision precision)
    {
        var recipe = TrainingRecipes.For(o.Model, pretrainedEncoder: false);
        return new()
        {
            Device = o.Device, ManageProcessMemory = false, Optimizer = new() { LearningRate = 1e-4,
                GradientClipNorm = recipe.GradientClipNorm },
            Precision = new() { Kind = precision }, Loss = recipe.Loss ?? LossKind.CrossEntropy,
        };
    }

    /// <summary>A trainer on its own model, its layers checked at the benchmark's shape, as a timed step.</summary>
    private static (string Name, Precision Precision, Action Step) Contender(TrainingBenchmarkOptions o, string name,
        TrainerOptions options, HostBatch batch, Normalization norm, List<IDisposable> disposables) =>
        Contender(o, name, options, batch, norm, disposables, out _, out _);

    /// <summary>The same, with the trainer and what its layer check chose (as the trainer checks before its first
    /// step).</summary>
    private static (string Name, Precision Precision, Action Step) Contender(TrainingBenchmarkOptions o, string name,
        TrainerOptions options, HostBatch batch, Normalization norm, List<IDisposable> disposables, out Trainer trainer,
        out ConvolutionReport report)
    {
        var model = new SegmentationModel(o.Model);
        var t = trainer = new Trainer(model, options);
        disposables.Add(t); disposables.Add(model);
        report = model.CheckLayers(new long[] { o.BatchSize, o.Model.InChannels, o.Size.Height, o.Size.Width },
            training: true)!;
        model.train();
        return (name, options.Precision.Kind, () => t.TrainStep(batch, norm, applyOptimizer: true));
    }

    /// <summary>Warm-up and timed steps, one step of each contender in turn.</summary>
    private static List<double>[] Alternate(List<(string Name, Precision Precision, Action Step)> steps,
        TrainingBenchmarkOptions o, IProgress<string>? progress)
    {
        var timings = steps.Select(_ => new List<double>()).ToArray();
        for (int i = 0; i < o.Warmup + o.Steps; i++)
        {
            var line = new List<string>();
            for (int c = 0; c < steps.Count; c++)
            {
                var sw = Stopwatch.StartNew();
                steps[c].Step(); // each step ends by reading its loss back, so the device has finished it
                double t = sw.Elapsed.TotalSeconds;
                if (i >= o.Warmup) timings[c].Add(t);
                line.Add($"{steps[c].Name} {t:F3} s");
            }
            progress?.Report($"step {i + 1}/{o.Warmup + o.Steps}{(i < o.Warmup ? " (warm-up)" : "")}: "
                + $"{string.Join(", ", line)}");
        }
        return timings;
    }

    /// <summary>A fixed random batch of the benchmark's shape.</summary>
    private static HostBatch RandomBatch(TrainingBenchmarkOptions o)
    {
        var (h, w) = (o.Size.Height, o.Size.Width);
        var rng = new Random(o.Seed);
        var images = new byte[o.BatchSize * o.Model.InChannels * h * w];
        var masks = new byte[o.BatchSize * h * w];
        rng.NextBytes(images);
        for (int i = 0; i < masks.Length; i++) masks[i] = (byte)rng.Next(o.Model.Classes);
        return new HostBatch { Count = o.BatchSize, Channels = o.Model.InChannels, Height = h, Width = w,
            Images = images, Masks = masks };
    }

    /// <summary>
    /// The same step as a bare TorchSharp loop on its own model: for ResNet encoders the same layers written straight
    /// on
    /// TorchSharp (<see cref="StraightResNetUNet"/>, float32); for the U-Net encoder our model (which checks its
    /// convolutions on its first forward), in <paramref name="precision"/>.
    /// </summary>
    private static Action BareLoop(TrainingBenchmarkOptions o, Precision precision, HostBatch batch,
        Normalization norm, Device device, List<IDisposable> owned)
    {
        nn.Module model;
        Func<Tensor, Tensor> forward;
        if (o.Model.Encoder.Name == "unet")
        {
            var ours = new SegmentationModel(o.Model) { Precision = precision };
            (model, forward) = (ours, ours.Logits);
        }
        else
        {
            random.manual_seed(o.Seed);
            nn.Module<Tensor, Tensor> straight = o.Model.Encoder.Name.StartsWith("mit-b", StringComparison.Ordinal)
                ? new StraightSegformer(o.Model.Encoder.Name, o.Model.InChannels, o.Model.Classes)
                : new StraightResNetUNet(o.Model.Encoder.Name, o.Model.InChannels, o.Model.Classes);
            (model, forward) = (straight, straight.forward);
        }
        model.to(device);
        model.train();
        var optimizer = optim.AdamW(model.parameters(), 1e-4, weight_decay: 1e-4);
        var images = tensor(batch.Images, new long[] { o.BatchSize, o.Model.InChannels, o.Size.Height, o.Size.Width },
            ScalarType.Byte).to(device);
        var masks = tensor(batch.Masks, new long[] { o.BatchSize, o.Size.Height, o.Size.Width }, ScalarType.Byte)
            .to(device).to_type(ScalarType.Int64);
        var input = norm.Apply(images);
        owned.AddRange(new IDisposable[] { model, optimizer, images, masks, input });
        return () =>
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            var loss = nn.functional.cross_entropy(forward(input), masks, ignore_index: Labels.Ignore);
            loss.backward();
            optimizer.step();
            loss.item<float>();
        };
    }

    /// <summary>The median.</summary>
    public static double Median(IReadOnlyList<double> values)
    {
        var s = values.Order().ToArray();
        return s.Length == 0 ? double.NaN : s.Length % 2 == 1 ? s[s.Length / 2]
            : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}
