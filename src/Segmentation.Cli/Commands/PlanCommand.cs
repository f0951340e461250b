using System.CommandLine;
using System.Globalization;
using Segmentation.Data;
using Segmentation.Models.Encoders;
using Segmentation.Training;

namespace Segmentation.Cli;

/// <summary>
/// <c>segment plan</c>: the training plan for a data set on this machine (nnU-Net's fingerprint and plan, with a time
/// budget), printed and written as plan.json for <c>segment train --plan</c>. <c>segment train</c> on a folder with no
/// model flags makes the same plan by itself.
/// </summary>
internal static class PlanCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("plan", "Fingerprint a data set, time candidate models on this machine, and write the "
            + "training plan (plan.json) that 'segment train --plan' follows.");
        var flags = new TrainFlags(cmd);
        cmd.SetAction(p => Run(ctx, cmd, flags, p));
        return cmd;
    }

    private static int Run(CommandContext ctx, Command cmd, TrainFlags flags, ParseResult p)
    {
        string outPath = p.GetValue(flags.OutDir) ?? "plan.json";
        Cli.RefuseToReplace(outPath, p.GetValue(flags.Overwrite), "plan.json");
        var plan = Make(ctx.Out, p, flags, cmd);
        Print(ctx.Out, plan);
        AtomicFile.WriteAllText(outPath, plan.ToJson());
        ctx.Out.WriteLine($"wrote {outPath}; train with: segment train --data {p.GetValue(flags.Data)} --plan "
            + $"{outPath}");
        return Cli.Ok;
    }

    /// <summary>Opens the data as <c>segment train</c> would with these flags and plans for it.</summary>
    internal static TrainingPlan Make(TextWriter log, ParseResult p, TrainFlags flags, Command cmd,
        IReadOnlyList<PlanTiming>? timings = null)
    {
        var config = TrainCommand.NewRunForPlanning(p, flags);
        if (config.Data.StartsWith("builtin:", StringComparison.OrdinalIgnoreCase))
            throw new OptionsException("The built-in data set has its own recipe; plan a folder (--data DIR).");
        var (train, val) = config.OpenData();
        log.WriteLine(train.DetectionReport);
        log.WriteLine($"data: {train.Count} training, {val?.Count ?? 0} validation images; fingerprinting (every "
            + "image decoded once)");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var fingerprint = DataFingerprint.Of(train);
        double fingerprintSeconds = clock.Elapsed.TotalSeconds;
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"fingerprint of the training images ({fingerprintSeconds:F1} s):"));
        foreach (var line in fingerprint.Describe()) log.WriteLine($"  {line}");
        var options = new PlannerOptions
        {
            TimeLimit = config.Trainer.Schedule.TimeLimit,
            PretrainedResNet18 = p.GetResult(flags.Model.Encoder) is { Implicit: false } ? null
                : MlNetResNet18.FindInNuGetCache(),
            Threads = config.Trainer.Threads, Timings = timings, Device = config.Trainer.Device,
        };
        return TrainingPlanner.Plan(train, val, options, new SynchronousProgress<string>(log.WriteLine), fingerprint);
    }

    /// <summary>The plan, a line per choice and why.</summary>
    internal static void Print(TextWriter log, TrainingPlan plan)
    {
        log.WriteLine($"plan ({plan.Machine}):");
        log.WriteLine($"  {string.Join(" ", Arguments(plan))}");
        foreach (var reason in plan.Reasons) log.WriteLine($"  - {reason}");
        if (plan.ExpectedSeconds is [var training, var validation, var rest])
            log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  expected: {training / 60:F1} min training, "
                + $"{validation / 60:F1} min validation, {rest / 60:F1} min besides"));
    }

    /// <summary>The plan as <c>segment train</c> flags.</summary>
    internal static List<string> Arguments(TrainingPlan plan)
    {
        var inv = CultureInfo.InvariantCulture;
        var a = new List<string> { "--task", plan.Task, "--encoder", plan.Encoder };
        if (plan.EncoderWeights is { } weights) a.AddRange(new[] { "--encoder-weights", weights });
        if (plan.Encoder == "unet")
            a.AddRange(new[] { "--base-channels", plan.BaseChannels.ToString(inv), "--depth",
                plan.Depth.ToString(inv) });
        else if (plan.FullResolutionSkip > 0)
            a.AddRange(new[] { "--full-res-skip", plan.FullResolutionSkip.ToString(inv) });
        a.AddRange(new[] { "--norm", plan.Norm });
        if (plan.Crop is { } crop) a.AddRange(new[] { "--crop", crop.ToString() });
        a.AddRange(new[] { "--batch-size", plan.BatchSize.ToString(inv), "--val-batch-size",
            plan.ValBatchSize.ToString(inv), "--epochs", plan.Epochs.ToString(inv), "--eval-every",
            plan.EvalEvery.ToString(inv), "--lr", plan.LearningRate.ToString("R", inv), "--normalize", plan.Normalize,
            "--threads", plan.Threads.ToString(inv), "--cache-mb", plan.CacheMb.ToString(inv) });
        if (plan.ScaleMin != 0.5 || plan.ScaleMax != 2)
            a.AddRange(new[] { "--scale", string.Create(inv, $"{plan.ScaleMin:R},{plan.ScaleMax:R}") });
        if (plan.VerticalFlip) a.Add("--vflip");
        if (plan.WeightAverageDecay is { } ema) a.AddRange(new[] { "--ema", ema.ToString("R", inv) });
        if (plan.ClassWeights is { } classWeights) a.AddRange(new[] { "--class-weights", classWeights });
        if (plan.BoundaryWidth is { } b) a.AddRange(new[] { "--boundary-width", b.ToString(inv) });
        if (plan.MinObjectSize is { } m) a.AddRange(new[] { "--min-object-size", m.ToString(inv) });
        if (plan.InstanceTarget is { } target) a.AddRange(new[] { "--instance-target", target });
        if (plan.TimeLimit is { } limit)
            a.AddRange(new[] { "--time-limit", ((long)Math.Ceiling(limit.TotalSeconds)).ToString(inv) + "s",
                "--fit-to-time-limit" });
        return a;
    }
}
