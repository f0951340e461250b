using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Segmentation.Models;
using Segmentation.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Cli;

/// <summary>
/// <c>segment bench optimizer</c>: the AdamW step alone on a model's parameters with fixed random gradients,
/// TorchSharp's per-parameter step and the fused one (<see cref="FusedAdamW"/>) alternating round by round, each on
/// its own copy of the state; medians and the paired ratio with its 95 % interval.
/// </summary>
internal static class BenchOptimizer
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("optimizer", "Time the AdamW step alone: per-parameter against fused, side by side.");
        var m = ModelFlags.Add(cmd);
        var rounds = new Option<int>("--rounds") { DefaultValueFactory = _ => 20 };
        var device = new Option<string>("--device") { DefaultValueFactory = _ => "auto" };
        cmd.Options.Add(rounds);
        cmd.Options.Add(device);
        cmd.SetAction(p =>
        {
            if (p.GetValue(rounds) < 2)
                throw new OptionsException($"--rounds {p.GetValue(rounds)} must be at least 2.");
            var dev = Devices.Resolve(p.GetValue(device));
            using var a = new SegmentationModel(ModelFlags.Read(p, m, shapes: false, 3, 2));
            using var b = new SegmentationModel(a.Description);
            a.to(dev); b.to(dev);
            foreach (var (x, y) in a.parameters().Zip(b.parameters()))
            {
                var g = randn(x.shape, device: dev) * 0.01;
                x.grad = g; y.grad = g.clone();
            }
            using var perParameter = optim.AdamW(a.parameters(), 1e-4, weight_decay: 1e-4);
            using var adam = optim.AdamW(b.parameters(), 1e-4, weight_decay: 1e-4);
            using var fused = new FusedAdamW(adam);
            var times = new[] { new List<double>(), new List<double>() };
            for (int i = 0; i <= p.GetValue(rounds); i++) // round 0 warms up
            {
                var t0 = Time(() => { using (NewDisposeScope()) perParameter.step(); }, dev);
                var t1 = Time(() => fused.Step(null, null), dev);
                if (i > 0) { times[0].Add(t0); times[1].Add(t1); }
            }
            ctx.Out.WriteLine($"{a.ParameterCount():N0} parameters in {a.parameters().Count()} tensors, device {dev}, "
                + $"{get_num_threads()} thread(s)");
            ctx.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"per-parameter AdamW median "
                + $"{TrainingBenchmark.Median(times[0]) * 1000:F1} ms; fused median "
                + $"{TrainingBenchmark.Median(times[1]) * 1000:F1} ms"));
            ctx.Out.WriteLine($"a per-parameter step takes {PairedRatio.Of(times[0], times[1])} times as long as a "
                + "fused one");
            return Cli.Ok;
        });
        return cmd;
    }

    private static double Time(Action step, Device device)
    {
        var clock = Stopwatch.StartNew();
        step();
        if (device.type == TorchSharp.DeviceType.CUDA) cuda.synchronize();
        return clock.Elapsed.TotalSeconds;
    }
}
