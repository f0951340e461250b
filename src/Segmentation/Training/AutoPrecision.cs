using System.Diagnostics;
using Segmentation.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>What <see cref="AutoPrecision"/> decided, and why.</summary>
/// <param name="Chosen">float32 or bfloat16.</param>
/// <param name="Reason">One line for the user: the CPU's flags, or the measured ratio.</param>
/// <param name="Bf16Speedup">float32 step time / bfloat16 step time, when it was measured.</param>
public sealed record PrecisionDecision(Precision Chosen, string Reason, double? Bf16Speedup);

/// <summary>
/// Chooses the training arithmetic from the hardware: bfloat16 only where it is native (on the CPU, the
/// <c>avx512_bf16</c> or <c>amx_bf16</c> flags in <c>/proc/cpuinfo</c>, and oneDNN not held below them by
/// <c>ONEDNN_MAX_CPU_ISA</c>) and where a quick side-by-side of this model's forward and backward pass at the training
/// shape, alternating float32 and bfloat16, shows bfloat16 at least <see cref="Threshold"/> times as fast; a step of
/// under <see cref="MinimumStepGmac"/> GMAC is not worth it (and not timed, so small runs repeat exactly). Without
/// native bfloat16, bfloat16 is emulated (16 times slower than float32 was measured on an AVX2 CPU), and float32 is
/// chosen without timing anything.
/// </summary>
public static class AutoPrecision
{
    /// <summary>bfloat16 must make the step at least this much faster to be chosen (its rounding costs
    /// accuracy).</summary>
    public const double Threshold = 1.15;

    /// <summary>Steps of less arithmetic than this (billions of multiply-accumulates, forward and backward) stay
    /// float32 without timing.</summary>
    public const double MinimumStepGmac = 10;

    /// <summary>The CPU flags line of /proc/cpuinfo ("" elsewhere).</summary>
    public static string CpuFlags() => OperatingSystem.IsLinux() && File.Exists("/proc/cpuinfo")
        ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal)) ?? ""
        : "";

    /// <summary>Why bfloat16 is not native on a CPU with <paramref name="flags"/> (null: it is).</summary>
    public static string? NoNativeBf16(string flags, string? maxIsa = null)
    {
        var set = flags.Split(new[] { ' ', '\t', ':' }, StringSplitOptions.RemoveEmptyEntries).ToHashSet();
        if (!set.Contains("avx512_bf16") && !set.Contains("amx_bf16"))
            return "this CPU has no native bfloat16 (neither avx512_bf16 nor amx_bf16 among its flags), so bf16 would "
                + "be emulated";
        maxIsa ??= Environment.GetEnvironmentVariable("ONEDNN_MAX_CPU_ISA");
        if (maxIsa is { Length: > 0 } && !maxIsa.Contains("bf16", StringComparison.OrdinalIgnoreCase)
            && !maxIsa.Contains("amx", StringComparison.OrdinalIgnoreCase) && !maxIsa.Equals("all",
                StringComparison.OrdinalIgnoreCase))
            return $"ONEDNN_MAX_CPU_ISA={maxIsa} keeps oneDNN from this CPU's bfloat16 instructions";
        return null;
    }

    /// <summary>
    /// The decision for <paramref name="model"/> on <paramref name="device"/> at input <paramref name="shape"/> (N x C
    /// x
    /// H x W). The model is timed in eval mode (its batch-norm statistics do not move) and left with no gradients and
    /// its precision as it was. <paramref name="cpuFlags"/> replaces /proc/cpuinfo's (tests fake a CPU).
    /// </summary>
    public static PrecisionDecision Choose(SegmentationModel model, Device device, long[] shape,
        string? cpuFlags = null)
    {
        if (device.type == DeviceType.CPU && NoNativeBf16(cpuFlags ?? CpuFlags()) is { } why)
            return new PrecisionDecision(Precision.Float32, why, null);
        // forward and backward: about three times the forward pass's arithmetic
        double gmac = 3 * shape[0] * ModelSummary.EstimateMultiplyAccumulates(model, (int)shape[2], (int)shape[3])
            / 1e9;
        if (gmac < MinimumStepGmac)
            return new PrecisionDecision(Precision.Float32, $"this model's step at {string.Join("x", shape)} is "
                + $"{gmac:F1} GMAC, under {MinimumStepGmac}: too little arithmetic for bf16 to repay its rounding (and "
                + "a decision this close would vary from run to run)", null);
        double speedup = Measure(model, device, shape, Precision.BFloat16);
        string where = device.type == DeviceType.CPU ? "native bfloat16 on this CPU" : $"bfloat16 on {device}";
        return speedup >= Threshold
            ? new PrecisionDecision(Precision.BFloat16, $"{where}, and this model's step at "
                + $"{string.Join("x", shape)} is {speedup:F2}x as fast in bf16 as in fp32", speedup)
            : new PrecisionDecision(Precision.Float32, $"{where}, but this model's step at {string.Join("x", shape)} "
                + $"is only {speedup:F2}x as fast in bf16 as in fp32 (bf16 needs {Threshold:F2}x)", speedup);
    }

    /// <summary>float32 step time / <paramref name="other"/> step time for this model's forward and backward pass:
    /// one warm-up of each, then three of each, alternating; the ratio of the medians.</summary>
    public static double Measure(SegmentationModel model, Device device, long[] shape, Precision other)
    {
        var saved = model.Precision;
        bool training = model.training;
        model.eval();
        try
        {
            var times = new[] { new List<double>(), new List<double>() };
            using (var scope = NewDisposeScope())
            {
                // a fixed input that leaves the random generator alone
                var input = arange(shape.Aggregate(1L, (a, b) => a * b), ScalarType.Float32, device).sin_()
                    .view(shape);
                for (int i = 0; i < 4; i++)
                    for (int c = 0; c < 2; c++)
                    {
                        model.Precision = c == 0 ? Precision.Float32 : other;
                        double t = TimeStep(model, input);
                        if (i > 0) times[c].Add(t);
                    }
            }
            return TrainingBenchmark.Median(times[0]) / TrainingBenchmark.Median(times[1]);
        }
        finally
        {
            model.Precision = saved;
            model.zero_grad();
            model.train(training);
        }
    }

    private static double TimeStep(SegmentationModel model, Tensor input)
    {
        using var scope = NewDisposeScope();
        var clock = Stopwatch.StartNew();
        var logits = model.forward(input).Logits;
        logits.square().mean().backward();
        logits.sum().item<float>(); // the device has finished
        return clock.Elapsed.TotalSeconds;
    }
}
