using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Encoders;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Cli;

/// <summary><c>segment train</c>: from a folder of images (or builtin:shapes) to a trained model.</summary>
internal static class TrainCommand
{
    /// <summary>The built-in main job: chosen to finish on a 2-core CPU in under 3 minutes with a validation mean IoU of at least 0.90 (about 80 s and 0.985-0.991 for seeds 0-2).</summary>
    internal static class ShapesDefaults
    {
        public const int Count = 600, Size = 64, BaseChannels = 16, Depth = 4, Epochs = 12, BatchSize = 8;
        public const double LearningRate = 3e-3;
        public const string Loss = "ce+dice";
    }

    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("train", "Train a U-Net. Without --data it trains on the built-in shapes data set (the README's main job).");
        var flags = new TrainFlags(cmd);
        cmd.SetAction(p => Run(ctx, cmd, flags, p));
        return cmd;
    }

    private static int Run(CommandContext ctx, Command cmd, TrainFlags flags, ParseResult p)
    {
        bool asJson = p.GetValue(flags.Json);
        var log = asJson ? ctx.Err : ctx.Out;
        string dir = p.GetValue(flags.OutDir) ?? Path.Combine("runs", DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture));
        Checkpoint? resumeFrom = null;
        RunConfig config;
        var run = new RunFolder(dir);
        if (p.GetValue(flags.Resume) && p.GetValue(flags.Overwrite)) throw new OptionsException("--resume continues a run and --overwrite deletes it; give one of them.");
        if (!p.GetValue(flags.Resume) && run.HoldsRun)
        {
            if (!p.GetValue(flags.Overwrite))
                throw new OptionsException($"{run.Directory} already holds a run ({DescribeRun(run)}); continue it with --resume, or start over with --overwrite (which deletes its checkpoints, metrics and summary).");
            foreach (var f in run.RunFiles.Append(run.Curves).Where(File.Exists)) File.Delete(f);
            if (Directory.Exists(run.Overlays)) Directory.Delete(run.Overlays, recursive: true);
            log.WriteLine($"--overwrite: deleted the previous run in {run.Directory}");
        }
        if (p.GetValue(flags.Resume)) (config, resumeFrom) = Resume(p, cmd, flags, dir, log);
        else config = NewRun(p, flags);
        return Train(ctx, log, dir, config, resumeFrom, asJson);
    }

    /// <summary>--resume: the run's own configuration (run.json) with the flags a resume may change, and its last checkpoint.</summary>
    private static (RunConfig, Checkpoint) Resume(ParseResult p, Command cmd, TrainFlags flags, string dir, TextWriter log)
    {
        if (p.GetValue(flags.OutDir) is null) throw new OptionsException("--resume needs --out, the run folder to continue.");
        var lastPath = Path.Combine(dir, "last.ckpt");
        if (!File.Exists(lastPath)) throw new SegmentationException($"{lastPath}: no checkpoint to resume from.");
        RefuseFlagsThatCannotChange(p, cmd, dir);
        var resumeFrom = Checkpoint.Load(lastPath);
        var config = RunConfig.Load(Path.Combine(dir, "run.json"), dir, log);
        var t0 = config.Trainer;
        config = config with
        {
            Trainer = t0 with
            {
                Epochs = p.GetValue(flags.Epochs) ?? t0.Epochs,
                TimeLimit = p.GetValue(flags.TimeLimit) is { } tl ? TimeSpan.FromSeconds(Cli.ParseDuration(tl)) : t0.TimeLimit,
                Workers = p.GetResult(flags.Workers) is { Implicit: false } ? p.GetValue(flags.Workers) : t0.Workers,
                CacheBytes = p.GetResult(flags.CacheMb) is { Implicit: false } ? Math.Max(-1, p.GetValue(flags.CacheMb)) * (1L << 20) : t0.CacheBytes,
                Device = p.GetResult(flags.Device) is { Implicit: false } ? p.GetValue(flags.Device)! : t0.Device,
                EvalEvery = p.GetResult(flags.EvalEvery) is { Implicit: false } ? p.GetValue(flags.EvalEvery) : t0.EvalEvery,
                EarlyStoppingPatience = p.GetValue(flags.Patience) ?? t0.EarlyStoppingPatience,
            },
        };
        config.Trainer.Validate();
        log.WriteLine($"resuming {lastPath}: epoch {resumeFrom.State.Epoch} of {config.Trainer.Epochs} done");
        return (config, resumeFrom);
    }

    /// <summary>A new run's configuration from the flags (the built-in shapes data get the main job's defaults).</summary>
    private static RunConfig NewRun(ParseResult p, TrainFlags flags)
    {
        string dataSpec = p.GetValue(flags.Data)!;
        bool shapes = dataSpec.StartsWith("builtin:shapes", StringComparison.OrdinalIgnoreCase);
        if (shapes && !dataSpec.Contains('?')) dataSpec = $"builtin:shapes?count={ShapesDefaults.Count}&size={ShapesDefaults.Size}&seed={p.GetValue(flags.Seed)}";
        var trainerOptions = new TrainerOptions
        {
            Epochs = p.GetValue(flags.Epochs) ?? (shapes ? ShapesDefaults.Epochs : 40),
            BatchSize = p.GetValue(flags.Batch) ?? (shapes ? ShapesDefaults.BatchSize : 4),
            Crop = p.GetValue(flags.Crop) is { } c ? Size2.Parse(c) : null,
            Size = p.GetValue(flags.Size) is { } s ? Size2.Parse(s) : null,
            LearningRate = p.GetValue(flags.Lr) ?? (shapes ? ShapesDefaults.LearningRate : 1e-3),
            Optimizer = Cli.ParseEnum(p.GetValue(flags.Optimizer)!, "--optimizer", ("adamw", OptimizerKind.AdamW), ("sgd", OptimizerKind.Sgd)),
            Schedule = Cli.ParseEnum(p.GetValue(flags.Schedule)!, "--schedule", ("poly", ScheduleKind.Poly), ("cosine", ScheduleKind.Cosine), ("constant", ScheduleKind.Constant)),
            WarmupFraction = p.GetValue(flags.Warmup), WeightDecay = p.GetValue(flags.WeightDecay), GradientClipNorm = p.GetValue(flags.Clip),
            AccumulationSteps = p.GetValue(flags.Accumulate),
            Loss = Cli.ParseEnum(p.GetValue(flags.Loss) ?? (shapes ? ShapesDefaults.Loss : "ce"), "--loss", ("ce", LossKind.CrossEntropy), ("dice", LossKind.Dice), ("ce+dice", LossKind.CrossEntropyDice)),
            LabelSmoothing = p.GetValue(flags.Smoothing), Augment = !p.GetValue(flags.NoAugment), VerticalFlip = p.GetValue(flags.Vflip),
            EvalEvery = p.GetValue(flags.EvalEvery), EarlyStoppingPatience = p.GetValue(flags.Patience), Workers = p.GetValue(flags.Workers),
            CacheBytes = p.GetValue(flags.CacheMb) >= 0 ? (long)p.GetValue(flags.CacheMb) << 20 : throw new OptionsException($"--cache-mb {p.GetValue(flags.CacheMb)} must be 0 (no cache) or more."),
            Device = p.GetValue(flags.Device)!, Seed = p.GetValue(flags.Seed), Precision = Precisions.Parse(p.GetValue(flags.Precision)!),
            EncoderLearningRateScale = p.GetValue(flags.EncoderLr), FreezeEncoderEpochs = p.GetValue(flags.FreezeEncoder),
            TimeLimit = p.GetValue(flags.TimeLimit) is { } tl ? TimeSpan.FromSeconds(Cli.ParseDuration(tl)) : null,
        };
        trainerOptions.Validate();
        var dataOptions = DataFlags.Read(p, flags.D, p.GetValue(flags.InChannels));
        return new RunConfig
        {
            Data = RunConfig.Absolute(dataSpec), Val = p.GetValue(flags.Val) is { } v ? RunConfig.Absolute(v) : null, ValSplit = p.GetValue(flags.ValSplit),
            DataOptions = dataOptions with { PaletteFile = dataOptions.PaletteFile is { } pf ? Path.GetFullPath(pf) : null },
            Model = ModelFlags.Read(p, flags.Model, shapes),
            EncoderWeights = p.GetValue(flags.EncoderWeights) is { } ew ? EncoderWeightsFile(ew) : null, ClassWeights = Cli.ParseEnum(p.GetValue(flags.ClassWeights)!, "--class-weights", ("none", "none"), ("median-frequency", "median-frequency"), ("inverse-frequency", "inverse-frequency")),
            Trainer = trainerOptions,
        };
    }

    /// <summary>The weights file <c>--encoder-weights</c> names: a path, or <c>builtin</c> for ML.NET's ResNet18.onnx in the NuGet cache.</summary>
    private static string EncoderWeightsFile(string value)
    {
        if (value != "builtin") return Path.GetFullPath(value);
        return MlNetResNet18.FindInNuGetCache() ?? throw new OptionsException(
            $"--encoder-weights builtin: {MlNetResNet18.Package} {MlNetResNet18.Version} is not in the NuGet cache ($NUGET_PACKAGES or ~/.nuget/packages); "
            + $"`dotnet restore src/Segmentation.Cli` puts it there, or pass the path of its {MlNetResNet18.FileInPackage}.");
    }

    /// <summary>Flags a resumed run may change: they steer how it goes on, not what it learns from or what it is.</summary>
    internal static readonly string[] ResumeSafeFlags = { "--epochs", "--time-limit", "--workers", "--cache-mb", "--device", "--eval-every", "--patience", "--out", "--resume", "--json", "--verbose" };

    /// <summary>--resume continues the run as it was set up: any other flag given is refused, by name.</summary>
    private static void RefuseFlagsThatCannotChange(ParseResult p, Command cmd, string dir)
    {
        var given = cmd.Options.Where(o => p.GetResult(o) is { Implicit: false } && !ResumeSafeFlags.Contains(o.Name)).Select(o => o.Name).ToList();
        if (given.Count > 0)
            throw new OptionsException($"--resume continues the run in {dir} as it was set up (run.json), so {string.Join(", ", given)} cannot change under it; drop {(given.Count == 1 ? "it" : "them")}, or start a new run. A resume may change: {string.Join(", ", ResumeSafeFlags.Where(f => f is not ("--out" or "--resume" or "--verbose")))}.");
    }

    /// <summary>"epoch 3 of 12, best mean IoU 0.9121 at epoch 2" from last.ckpt, or which files are there.</summary>
    private static string DescribeRun(RunFolder run)
    {
        try
        {
            var last = Checkpoint.Load(run.Last);
            var s = last.State;
            return $"epoch {s.Epoch} of {last.Trainer.Epochs} in last.ckpt{(s.BestEpoch > 0 ? string.Create(CultureInfo.InvariantCulture, $", best mean IoU {s.BestMeanIoU:F4} at epoch {s.BestEpoch}") : "")}";
        }
        catch (SegmentationException)
        {
            return string.Join(", ", run.RunFiles.Where(File.Exists).Select(Path.GetFileName));
        }
    }

    private static int Train(CommandContext ctx, TextWriter log, string dir, RunConfig config, Checkpoint? resumeFrom, bool asJson)
    {
        var (train, validation) = config.OpenData();
        log.WriteLine(train.DetectionReport);
        foreach (var w in train.Warnings) log.WriteLine($"warning: {w}");
        log.WriteLine($"data: {train.Count} training, {validation?.Count ?? 0} validation images");

        var trainerOptions = TrainerOptionsFor(config, train, resumeFrom, dir, log);

        if (resumeFrom is not null && (train.Description.Classes != resumeFrom.Dataset.Classes || train.Description.InChannels != resumeFrom.Model.InChannels
            || train.Description.Encoding != resumeFrom.Dataset.Encoding || train.Description.IgnoreIndex != resumeFrom.Dataset.IgnoreIndex))
            throw new DataException($"{config.Data}: the data changed since the run started: it now reads as {train.Description.Classes} classes ({train.Description.Encoding}, ignore index {train.Description.IgnoreIndex}, {train.Description.InChannels}-channel images), the run was trained on {resumeFrom.Dataset.Classes} ({resumeFrom.Dataset.Encoding}, ignore index {resumeFrom.Dataset.IgnoreIndex}, {resumeFrom.Model.InChannels}-channel images). Restore the data, or start a new run.", config.Data);
        var modelOptions = (resumeFrom?.Model ?? config.Model with { Seed = trainerOptions.Seed }) with { InChannels = train.Description.InChannels, Classes = train.Description.Classes };
        Directory.CreateDirectory(dir);
        if (resumeFrom is null) config.Save(Path.Combine(dir, "run.json"));
        using var model = resumeFrom?.CreateModel() ?? new UNet(modelOptions);
        if (resumeFrom is null && config.EncoderWeights is { } encoderFile)
            log.WriteLine($"encoder weights: {model.LoadEncoderWeights(encoderFile)} tensors from {encoderFile}");
        using var trainer = new Trainer(model, trainerOptions);
        string shape = modelOptions.Encoder == EncoderKind.UNet
            ? $"base {modelOptions.BaseChannels}, depth {modelOptions.Depth}, {modelOptions.Upsampling.ToString().ToLowerInvariant()} upsampling"
            : $"{Cli.EncoderName(modelOptions.Encoder)} encoder, smp decoder";
        log.WriteLine($"model: U-Net {modelOptions.InChannels}->{modelOptions.Classes}, {shape}, {model.ParameterCount():N0} parameters, device {trainer.Device}, precision {trainerOptions.Precision.ShortName()}");
        log.WriteLine($"run folder: {Path.GetFullPath(dir)}");

        var run = new RunFolder(dir);
        var reporter = new TrainingReporter(ctx, log, run.Metrics, resumeFrom?.State.History);
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
        var result = trainer.Fit(train, validation, reporter, resumeFrom, interrupt.Token);
        ctx.FinishLine(log);
        bool interrupted = result.StopReason == "cancelled";
        if (interrupted) result = result with { StopReason = "interrupted" };

        return Finish(ctx, log, run, result, interrupted, trainerOptions, trainer.Device, model.ParameterCount(), validation, asJson);
    }

    /// <summary>The trainer's options: the run's, with class weights computed from the data for a new run, or the checkpoint's on a resume.</summary>
    private static TrainerOptions TrainerOptionsFor(RunConfig config, SegmentationDataset train, Checkpoint? resumeFrom, string dir, TextWriter log)
    {
        var trainerOptions = config.Trainer with { CheckpointDirectory = dir };
        if (config.ClassWeights != "none" && resumeFrom is null)
        {
            var stats = train.ComputeClassStatistics();
            var weights = config.ClassWeights == "median-frequency"
                ? ClassWeights.MedianFrequency(stats.ClassPixels, stats.PixelsOfImagesWithClass)
                : ClassWeights.InverseFrequency(stats.ClassPixels);
            trainerOptions = trainerOptions with { ClassWeights = weights };
            log.WriteLine($"class weights ({config.ClassWeights}): {string.Join(", ", weights.Select((w, i) => $"{train.Description.ClassNames[i]} {w:F3}"))}");
        }
        else if (resumeFrom is not null) trainerOptions = resumeFrom.Trainer with { Epochs = trainerOptions.Epochs, CheckpointDirectory = dir };
        return trainerOptions;
    }

    /// <summary>After training: curves, overlays, summary.json (atomically), and what to tell the user.</summary>
    private static int Finish(CommandContext ctx, TextWriter log, RunFolder run, TrainingResult result, bool interrupted, TrainerOptions trainerOptions,
        TorchSharp.torch.Device device, long parameters, SegmentationDataset? validation, bool asJson)
    {
        string dir = run.Directory;
        CurvePlot.Save(run.Curves, result.History);
        string? bestPath = result.BestCheckpoint ?? (File.Exists(run.Last) ? run.Last : null);
        if (validation is not null && bestPath is not null && !interrupted) WriteOverlays(bestPath, validation, run.Overlays, trainerOptions.Device, trainerOptions.Precision);

        var summary = result.Metrics?.ToJsonObject() ?? new JsonObject();
        summary["bestEpoch"] = result.BestEpoch;
        summary["epochs"] = result.Epochs;
        summary["params"] = parameters;
        summary["device"] = device.ToString();
        summary["precision"] = trainerOptions.Precision.ShortName();
        summary["seconds"] = Math.Round(result.Seconds, 2);
        summary["stopReason"] = result.StopReason;
        summary["checkpoint"] = bestPath is null ? null : Path.GetFullPath(bestPath);
        AtomicFile.WriteAllText(run.Summary, summary.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

        if (interrupted)
        {
            log.WriteLine(result.Epochs > 0
                ? $"interrupted: stopped after epoch {result.Epochs} of {trainerOptions.Epochs} (the unfinished epoch is dropped); continue with: segment train --out {dir} --resume"
                : $"interrupted during epoch 1: no checkpoint was written; run the same command again (with --overwrite) to start over");
            if (asJson) ctx.Out.WriteLine(summary.ToJsonString());
            return Cli.Interrupted;
        }
        log.WriteLine($"done: {result.StopReason} after {result.Epochs} epoch(s) in {result.Seconds:F1} s");
        if (result.Metrics is { } m)
        {
            log.WriteLine($"best epoch {result.BestEpoch}:");
            log.Write(m.ToString());
        }
        var written = new[] { run.Summary, run.Metrics, run.Curves, run.Best, run.Last }.Where(File.Exists).Select(Path.GetFileName);
        log.WriteLine($"wrote {string.Join(", ", written)} in {run.Directory}");
        if (asJson) ctx.Out.WriteLine(summary.ToJsonString());
        return Cli.Ok;
    }

    private static void WriteOverlays(string checkpoint, SegmentationDataset val, string dir, string device, Precision precision)
    {
        using var predictor = Predictor.FromFile(checkpoint, new PredictorOptions { Device = device, Precision = precision });
        var colors = predictor.Description.ClassColors;
        for (int i = 0; i < Math.Min(4, val.Count); i++)
        {
            var sample = val.Load(i);
            var prediction = predictor.Predict(sample.Image);
            MaskWriter.SaveOverlay(Path.Combine(dir, $"{sample.Name}_pred.png"), sample.Image, prediction.Labels, colors);
            MaskWriter.SaveOverlay(Path.Combine(dir, $"{sample.Name}_truth.png"), sample.Image, sample.Mask, colors);
        }
    }
}

