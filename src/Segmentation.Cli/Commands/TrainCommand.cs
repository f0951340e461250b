using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Layers;
using Segmentation.Models.Encoders;
using Segmentation.Tasks;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Cli;

/// <summary><c>segment train</c>: from a folder of images (or builtin:shapes) to a trained model.</summary>
internal static class TrainCommand
{
    /// <summary>The built-in main job: chosen to finish on a 2-core CPU in under 3 minutes with a validation mean IoU
    /// of at least 0.90 (about 80 s and 0.985-0.991 for seeds 0-2).</summary>
    internal static class ShapesDefaults
    {
        public const int Count = 600, Size = 64, BaseChannels = 16, Depth = 4, Epochs = 12, BatchSize = 8;
        public const double LearningRate = 3e-3;
        public const string Loss = "ce+dice";
    }

    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("train",
            "Train a model (a U-Net unless --arch or --encoder says otherwise; 'segment models' lists them). "
                + "Without --data it trains on the built-in shapes data set (the README's main job).");
        var flags = new TrainFlags(cmd);
        cmd.SetAction(p => Run(ctx, cmd, flags, p));
        return cmd;
    }

    private static int Run(CommandContext ctx, Command cmd, TrainFlags flags, ParseResult p)
    {
        if (DistributedLaunch.Relaunch(p.GetValue(flags.Nproc), p.GetValue(flags.Batch)) is { } exitCode)
            return exitCode;
        using var group = DistributedLaunch.Join(p.GetValue(flags.Device)!, p.GetValue(flags.DistBackend)!,
            p.GetValue(flags.DistTimeout));
        if (group is not null && p.GetValue(flags.OutDir) is null)
            throw new OptionsException("A distributed run needs --out: its processes must agree on the run folder "
                + "(segment train --nproc N names one for you).");
        if (group is { IsMain: false })
        {
            int rankCode = TrainRank(ctx, cmd, flags, p, group);
            group.Close();
            return rankCode;
        }
        bool asJson = p.GetValue(flags.Json);
        var log = asJson ? ctx.Err : ctx.Out;
        if (group is not null) log.WriteLine($"distributed: {group.WorldSize} processes ({group.Backend}); this is "
            + "rank 0, which writes the run folder");
        string dir = p.GetValue(flags.OutDir)
            ?? Path.Combine("runs", DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture));
        Checkpoint? resumeFrom = null;
        RunConfig config;
        Cli.RefuseFileAsFolder(dir);
        var run = new RunRecorder(dir);
        if (p.GetValue(flags.Resume) && p.GetValue(flags.Overwrite))
            throw new OptionsException("--resume continues a run and --overwrite deletes it; give one of them.");
        if (p.GetValue(flags.Resume) && !Directory.Exists(run.Directory))
            throw new SegmentationException($"{run.Directory}: no such run folder to resume.");
        using var ownership = run.Lock(); // before anything is read or deleted: one process per run folder
        if (!p.GetValue(flags.Resume) && run.HoldsRun)
        {
            if (run.HoldsFinishedEpoch && !p.GetValue(flags.Overwrite))
                throw new OptionsException($"{run.Directory} already holds a run ({DescribeRun(run)}); continue it "
                    + $"with --resume, or start over with --overwrite (which deletes its checkpoints, metrics and "
                    + $"summary).");
            log.WriteLine(run.HoldsFinishedEpoch
                ? $"--overwrite: deleted the previous run in {run.Directory}"
                : $"{run.Directory}: a start that finished no epoch was there; replaced");
            run.DeleteOutputs();
        }
        if (p.GetValue(flags.Resume)) (config, resumeFrom) = Resume(p, cmd, flags, dir, log);
        else config = NewConfig(log, cmd, flags, p, run, distributed: group is not null);
        try
        {
            int code = Train(ctx, log, dir, config, resumeFrom, asJson, tensorBoard: !p.GetValue(flags.NoTensorBoard),
                group, p.GetValue(flags.FailAt));
            group?.Close();
            return code;
        }
        catch when (resumeFrom is null && !run.HoldsFinishedEpoch)
        {
            // a start that failed (bad data, say) leaves nothing to block the next one, only what a crash left to
            // report
            run.DeleteOutputs(keep: run.CrashLog);
            throw;
        }
    }

    /// <summary>A process other than rank 0 of a distributed run: it reads what rank 0 reads and writes
    /// nothing.</summary>
    private static int TrainRank(CommandContext ctx, Command cmd, TrainFlags flags, ParseResult p,
        Segmentation.Distributed.ProcessGroup group)
    {
        string dir = p.GetValue(flags.OutDir)!; // checked by Run
        var quiet = TextWriter.Null;
        var (config, resumeFrom) = p.GetValue(flags.Resume) ? Resume(p, cmd, flags, dir, quiet)
            : (NewConfig(quiet, cmd, flags, p, null, distributed: true), (Checkpoint?)null);
        return Train(ctx, quiet, dir, config, resumeFrom, asJson: false, tensorBoard: false, group);
    }

    /// <summary>--resume: the run's own configuration (run.json) with the flags a resume may change, and its last
    /// checkpoint.</summary>
    private static (RunConfig, Checkpoint) Resume(ParseResult p, Command cmd, TrainFlags flags, string dir,
        TextWriter log)
    {
        if (p.GetValue(flags.OutDir) is null)
            throw new OptionsException("--resume needs --out, the run folder to continue.");
        var run = new RunRecorder(dir);
        var lastPath = run.Last;
        if (!File.Exists(lastPath)) throw new SegmentationException($"{lastPath}: no checkpoint to resume from.");
        var config = RunConfig.Load(run.RunJson, dir, log.WriteLine);
        RefuseFlagsThatCannotChange(p, cmd, dir, config.Arguments);
        var resumeFrom = Checkpoint.Load(lastPath);
        var t0 = config.Trainer;
        config = config with
        {
            Trainer = t0 with
            {
                Epochs = p.GetValue(flags.Epochs) ?? t0.Epochs,
                Workers = p.GetResult(flags.Workers) is { Implicit: false } ? p.GetValue(flags.Workers) : t0.Workers,
                CacheBytes = p.GetResult(flags.CacheMb) is { Implicit: false }
                    ? Math.Max(-1, p.GetValue(flags.CacheMb)) * (1L << 20) : t0.CacheBytes,
                Device = p.GetResult(flags.Device) is { Implicit: false } ? p.GetValue(flags.Device)! : t0.Device,
                Threads = p.GetValue(flags.Threads) is { } threads ? ExplicitThreads(threads) : t0.Threads,
                Schedule = t0.Schedule with
                {
                    TimeLimit = p.GetValue(flags.TimeLimit) is { } tl ? TimeSpan.FromSeconds(Cli.ParseDuration(tl))
                        : t0.Schedule.TimeLimit,
                },
                Checkpoints = t0.Checkpoints with
                {
                    EvalEvery = p.GetResult(flags.EvalEvery) is { Implicit: false } ? p.GetValue(flags.EvalEvery)
                        : t0.Checkpoints.EvalEvery,
                    EarlyStoppingPatience = p.GetValue(flags.Patience) ?? t0.Checkpoints.EarlyStoppingPatience,
                },
            },
        };
        config.Trainer.Validate();
        // a schedule fitted to --time-limit records its own length: the epochs the run was heading for
        log.WriteLine($"resuming {lastPath}: epoch {resumeFrom.State.Epoch} of "
            + $"{resumeFrom.State.ScheduleEpochs ?? config.Trainer.Epochs} done");
        return (config, resumeFrom);
    }

    /// <summary>A new run's configuration from the flags (the built-in shapes data get the main job's
    /// defaults).</summary>
    /// <summary>Flags that say where and how a run goes, not what it is: never recorded, never taken from a
    /// record.</summary>
    private static readonly string[] PlaceFlags = { "--out", "--overwrite", "--resume", "--config", "--json",
        "--verbose", "--no-tensorboard", "--fail-at" };

    /// <summary>The flags given on the command line (name and values, in order), the run-defining ones only.</summary>
    private static List<string> Arguments(Command cmd, ParseResult p)
    {
        var result = new List<string>();
        foreach (var option in cmd.Options)
        {
            if (PlaceFlags.Contains(option.Name) || p.GetResult(option) is not { Implicit: false } given) continue;
            result.Add(option.Name);
            result.AddRange(given.Tokens.Select(t => t.Value));
        }
        return result;
    }

    /// <summary>
    /// --config: a new run set up as a recorded one, with the flags given now taking precedence. A record that holds
    /// its command line is parsed again with the flags given now replacing its own (exact); an older record is merged
    /// leaf by leaf with the flags whose value differs from the default.
    /// </summary>
    private static RunConfig FromRecord(string path, Command cmd, ParseResult p, TrainFlags flags, TextWriter log)
    {
        if (p.GetValue(flags.Resume))
            throw new OptionsException("--config starts a new run from a record; --resume continues the run in --out. "
                + "Give one of them.");
        var recorded = RunConfig.Load(path, Path.GetDirectoryName(Path.GetFullPath(path)), log.WriteLine);
        var now = Arguments(cmd, p);
        var overridden = now.Where(a => a.StartsWith("--", StringComparison.Ordinal)).ToList();
        if (recorded.Arguments is { } before)
        {
            RefuseEditedFields(path, recorded, p.RootCommandResult.Command.Parse(new[] { "train" }.Concat(before)
                .ToArray()), flags);
            // The record's flags, less those given now, then the ones given now; data paths as the record resolved
            // them.
            var kept = new List<string>();
            for (int i = 0; i < before.Count; i++)
            {
                bool option = before[i].StartsWith("--", StringComparison.Ordinal);
                int end = i + 1;
                while (end < before.Count && !before[end].StartsWith("--", StringComparison.Ordinal)) end++;
                if (option && !overridden.Contains(before[i])) kept.AddRange(before.Skip(i).Take(end - i));
                i = end - 1;
            }
            var reparsed = p.RootCommandResult.Command.Parse(new[] { "train" }.Concat(kept).Concat(now).ToArray());
            if (reparsed.Errors.Count > 0)
                throw new OptionsException($"{path}: its recorded flags do not parse with today's "
                    + $"({reparsed.Errors[0].Message}).");
            var config = NewRun(reparsed, flags) with { Arguments = kept.Concat(now).ToList() };
            if (!overridden.Contains("--data")) config = config with { Data = recorded.Data };
            if (!overridden.Contains("--val")) config = config with { Val = recorded.Val };
            if (!overridden.Contains("--palette")) config =
                config with { DataOptions =
                    config.DataOptions with { PaletteFile = recorded.DataOptions.PaletteFile } };
            if (!overridden.Contains("--encoder-weights")) config =
                config with { EncoderWeights = recorded.EncoderWeights };
            var replaced = overridden.Count > 0 ? $", with {string.Join(", ", overridden)} from the command line" : "";
            log.WriteLine($"--config {path}{replaced}");
            return config;
        }
        var given = RunConfig.ToJson(NewRun(p, flags));
        var defaults = RunConfig.ToJson(NewRun(p.RootCommandResult.Command.Parse(new[] { "train" }), flags));
        var merged = RunConfig.ToJson(recorded);
        var changed = new List<string>();
        Override(merged, given, defaults, "", changed);
        if (changed.Count > 0) log.WriteLine($"--config {path} (a record without its command line), with "
            + $"{string.Join(", ", changed)} from the command line");
        // this run writes its own versions
        return RunConfig.FromJson(merged, path) with { Versions = null, Arguments = null };
    }

    /// <summary>Fields of a record's model and trainer that are filled in when the run starts, not set by
    /// flags.</summary>
    private static readonly string[] ResolvedFields = { "Model.Classes", "Model.InChannels",
        "Trainer.Checkpoints.PreviewImages",
        "Trainer.Threads" };

    /// <summary>
    /// A record replays its command line, so a field edited in its Model or Trainer (which the command line does not
    /// say) would be silently ignored: refused instead, naming each field, its value and what the flags give.
    /// </summary>
    private static void RefuseEditedFields(string path, RunConfig recorded, ParseResult recordedFlags,
        TrainFlags flags)
    {
        if (recordedFlags.Errors.Count > 0) return; // reported by the caller
        var given = RunConfig.ToJson(NewRun(recordedFlags, flags));
        var record = RunConfig.ToJson(recorded);
        var edited = new List<string>();
        foreach (var part in new[] { "Model", "Trainer" })
            Differences(record[part], given[part], part, edited);
        edited.RemoveAll(e => ResolvedFields.Any(f => e.StartsWith(f + " ", StringComparison.Ordinal)));
        if (edited.Count > 0)
            throw new OptionsException($"{path}: {string.Join("; ", edited.Take(5))}: the record replays its command "
                + "line (Arguments), which does not say this. Give the flag instead (segment train --config "
                + $"{path} --FLAG VALUE), or edit Arguments.");
    }

    private static void Differences(System.Text.Json.Nodes.JsonNode? a, System.Text.Json.Nodes.JsonNode? b,
        string at, List<string> found)
    {
        if (a is System.Text.Json.Nodes.JsonObject x && b is System.Text.Json.Nodes.JsonObject y)
        {
            foreach (var key in x.Select(kv => kv.Key).Union(y.Select(kv => kv.Key)))
                Differences(x[key], y[key], $"{at}.{key}", found);
        }
        else if (!System.Text.Json.Nodes.JsonNode.DeepEquals(a, b))
            found.Add($"{at} is {a?.ToJsonString() ?? "null"} in the record, {b?.ToJsonString() ?? "null"} by its "
                + "flags");
    }

    private static void Override(System.Text.Json.Nodes.JsonObject target, System.Text.Json.Nodes.JsonObject given,
        System.Text.Json.Nodes.JsonObject defaults, string prefix, List<string> overridden)
    {
        foreach (var (key, value) in given.ToList())
        {
            var baseline = defaults[key];
            if (key is "DataRelative" or "ValRelative" or "Versions" or "Arguments") continue;
            if (value is System.Text.Json.Nodes.JsonObject inner
                && baseline is System.Text.Json.Nodes.JsonObject innerDefault
                && target[key] is System.Text.Json.Nodes.JsonObject innerTarget)
                Override(innerTarget, inner, innerDefault, prefix + key + ".", overridden);
            else if (!System.Text.Json.Nodes.JsonNode.DeepEquals(value, baseline))
            {
                target[key] = value?.DeepClone();
                overridden.Add(prefix + key);
            }
        }
    }

    private static RunConfig NewRun(ParseResult p, TrainFlags flags)
    {
        string dataSpec = p.GetValue(flags.Data)!;
        bool shapes = dataSpec.StartsWith("builtin:shapes", StringComparison.OrdinalIgnoreCase);
        if (shapes && !dataSpec.Contains('?')) dataSpec =
            $"builtin:shapes?count={ShapesDefaults.Count}&size={ShapesDefaults.Size}&seed={p.GetValue(flags.Seed)}";
        var model = ModelFlags.Read(p, flags.Model, shapes);
        var encoderWeights = p.GetValue(flags.EncoderWeights) is { } ew ? EncoderWeightsFile(ew) : null;
        var recipe = TrainingRecipes.For(model, encoderWeights is not null);
        var trainerOptions = new TrainerOptions // the recipe's values where a flag gives none
        {
            Recipe = recipe.Name,
            Epochs = p.GetValue(flags.Epochs) ?? (shapes ? ShapesDefaults.Epochs : 40),
            BatchSize = p.GetValue(flags.Batch) ?? (shapes ? ShapesDefaults.BatchSize : 4),
            Crop = p.GetValue(flags.Crop) is { } c ? Size2.Parse(c) : null,
            Size = p.GetValue(flags.Size) is { } s ? Size2.Parse(s) : null,
            Optimizer = OptimizerFrom(p, flags, recipe, shapes),
            Schedule = new ScheduleOptions
            {
                Kind = p.GetValue(flags.Schedule) is { } schedule ? Cli.ParseEnum(schedule, "--schedule",
                    ("poly", ScheduleKind.Poly), ("cosine", ScheduleKind.Cosine), ("constant", ScheduleKind.Constant))
                    : recipe.Schedule,
                PolyPower = p.GetValue(flags.PolyPower) ?? recipe.PolyPower,
                WarmupFraction = p.GetValue(flags.Warmup) ?? recipe.WarmupFraction,
                TimeLimit = p.GetValue(flags.TimeLimit) is { } tl ? TimeSpan.FromSeconds(Cli.ParseDuration(tl)) : null,
                FitToTimeLimit = p.GetValue(flags.FitToTimeLimit),
            },
            Precision = new PrecisionOptions { Kind = Precisions.Parse(p.GetValue(flags.Precision)!) },
            Checkpoints = new CheckpointOptions { EvalEvery = p.GetValue(flags.EvalEvery),
                EarlyStoppingPatience = p.GetValue(flags.Patience) },
            Distribution = new DistributionOptions { SyncBatchNorm = p.GetValue(flags.SyncBn) },
            Loss = p.GetValue(flags.Loss) is { } loss ? LossRegistry.Parse(loss) : recipe.Loss
                ?? LossRegistry.Parse(shapes ? ShapesDefaults.Loss : "ce"),
            LabelSmoothing = p.GetValue(flags.Smoothing), FocalGamma = p.GetValue(flags.FocalGamma),
                Augment = !p.GetValue(flags.NoAugment), Augmentation = p.GetValue(flags.Augment),
                    VerticalFlip = p.GetValue(flags.Vflip),
            ScaleMin = TrainFlags.ScaleRange(p.GetValue(flags.Scale)).Min,
                ScaleMax = TrainFlags.ScaleRange(p.GetValue(flags.Scale)).Max,
            ValBatchSize = p.GetValue(flags.ValBatchSize), Workers = p.GetValue(flags.Workers),
            CacheBytes = p.GetValue(flags.CacheMb) >= 0 ? (long)p.GetValue(flags.CacheMb) << 20
                : throw new OptionsException($"--cache-mb {p.GetValue(flags.CacheMb)} must be 0 (no cache) or more."),
            Device = p.GetValue(flags.Device)!, Seed = p.GetValue(flags.Seed),
            Threads = ExplicitThreads(p.GetValue(flags.Threads)),
        };
        trainerOptions.Validate();
        var dataOptions = DataFlags.Read(p, flags.D, p.GetValue(flags.InChannels));
        return new RunConfig
        {
            Data = RunConfig.Absolute(dataSpec), Val = p.GetValue(flags.Val) is { } v ? RunConfig.Absolute(v) : null,
                ValSplit = p.GetValue(flags.ValSplit), SplitSeed = p.GetValue(flags.SplitSeed),
            DataOptions = dataOptions with { PaletteFile = dataOptions.PaletteFile is { } pf ? Path.GetFullPath(pf)
                : null },
            Model = model, EncoderWeights = encoderWeights,
                ClassWeights = Cli.ParseEnum(p.GetValue(flags.ClassWeights)!, "--class-weights", ("none", "none"),
                    ("median-frequency", "median-frequency"), ("inverse-frequency", "inverse-frequency")),
            Trainer = trainerOptions, Normalize = p.GetValue(flags.Normalize),
        };
    }

    /// <summary>A new run's configuration from the flags alone, as a plan sees it before it is made.</summary>
    internal static RunConfig NewRunForPlanning(ParseResult p, TrainFlags flags) => NewRun(p, flags);

    /// <summary>Flags that choose the model: with none of them, a folder is planned (<see
    /// cref="PlanCommand"/>).</summary>
    private static readonly string[] ModelChoiceFlags = { "--arch", "--encoder", "--base-channels", "--depth", "--norm",
        "--upsampling", "--dropout", "--full-res-skip" };

    /// <summary>
    /// A new run's configuration: from --config's record, from --plan's file, from a plan made now (a folder given
    /// no model flags; written to the run folder), or from the flags alone. A distributed run plans only from --plan:
    /// its processes must agree, and timings taken in each would not.
    /// </summary>
    private static RunConfig NewConfig(TextWriter log, Command cmd, TrainFlags flags, ParseResult p, RunRecorder? run,
        bool distributed)
    {
        if (p.GetValue(flags.Config) is { } recorded) return FromRecord(recorded, cmd, p, flags, log);
        TrainingPlan? plan = null;
        if (p.GetValue(flags.Plan) is { } file) plan = TrainingPlan.Load(file);
        else if (!distributed && !p.GetValue(flags.Data)!.StartsWith("builtin:", StringComparison.OrdinalIgnoreCase)
            && !cmd.Options.Any(o => ModelChoiceFlags.Contains(o.Name) && p.GetResult(o) is { Implicit: false }))
        {
            log.WriteLine("no model flags: planning for this data and machine (segment plan; --plan FILE to give "
                + "one)");
            plan = PlanCommand.Make(log, p, flags, cmd);
            run?.WritePlan(plan.ToJson());
        }
        if (plan is null) return NewRun(p, flags) with { Arguments = Arguments(cmd, p) };
        PlanCommand.Print(log, plan);
        return Planned(cmd, p, flags, plan);
    }

    /// <summary>A new run that follows <paramref name="plan"/>: its flags, then the ones given (which win).</summary>
    private static RunConfig Planned(Command cmd, ParseResult p, TrainFlags flags, TrainingPlan plan)
    {
        var now = Arguments(cmd, p).Where(a => a != "--plan" && a != p.GetValue(flags.Plan)).ToList();
        var given = now.Where(a => a.StartsWith("--", StringComparison.Ordinal)).ToHashSet();
        var planned = new List<string>();
        var fromPlan = PlanCommand.Arguments(plan);
        for (int i = 0; i < fromPlan.Count; i++)
        {
            int end = i + 1;
            while (end < fromPlan.Count && !fromPlan[end].StartsWith("--", StringComparison.Ordinal)) end++;
            if (!given.Contains(fromPlan[i])) planned.AddRange(fromPlan.Skip(i).Take(end - i));
            i = end - 1;
        }
        var merged = planned.Concat(now).ToList();
        var reparsed = p.RootCommandResult.Command.Parse(new[] { "train" }.Concat(merged).ToArray());
        if (reparsed.Errors.Count > 0)
            throw new OptionsException($"The plan's flags do not parse ({reparsed.Errors[0].Message}).");
        return NewRun(reparsed, flags) with { Arguments = merged };
    }

    /// <summary>The weights file <c>--encoder-weights</c> names: a path, or <c>builtin</c> for ML.NET's ResNet18.onnx
    /// in the NuGet cache.</summary>
    private static string EncoderWeightsFile(string value)
    {
        if (value != "builtin") return Path.GetFullPath(value);
        return MlNetResNet18.FindInNuGetCache() ?? throw new OptionsException(
            $"--encoder-weights builtin: {MlNetResNet18.Package} {MlNetResNet18.Version} is not in the NuGet cache "
                + $"($NUGET_PACKAGES or ~/.nuget/packages); "
            + $"`dotnet restore src/Segmentation.Cli` puts it there, or pass the path of its "
            + $"{MlNetResNet18.FileInPackage}.");
    }

    /// <summary>Flags a resumed run may change: they steer how it goes on, not what it learns from or what it
    /// is.</summary>
    internal static readonly string[] ResumeSafeFlags = { "--epochs", "--time-limit", "--workers", "--cache-mb",
        "--threads",
        "--device", "--eval-every", "--patience", "--out", "--resume", "--json", "--verbose", "--no-tensorboard" };

    /// <summary>--resume continues the run as it was set up: any other flag given is refused, by name.</summary>
    private static void RefuseFlagsThatCannotChange(ParseResult p, Command cmd, string dir,
        IReadOnlyList<string>? recorded)
    {
        // a flag given with the value the run was started with changes nothing (a script repeating its command)
        bool Unchanged(Option o) => recorded is not null && p.GetResult(o) is { } r && Recorded(recorded, o.Name)
            is { } before && before.SequenceEqual(r.Tokens.Select(t => t.Value));
        var given = cmd.Options.Where(o => p.GetResult(o) is { Implicit: false } && !ResumeSafeFlags.Contains(o.Name)
            && !Unchanged(o)).Select(o => o.Name).ToList();
        if (given.Count > 0)
            throw new OptionsException($"--resume continues the run in {dir} as it was set up (run.json), so "
                + $"{string.Join(", ", given)} cannot change under it; drop {(given.Count == 1 ? "it" : "them")}, or "
                + $"start a new run. A resume may change: "
                + $"{string.Join(", ", ResumeSafeFlags.Where(f => f is not ("--out" or "--resume" or "--verbose")))}.");
    }

    /// <summary>The values a recorded command line gave <paramref name="option"/> (the last time it appears); null when
    /// it does not.</summary>
    private static List<string>? Recorded(IReadOnlyList<string> arguments, string option)
    {
        int at = -1;
        for (int i = 0; i < arguments.Count; i++) if (arguments[i] == option) at = i;
        if (at < 0) return null;
        return arguments.Skip(at + 1).TakeWhile(a => !a.StartsWith("--", StringComparison.Ordinal)).ToList();
    }

    /// <summary>"optimiser: AdamW lr 0.0006 (encoder 6e-05), weight decay 0.01, poly 1, warm-up 5 %; recipe
    /// segformer-finetune".</summary>
    internal static string DescribeOptimizer(TrainerOptions o)
    {
        var encoder = o.Optimizer.EncoderLearningRateScale != 1
            ? $" (encoder {o.Optimizer.LearningRate * o.Optimizer.EncoderLearningRateScale:G3})"
            : "";
        var schedule = o.Schedule.Kind == ScheduleKind.Poly ? $"poly {o.Schedule.PolyPower:G3}"
            : o.Schedule.Kind.ToString()
            .ToLowerInvariant();
        var recipe = o.Recipe is { } r ? $"; recipe {r}" : "";
        return string.Create(CultureInfo.InvariantCulture,
            $"optimiser: {o.Optimizer.Kind} lr {o.Optimizer.LearningRate:G3}{encoder}, "
            + $"weight decay {o.Optimizer.WeightDecay:G3}, {schedule}, warm-up {o.Schedule.WarmupFraction * 100:G3} "
            + $"%{recipe}");
    }

    /// <summary>"epoch 3 of 12, best mean IoU 0.9121 at epoch 2" from last.ckpt, or which files are there.</summary>
    private static string DescribeRun(RunRecorder run)
    {
        try
        {
            var last = Checkpoint.Load(run.Last);
            var s = last.State;
            var best = s.BestEpoch > 0
                ? string.Create(CultureInfo.InvariantCulture,
                $", best mean IoU {s.BestMeanIoU:F4} at epoch {s.BestEpoch}")
                : "";
            return $"epoch {s.Epoch} of {TrainerOptions.FromCheckpoint(last).Epochs} in last.ckpt{best}";
        }
        catch (SegmentationException)
        {
            return string.Join(", ", run.RunFiles.Where(File.Exists).Select(Path.GetFileName));
        }
    }

    private static int Train(CommandContext ctx, TextWriter log, string dir, RunConfig config, Checkpoint? resumeFrom,
        bool asJson, bool tensorBoard, Segmentation.Distributed.ProcessGroup? group = null, string? failAt = null)
    {
        bool main = group is not { IsMain: false };
        var (train, validation) = config.OpenData();
        log.WriteLine(train.DetectionReport);
        foreach (var w in train.Warnings) log.WriteLine($"warning: {w}");
        log.WriteLine($"data: {train.Count} training, {validation?.Count ?? 0} validation images");
        var trainerOptions = TrainerOptionsFor(config, train, resumeFrom, dir, log);
        trainerOptions = trainerOptions with { Checkpoints = trainerOptions.Checkpoints with { PreviewImages =
            tensorBoard ? 4 : 0 }, BeforeStep = InjectedFailure(failAt) };
        if (group is not null) trainerOptions = DistributedLaunch.Apply(trainerOptions, config.Trainer, group, log);
        if (resumeFrom is not null) RefuseChangedData(config, train, resumeFrom);
        var described = resumeFrom?.Model ?? config.Model with { Seed = trainerOptions.Seed };
        // and a target's planes
        var modelOptions = described with { InChannels = train.Description.InChannels, Classes =
            TaskRegistry.For(train.Description, described).ModelClasses(train.Description) };
        var run = new RunRecorder(dir);
        // the record holds what the run resolved (classes and channels from the data, the panels drawn), not defaults
        if (resumeFrom is null && main)
            run.WriteRunConfig(config with
            {
                Model = config.Model with { Classes = modelOptions.Classes, InChannels = modelOptions.InChannels },
                Trainer = config.Trainer with { Checkpoints = config.Trainer.Checkpoints with { PreviewImages =
                    trainerOptions.Checkpoints.PreviewImages } },
            });
        using var model = resumeFrom?.CreateModel() ?? new SegmentationModel(modelOptions);
        if (resumeFrom is null && config.EncoderWeights is { } encoderFile)
            log.WriteLine($"encoder weights: {model.LoadEncoderWeights(encoderFile)} tensors from {encoderFile}");
        group?.Barrier("the start of training"); // rank 0 has prepared the run folder; every rank has read its input
        // the tool owns its process
        using var trainer = new Trainer(model, trainerOptions with { ManageProcessMemory = true });
        log.WriteLine($"model: {Cli.Shape(model.Description)}, {model.ParameterCount():N0} parameters, device "
            + $"{trainer.Device}, precision {trainerOptions.Precision.Kind.ShortName()}");
        log.WriteLine(DescribeOptimizer(trainerOptions));
        log.WriteLine($"run folder: {Path.GetFullPath(dir)}");

        if (!main) tensorBoard = false;
        var reporter = new TrainingReporter(ctx, log) { Instances = train.Description.Task
            != SegmentationTaskKind.Semantic };
        var progress = tensorBoard ? new ProgressFanOut<TrainingProgress>(reporter,
            run.OpenTensorBoard()) : (IProgress<TrainingProgress>)reporter;
        if (tensorBoard) log.WriteLine($"tensorboard: tensorboard --logdir {run.TensorBoard}");
        var result = Fit(trainer, train, validation, main ? progress : null, resumeFrom, run, main);
        if (!main) return result.StopReason == "interrupted" ? Cli.Interrupted : 0;
        ctx.FinishLine(log);
        bool interrupted = result.StopReason == "interrupted";

        // what auto resolved to
        return Finish(ctx, log, run, result, interrupted,
            trainerOptions with { Precision = trainer.Options.Precision },
            trainer.Device, model.ParameterCount(),
            validation, asJson);
    }

    /// <summary>Trains until done or stopped (SIGINT or SIGTERM: between two steps; a second signal ends the process
    /// at once); an unexpected error leaves crash.log in the run folder (rank 0).</summary>
    private static TrainingResult Fit(Trainer trainer, SegmentationDataset train, SegmentationDataset? validation,
        IProgress<TrainingProgress>? progress, Checkpoint? resumeFrom, RunRecorder run, bool main)
    {
        using var interrupt = new CancellationTokenSource();
        int signals = 0;
        void OnSignal(PosixSignalContext c)
        {
            if (Interlocked.Increment(ref signals) > 1) return; // a second Ctrl-C ends the process at once
            c.Cancel = true;
            interrupt.Cancel();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        try { return trainer.Fit(train, validation, progress, resumeFrom, interrupt.Token); }
        catch (Exception e) when (main && !CrashReport.IsExpected(e))
        {
            throw CrashReport.Write(run, e, trainer.StepName, trainer.Options);
        }
    }

    /// <summary>--fail-at E:S (tests): an unexpected error before step S of epoch E.</summary>
    private static Action<int, int>? InjectedFailure(string? at)
    {
        if (at is null) return null;
        var parts = at.Split(':');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int epoch) || !int.TryParse(parts[1], out int step))
            throw new OptionsException($"--fail-at '{at}': expected EPOCH:STEP.");
        return (e, s) =>
        {
            if (e == epoch && s == step)
                throw new InvalidOperationException($"injected failure at step {s} of epoch {e}");
        };
    }

    /// <summary>The optimiser flags, each falling back on the architecture's recipe (the built-in shapes data on the
    /// main job's learning rate).</summary>
    private static OptimizerOptions OptimizerFrom(ParseResult p, TrainFlags flags, TrainingRecipe recipe, bool shapes)
        => new()
        {
            Kind = p.GetValue(flags.Optimizer) is { } optimizer ? Cli.ParseEnum(optimizer, "--optimizer",
                ("adamw", OptimizerKind.AdamW), ("sgd", OptimizerKind.Sgd)) : recipe.Optimizer,
            LearningRate = p.GetValue(flags.Lr) ?? (shapes && recipe == TrainingRecipe.Default
                ? ShapesDefaults.LearningRate : recipe.LearningRate),
            WeightDecay = p.GetValue(flags.WeightDecay) ?? recipe.WeightDecay,
            GradientClipNorm = p.GetValue(flags.Clip) ?? recipe.GradientClipNorm,
                WeightAverageDecay = p.GetValue(flags.Ema),
            AccumulationSteps = p.GetValue(flags.Accumulate),
            EncoderLearningRateScale = p.GetValue(flags.EncoderLr) ?? recipe.EncoderLearningRateScale,
            FreezeEncoderEpochs = p.GetValue(flags.FreezeEncoder),
        };

    /// <summary>--threads as recorded in run.json: a count, or null for auto (resolved when the run starts).</summary>
    private static int? ExplicitThreads(string? value) => value is null or "auto" ? null
        : Cli.ResolveThreads(value, null);

    /// <summary>A resume reads the data as the run did, or stops.</summary>
    private static void RefuseChangedData(RunConfig config, SegmentationDataset train, Checkpoint resumeFrom)
    {
        if (train.Description.Classes != resumeFrom.Dataset.Classes
            || train.Description.InChannels != resumeFrom.Model.InChannels
            || train.Description.Encoding != resumeFrom.Dataset.Encoding
            || train.Description.IgnoreIndex != resumeFrom.Dataset.IgnoreIndex)
            throw new DataException($"{config.Data}: the data changed since the run started: it now reads as "
                + $"{train.Description.Classes} classes ({train.Description.Encoding}, ignore index "
                + $"{train.Description.IgnoreIndex}, {train.Description.InChannels}-channel images), the run was "
                + $"trained on {resumeFrom.Dataset.Classes} ({resumeFrom.Dataset.Encoding}, ignore index "
                + $"{resumeFrom.Dataset.IgnoreIndex}, {resumeFrom.Model.InChannels}-channel images). Restore the "
                + $"data, or start a new run.", config.Data);
    }

    /// <summary>The trainer's options: the run's, with class weights computed from the data for a new run, or the
    /// checkpoint's on a resume.</summary>
    private static TrainerOptions TrainerOptionsFor(RunConfig config, SegmentationDataset train,
        Checkpoint? resumeFrom, string dir, TextWriter log)
    {
        var trainerOptions = config.Trainer with { Checkpoints = config.Trainer.Checkpoints with { Directory = dir } };
        if (resumeFrom is null && config.NormalizationFor(train) is { } normalization)
        {
            trainerOptions = trainerOptions with { Normalization = normalization };
            log.WriteLine($"normalisation: {normalization} (--normalize {config.Normalize})");
        }
        if (config.ClassWeights != "none" && resumeFrom is null)
        {
            var stats = train.ComputeClassStatistics();
            var weights = config.ClassWeights == "median-frequency"
                ? ClassWeights.MedianFrequency(stats.ClassPixels, stats.PixelsOfImagesWithClass)
                : ClassWeights.InverseFrequency(stats.ClassPixels);
            trainerOptions = trainerOptions with { ClassWeights = weights };
            log.WriteLine($"class weights ({config.ClassWeights}): "
                + $"{string.Join(", ", weights.Select((w, i) => $"{train.Description.ClassNames[i]} {w:F3}"))}");
        }
        else if (resumeFrom is not null)
        {
            // what the run learns from stays the checkpoint's; how it goes on takes the resume's flags
            var given = config.Trainer;
            var recorded = TrainerOptions.FromCheckpoint(resumeFrom);
            trainerOptions = recorded with
            {
                Epochs = given.Epochs, Workers = given.Workers, CacheBytes = given.CacheBytes, Device = given.Device,
                Schedule = recorded.Schedule with { TimeLimit = given.Schedule.TimeLimit },
                Checkpoints = recorded.Checkpoints with { Directory = dir, EvalEvery = given.Checkpoints.EvalEvery,
                    EarlyStoppingPatience = given.Checkpoints.EarlyStoppingPatience },
            };
        }
        // run.json keeps what was asked (null: auto); the checkpoints record the count used. A resumed auto run takes
        // the count the interrupted one used: oneDNN splits its sums by threads, so another count computes otherwise,
        // and the load on the machine when it resumes would decide it.
        int? used = resumeFrom is null ? null : trainerOptions.Threads; // the checkpoint's, read above
        int threads = config.Trainer.Threads ?? (used is > 0 ? used.Value : Cli.ResolveThreads(null, log));
        if (config.Trainer.Threads is not null) log.WriteLine($"threads: {threads} (--threads)");
        else if (used is > 0) log.WriteLine($"threads: {threads} (the interrupted run's, so that it computes as it "
            + "did; --threads N changes it)");
        return trainerOptions with { Threads = threads };
    }

    /// <summary>After training: curves, overlays, summary.json (atomically), and what to tell the user.</summary>
    private static int Finish(CommandContext ctx, TextWriter log, RunRecorder run, TrainingResult result,
        bool interrupted, TrainerOptions trainerOptions,
        TorchSharp.torch.Device device, long parameters, SegmentationDataset? validation, bool asJson)
    {
        string dir = run.Directory;
        run.WriteCurves(Pictures.Curves(result.History));
        if (result.Metrics is { } best) run.WriteConfusion(Pictures.Confusion(best));
        string? bestPath = result.BestCheckpoint ?? (File.Exists(run.Last) ? run.Last : null);
        if (validation is not null && bestPath is not null && !interrupted) WriteOverlays(bestPath, validation,
            run, trainerOptions.Device, trainerOptions.Precision.Kind);

        // The trainer wrote summary.json (the run folder's files are the library's; the CLI adds its pictures).
        var summary = File.Exists(run.Summary) ? JsonNode.Parse(RegularFile.ReadAllText(run.Summary,
            Limits.ConfigFileBytes, "run summary"))!.AsObject()
            : new JsonObject();

        if (interrupted)
        {
            log.WriteLine(result.Epochs > 0
                ? $"interrupted: stopped after epoch {result.Epochs} of {trainerOptions.Epochs} (the unfinished epoch "
                + $"is dropped); continue with: segment train --out {dir} --resume"
                : $"interrupted during epoch 1: no checkpoint was written; run the same command again (with "
                + $"--overwrite) to start over");
            if (asJson) ctx.Out.WriteLine(summary.ToJsonString());
            return Cli.Interrupted;
        }
        log.WriteLine($"done: {result.StopReason} after {result.Epochs} epoch(s) in {result.Seconds:F1} s");
        if (result.Metrics is { } m)
        {
            log.WriteLine($"best epoch {result.BestEpoch}:");
            log.Write(m.ToString());
        }
        var written = new[] { run.Summary, run.Metrics, run.Curves, run.Best, run.Last }.Where(File.Exists)
            .Select(Path.GetFileName);
        log.WriteLine($"wrote {string.Join(", ", written)} in {run.Directory}");
        if (asJson) ctx.Out.WriteLine(summary.ToJsonString());
        return Cli.Ok;
    }

    /// <summary>overlays/: a panel (image | truth | prediction | errors, with the legend) for the first validation
    /// images, from the best checkpoint.</summary>
    private static void WriteOverlays(string checkpoint, SegmentationDataset val, RunRecorder run, string device,
        Precision precision)
    {
        using var predictor = Predictor.FromFile(checkpoint,
            new PredictorOptions { Device = device, Precision = precision });
        for (int i = 0; i < Math.Min(4, val.Count); i++)
        {
            var sample = val.Load(i);
            var prediction = predictor.Predict(sample.Image);
            var d = predictor.Description;
            var truth = sample.Instances is { } ids && d.Instances is { } s // instance data: the boundary target too
                ? InstanceTargets.Make(sample.Mask, ids, 1, sample.Height, sample.Width, s.BoundaryWidth,
                    (byte)s.Things.Length) : sample.Mask;
            var panel = Previews.Panel(sample.Name, sample.Image, truth, prediction.Labels, d.ClassColors);
            run.WriteOverlay(sample.Name, Pictures.Panel(panel, predictor.Description));
        }
    }
}
