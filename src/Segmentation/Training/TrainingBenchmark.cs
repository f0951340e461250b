using System.Diagnostics;
using Segmentation.Data;
using Segmentation.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>What <see cref="TrainingBenchmark"/> measures.</summary>
public sealed record TrainingBenchmarkOptions
{
    /// <summary>Model shape.</summary>
    public UNetOptions Model { get; init; } = new();
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
    /// <summary>Also time a bare TorchSharp loop (forward, cross-entropy, backward, AdamW step) on the same batch, alternating step by step.</summary>
    public bool CompareBare { get; init; } = true;
    /// <summary>Seed.</summary>
    public int Seed { get; init; }
}

/// <summary>Timings of <see cref="TrainingBenchmark.Run"/>.</summary>
public sealed record TrainingBenchmarkResult
{
    /// <summary>Median seconds of the trainer's step.</summary>
    public double StepSeconds { get; init; }
    /// <summary>Images per second of the trainer's step (batch / median).</summary>
    public double ImagesPerSecond { get; init; }
    /// <summary>Median seconds of the bare loop's step (NaN when not compared).</summary>
    public double BareStepSeconds { get; init; } = double.NaN;
    /// <summary>Trainer median / bare median (NaN when not compared).</summary>
    public double OverheadRatio => StepSeconds / BareStepSeconds;
    /// <summary>Every timed trainer step.</summary>
    public double[] Steps { get; init; } = Array.Empty<double>();
    /// <summary>Every timed bare step.</summary>
    public double[] BareSteps { get; init; } = Array.Empty<double>();
    /// <summary>Model parameters.</summary>
    public long Parameters { get; init; }
    /// <summary>Device used.</summary>
    public string Device { get; init; } = "";
    /// <summary>Allocator tuning status.</summary>
    public string Allocator { get; init; } = "";
    /// <summary>What the convolution check chose for the trainer's model.</summary>
    public string Convolutions { get; init; } = "";
    /// <summary>Seconds the convolution check took (once per process and shape).</summary>
    public double CheckSeconds { get; init; }
}

/// <summary>
/// Times the trainer's training step on one fixed random batch and, side by side (alternating step by step, each with
/// its own model and optimiser), the same step written as a bare TorchSharp loop.
/// </summary>
public static class TrainingBenchmark
{
    /// <summary>Runs the benchmark. Allocator tuning is whatever the process has (see <see cref="AllocatorTuning"/>).</summary>
    public static TrainingBenchmarkResult Run(TrainingBenchmarkOptions o, IProgress<string>? progress = null)
    {
        if (o.Steps < 1 || o.Warmup < 0 || o.BatchSize < 1) throw new OptionsException("Benchmark steps and batch size must be at least 1 and warm-up at least 0.");
        random.manual_seed(o.Seed);
        var (h, w) = (o.Size.Height, o.Size.Width);
        var rng = new Random(o.Seed);
        var images = new byte[o.BatchSize * o.Model.InChannels * h * w];
        var masks = new byte[o.BatchSize * h * w];
        rng.NextBytes(images);
        for (int i = 0; i < masks.Length; i++) masks[i] = (byte)rng.Next(o.Model.Classes);
        var batch = new HostBatch { Count = o.BatchSize, Channels = o.Model.InChannels, Height = h, Width = w, Images = images, Masks = masks };
        var norm = Normalization.DefaultFor(o.Model.InChannels);

        using var model = new UNet(o.Model);
        using var trainer = new Trainer(model, new TrainerOptions { Device = o.Device, TuneAllocator = false, LearningRate = 1e-4 });
        var device = trainer.Device;

        using var bareModel = new UNet(o.Model);
        bareModel.to(device);
        bareModel.train();
        using var bareOpt = optim.AdamW(bareModel.parameters(), 1e-4, weight_decay: 1e-4);
        using var fixedImages = tensor(images, new long[] { o.BatchSize, o.Model.InChannels, h, w }, ScalarType.Byte).to(device);
        using var fixedMasks = tensor(masks, new long[] { o.BatchSize, h, w }, ScalarType.Byte).to(device).to_type(ScalarType.Int64);
        using var bareInput = norm.Apply(fixedImages);

        float BareStep()
        {
            using var scope = NewDisposeScope();
            bareOpt.zero_grad();
            var loss = nn.functional.cross_entropy(bareModel.forward(bareInput), fixedMasks, ignore_index: 255);
            loss.backward();
            bareOpt.step();
            return loss.item<float>();
        }

        // As the trainer does before its first step (the bare loop's model checks itself on its first forward).
        var routes = model.RouteConvolutions(new long[] { o.BatchSize, o.Model.InChannels, h, w }, training: true)!;
        progress?.Report(routes.Summary());

        var ours = new List<double>();
        var bare = new List<double>();
        model.train();
        for (int i = 0; i < o.Warmup + o.Steps; i++)
        {
            var sw = Stopwatch.StartNew();
            trainer.TrainStep(batch, norm, applyOptimizer: true);
            double t = sw.Elapsed.TotalSeconds;
            if (i >= o.Warmup) ours.Add(t);
            string line = $"step {i + 1}/{o.Warmup + o.Steps}{(i < o.Warmup ? " (warm-up)" : "")}: trainer {t:F3} s";
            if (o.CompareBare)
            {
                sw.Restart();
                BareStep();
                double b = sw.Elapsed.TotalSeconds;
                if (i >= o.Warmup) bare.Add(b);
                line += $", bare {b:F3} s";
            }
            progress?.Report(line);
        }
        double median = Median(ours);
        return new TrainingBenchmarkResult
        {
            StepSeconds = median, ImagesPerSecond = o.BatchSize / median, Steps = ours.ToArray(), BareSteps = bare.ToArray(),
            BareStepSeconds = bare.Count > 0 ? Median(bare) : double.NaN, Parameters = model.ParameterCount(), Device = device.ToString(),
            Allocator = AllocatorTuning.Status, Convolutions = routes.Summary(), CheckSeconds = routes.Seconds,
        };
    }

    /// <summary>The median.</summary>
    public static double Median(IReadOnlyList<double> values)
    {
        var s = values.Order().ToArray();
        return s.Length == 0 ? double.NaN : s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}