/// <summary>Presents training progress: a live status line on a terminal, one line per epoch always, and metrics.jsonl.</summary>
internal sealed class TrainingReporter : IProgress<TrainingProgress>
{
    private readonly CommandContext ctx;
    private readonly TextWriter log;
    private readonly string metricsPath;
    private bool headerShown;

    private readonly System.Diagnostics.Stopwatch sincePlain = System.Diagnostics.Stopwatch.StartNew();

    /// <summary>Without a terminal (CI, tee, nohup) a plain progress line is printed this often, so a slow epoch never looks like a hang.</summary>
    public TimeSpan PlainInterval { get; init; } = TimeSpan.FromSeconds(30);

    public TrainingReporter(CommandContext ctx, TextWriter log, string metricsPath, IReadOnlyList<EpochRecord>? previous)
    {
        this.ctx = ctx; this.log = log; this.metricsPath = metricsPath;
        // metrics.jsonl always matches the run's history (on resume it is rewritten from the checkpoint).
        File.WriteAllLines(metricsPath, (previous ?? Array.Empty<EpochRecord>()).Select(r => r.ToJson().ToJsonString()));
    }

    public void Report(TrainingProgress p)
    {
        switch (p.Kind)
        {
            case ProgressKind.Step:
                int width = 20, filled = (int)Math.Round(width * (double)p.Step / Math.Max(1, p.StepsPerEpoch));
                string step = string.Create(CultureInfo.InvariantCulture, $"{p.Step}/{p.StepsPerEpoch} loss {p.Loss:F4} lr {p.LearningRate:0.0e+0} {p.ImagesPerSecond:F1} img/s ETA {Format(p.Eta)}");
                ctx.Status(log, $"epoch {p.Epoch}/{p.Epochs} [{new string('#', filled)}{new string('-', width - filled)}] {step}");
                Plain($"epoch {p.Epoch}/{p.Epochs} step {step}");
                break;
            case ProgressKind.DataCheck:
                ctx.Status(log, $"{p.Message} {p.Step}/{p.StepsPerEpoch}");
                Plain($"{p.Message} {p.Step}/{p.StepsPerEpoch}");
                break;
            case ProgressKind.ValidationStep:
                ctx.Status(log, $"epoch {p.Epoch}/{p.Epochs} validating {p.Step}/{p.StepsPerEpoch}");
                Plain($"epoch {p.Epoch}/{p.Epochs} validating {p.Step}/{p.StepsPerEpoch}");
                break;
            case ProgressKind.Epoch:
                var r = p.Record!;
                ctx.FinishLine(log);
                if (!headerShown)
                {
                    log.WriteLine("epoch  train loss  val loss  mean IoU  pixel acc  lr        seconds  img/s  RSS MiB");
                    headerShown = true;
                }
                log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{r.Epoch,5}  {r.TrainLoss,10:F4}  {F(r.ValLoss),8}  {F(r.MeanIoU),8}  {F(r.PixelAccuracy),9}  {r.LearningRate,-8:0.0e+0}  {r.Seconds,7:F1}  {r.ImagesPerSecond,5:F1}  {r.ResidentMemoryMB,7:F0}"));
                File.AppendAllText(metricsPath, r.ToJson().ToJsonString() + Environment.NewLine);
                break;
            case ProgressKind.Message:
            case ProgressKind.Convolutions:
                ctx.FinishLine(log);
                log.WriteLine(p.Message);
                break;
        }
    }

    /// <summary>A plain line at most every <see cref="PlainInterval"/>, when no terminal shows the status line.</summary>
    private void Plain(string line)
    {
        if (ctx.IsTerminal(log) || sincePlain.Elapsed < PlainInterval) return;
        log.WriteLine(line);
        sincePlain.Restart();
    }

    private static string F(double v) => double.IsNaN(v) ? "-" : v.ToString("F4", CultureInfo.InvariantCulture);

    private static string Format(TimeSpan? t) => t is { } v ? (v.TotalHours >= 1 ? v.ToString(@"h\:mm\:ss", CultureInfo.InvariantCulture) : v.ToString(@"mm\:ss", CultureInfo.InvariantCulture)) : "--:--";
}

/// <summary>The flags of <c>segment train</c>.</summary>
internal sealed class TrainFlags
{
    public readonly Option<string> Data = new Option<string>("--data") { Description = "Folder with images/ and masks/ (or train/ and val/), or builtin:shapes.", DefaultValueFactory = _ => "builtin:shapes" };
    public readonly Option<string?> Val = new Option<string?>("--val") { Description = "Validation folder (images/ and masks/)." };
    public readonly Option<double?> ValSplit = new Option<double?>("--val-split") { Description = "Share of --data held out for validation when there is no validation folder (default 0.2)." };
    public readonly Option<int?> InChannels = new Option<int?>("--in-channels") { Description = "Image channels fed to the model (default: 1 for gray data, else 3)." };
    public readonly Option<int?> Epochs = new Option<int?>("--epochs") { Description = "Epochs (default 40; shapes: 12)." };
    public readonly Option<int?> Batch = new Option<int?>("--batch-size") { Description = "Batch size (default 4; shapes: 8)." };
    public readonly Option<string?> Crop = new Option<string?>("--crop") { Description = "Random training crop HxW, after random scaling (e.g. 256x256)." };
    public readonly Option<string?> Size = new Option<string?>("--size") { Description = "Resize every image to HxW first." };
    public readonly Option<double?> Lr = new Option<double?>("--lr") { Description = "Base learning rate (default 1e-3; shapes: 3e-3)." };
    public readonly Option<string> Optimizer = new Option<string>("--optimizer") { Description = "adamw or sgd.", DefaultValueFactory = _ => "adamw" };
    public readonly Option<string> Schedule = new Option<string>("--schedule") { Description = "poly, cosine or constant (after a linear warm-up).", DefaultValueFactory = _ => "poly" };
    public readonly Option<double> Warmup = new Option<double>("--warmup") { Description = "Warm-up share of all steps.", DefaultValueFactory = _ => 0.05 };
    public readonly Option<double> WeightDecay = new Option<double>("--weight-decay") { DefaultValueFactory = _ => 1e-4 };
    public readonly Option<double?> Clip = new Option<double?>("--clip") { Description = "Clip the gradient norm to this." };
    public readonly Option<int> Accumulate = new Option<int>("--accumulate") { Description = "Batches per optimiser step.", DefaultValueFactory = _ => 1 };
    public readonly Option<string?> Loss = new Option<string?>("--loss") { Description = "ce, dice or ce+dice (default ce; shapes: ce+dice)." };
    public readonly Option<string> ClassWeights = new Option<string>("--class-weights") { Description = "none, median-frequency or inverse-frequency (computed from the training masks).", DefaultValueFactory = _ => "none" };
    public readonly Option<double> Smoothing = new Option<double>("--label-smoothing") { DefaultValueFactory = _ => 0 };
    public readonly Option<bool> NoAugment = new Option<bool>("--no-augment") { Description = "No random scale, flips or colour jitter." };
    public readonly Option<bool> Vflip = new Option<bool>("--vflip") { Description = "Also flip vertically (microscopy, aerial images)." };
    public readonly Option<int> EvalEvery = new Option<int>("--eval-every") { DefaultValueFactory = _ => 1 };
    public readonly Option<int?> Patience = new Option<int?>("--patience") { Description = "Early stopping: evaluations without a better mean IoU." };
    public readonly Option<int> Workers = new Option<int>("--workers") { Description = "Loader threads (0: one per core).", DefaultValueFactory = _ => 0 };
    public readonly Option<int> CacheMb = new Option<int>("--cache-mb") { Description = "Keep decoded samples in memory up to this many MiB.", DefaultValueFactory = _ => 1024 };
    public readonly Option<string> Device = new Option<string>("--device") { Description = "auto, cpu or cuda.", DefaultValueFactory = _ => "auto" };
    public readonly Option<string?> EncoderWeights = new Option<string?>("--encoder-weights") { Description = "Pretrained encoder weights: a torchvision ResNet state dict (.pth) or .safetensors file (needs a ResNet --encoder); for --encoder mlnet-resnet18, builtin (ML.NET's ImageNet-trained ResNet18.onnx from the NuGet cache) or that file's path." };
    public readonly Option<double> EncoderLr = new Option<double>("--encoder-lr-scale") { Description = "The encoder's learning rate as a share of --lr (e.g. 0.1 for a pretrained encoder).", DefaultValueFactory = _ => 1 };
    public readonly Option<int> FreezeEncoder = new Option<int>("--freeze-encoder-epochs") { Description = "Keep the encoder frozen for this many epochs at the start.", DefaultValueFactory = _ => 0 };
    public readonly Option<string> Precision = new Option<string>("--precision") { Description = "fp32, bf16 or fp16: the convolutions' arithmetic (float32 weights and optimiser either way; fp16 with loss scaling). bf16 is the fast one on CPUs with AVX-512 BF16.", DefaultValueFactory = _ => "fp32" };
    public readonly Option<int> Seed = new Option<int>("--seed") { DefaultValueFactory = _ => 0 };
    public readonly Option<string?> TimeLimit = new Option<string?>("--time-limit") { Description = "Stop cleanly after the epoch in which this much time has passed (e.g. 20m)." };
    public readonly Option<string?> OutDir = new Option<string?>("--out") { Description = "Run folder (default runs/<timestamp>)." };
    public readonly Option<bool> Resume = new Option<bool>("--resume") { Description = "Continue the run in --out from its last.ckpt." };
    public readonly Option<bool> Overwrite = new Option<bool>("--overwrite") { Description = "Start over in an --out folder that holds a run (its checkpoints, metrics and summary are deleted)." };
    public readonly Option<bool> Json = new Option<bool>("--json") { Description = "Print summary.json as the last line of standard output (progress goes to standard error)." };
    public readonly DataFlags D;
    public readonly ModelFlags Model;

    /// <summary>Adds the flags to <paramref name="cmd"/>: the data flags, the model flags, then the rest.</summary>
    public TrainFlags(Command cmd)
    {
        D = DataFlags.Add(cmd);
        Model = ModelFlags.Add(cmd);
        foreach (var o in new Option[] { Data, Val, ValSplit, InChannels, Epochs, Batch, Crop, Size, Lr, Optimizer, Schedule, Warmup, WeightDecay, Clip, Accumulate, Loss, ClassWeights, Smoothing, NoAugment, Vflip, EvalEvery, Patience, Workers, CacheMb, Device, Precision, EncoderWeights, EncoderLr, FreezeEncoder, Seed, TimeLimit, OutDir, Resume, Overwrite, Json })
            cmd.Options.Add(o);
    }
}
