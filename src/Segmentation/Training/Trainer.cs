using System.Diagnostics;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Models;
using Segmentation.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>
/// Trains a <see cref="SegmentationModel"/>: the data (loader, augmentation), the step (forward, loss, backward, clip,
/// optimiser,
/// schedule) inside one dispose scope, validation with the <see cref="ConfusionMatrix"/>, the best and last
/// checkpoints, early stopping, a time limit and exact resume. It reports through <see cref="IProgress{T}"/> and
/// never writes to the console.
/// </summary>
public sealed class Trainer : IDisposable
{
    private readonly SegmentationModel model;
    private readonly Device device;
    private readonly TorchSharp.Modules.OptimizerHelper optimizer;
    private ISegmentationLoss loss;
    private readonly bool ownsLoss;
    private SegmentationTask task = SemanticSegmentation.Instance;
    private readonly LossScaler? scaler;
    private readonly double[] groupScales;
    private readonly Distributed.ProcessGroup? group;
    private readonly Distributed.GradientReducer? reducer;
    private readonly FusedAdamW? fused;
    private readonly DeviceLossScaler? deviceScaler;
    private readonly WeightAverage? average;

    /// <summary>float16 training gives up after this many steps in a row skipped for non-finite gradients.</summary>
    public const int MaxConsecutiveSkippedSteps = 30;

    /// <summary>The options, validated.</summary>
    public TrainerOptions Options { get; private set; }
    /// <summary>The device the model trains on.</summary>
    public Device Device => device;
    /// <summary>The model (moved to <see cref="Device"/>).</summary>
    public SegmentationModel Model => model;
    /// <summary>The loss scaler of float16 training (null otherwise).</summary>
    internal LossScaler? Scaler
    {
        get
        {
            deviceScaler?.ReadInto(); // the fused step keeps the scale on the device
            return scaler;
        }
    }

    /// <summary>Called between the checkpoint writes of an epoch (tests interrupt there to simulate a kill).</summary>
    internal Action<string>? CheckpointBoundary { get; set; }

    /// <summary>Creates a trainer; the model is moved to the options' device.</summary>
    public Trainer(SegmentationModel model, TrainerOptions? options = null)
    {
        Options = options ?? new TrainerOptions();
        Options.Validate();
        int classes = model.Description.Classes, min = model.MinimumInputSize;
        if (Options.ClassWeights is { } w && w.Length > classes) // checked against the data's classes in Fit
            throw new OptionsException($"{w.Length} class weights were given for a model with {classes} classes.");
        if (Options.Crop is { } crop && (crop.Height < min || crop.Width < min))
            throw new OptionsException($"Crop {crop} is smaller than the model's minimum input of {min}x{min}.");
        this.model = model;
        device = Devices.Resolve(Options.Device);
        if ((Options.Crop ?? Options.Size) is { } stepSize) CheckMemory(model, stepSize, Options.BatchSize
            / (Options.ProcessGroup?.WorldSize ?? 1), device);
        model.to(device);
        if (Options.Precision != Precision.Auto) model.Precision = Options.Precision; // auto: decided in Fit
        scaler = Options.Precision == Precision.Float16 ? new LossScaler(Options.InitialLossScale,
            growthInterval: Options.LossScaleGrowthInterval) : null;
        (optimizer, groupScales) = CreateOptimizer(model, Options);
        if (Options.WeightAverageDecay is { } decay) average = new WeightAverage(model, decay);
        if (Options.FusedOptimizer && optimizer is TorchSharp.Modules.AdamW adamW && FusedAdamW.Unavailable is null)
        {
            fused = new FusedAdamW(adamW);
            if (scaler is not null) deviceScaler = new DeviceLossScaler(scaler, device);
        }
        (loss, ownsLoss) = Options.Loss.Object is { } given ? (given, false) : (LossRegistry.Create(Options), true);
        if (Options.ProcessGroup is { } g) // at world size 1 too: the same work, to measure what it costs
        {
            group = g;
            reducer = new Distributed.GradientReducer(g, model.parameters());
            if (Options.SyncBatchNorm)
                foreach (var bn in model.modules().OfType<BatchNorm>()) bn.Sync = g; // a no-op at world size 1
        }
    }

    /// <summary>The processes of a data-parallel run (null: this process alone).</summary>
    public Distributed.ProcessGroup? ProcessGroup => group;

    /// <summary>Every process takes rank 0's weights and buffers (at the start, as DDP does, and before each
    /// evaluation, so batch-norm statistics kept per process agree).</summary>
    private void BroadcastModel(string what)
    {
        if (group is null) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var sameType in model.state_dict().Values.GroupBy(t => t.dtype))
        {
            var tensors = sameType.ToList();
            var flat = cat(tensors.Select(t => t.flatten()).ToList());
            group.Broadcast(flat, 0, what);
            long offset = 0;
            foreach (var t in tensors)
            {
                t.copy_(flat.narrow(0, offset, t.numel()).view_as(t));
                offset += t.numel();
            }
        }
    }

    /// <summary>
    /// Trains on <paramref name="train"/>, evaluating on <paramref name="val"/> (if given), from scratch or from
    /// <paramref name="resumeFrom"/> (a checkpoint of this run: weights, optimiser, schedule position, RNG, history).
    /// </summary>
    public TrainingResult Fit(SegmentationDataset train, SegmentationDataset? val = null,
        IProgress<TrainingProgress>? progress = null,
        Checkpoint? resumeFrom = null, CancellationToken cancellation = default)
    {
        Models.CpuThreads.Apply(Options.Threads);
        var d = CheckData(train, val);
        UseTask(d);
        if (Options.ManageProcessMemory && device.type == DeviceType.CPU && AllocatorTuning.Apply())
            progress?.Report(new TrainingProgress { Kind = ProgressKind.Message,
                Message = $"allocator tuning {AllocatorTuning.Status}" });
        foreach (var w in train.Warnings) progress?.Report(new TrainingProgress { Kind = ProgressKind.Message,
            Message = w });
        ChoosePrecision(train, progress);
        // one process writes a run folder: rank 0 of a distributed run
        var run = Options.CheckpointDirectory is null || group is { IsMain: false } ? null
            : new RunFolder(Options.CheckpointDirectory);
        using var ownership = run?.Lock(); // one process writes a run folder
        ValidateData(train, val, run, progress, cancellation);

        int bits = train.ImageBits();
        if (bits == 16) progress?.Report(new TrainingProgress { Kind = ProgressKind.Message, Message = "16-bit "
            + "images: read at full depth (each sample as a share of 65535; 8-bit images among them as a share of "
            + "255)" });
        var fit = new FitRun(this, train, val, (Options.Normalization ?? Normalization.DefaultFor(d.InChannels))
            with { ImageBits = bits }, run, progress, cancellation);
        fit.Start(resumeFrom);
        BroadcastModel("the model's starting weights");
        try
        {
            for (int epoch = fit.State.Epoch + 1; epoch <= Options.Epochs; epoch++)
            {
                if (cancellation.IsCancellationRequested) { fit.StopReason = "interrupted"; break; }
                fit.RunEpoch(epoch);
                if (fit.ShouldStop(epoch)) break;
            }
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            // Stopped between two steps: the unfinished epoch is dropped; the files hold the last finished one.
            fit.StopReason = "interrupted";
        }
        return fit.Result();
    }

    /// <summary>
    /// <see cref="Precision.Auto"/> becomes what <see cref="AutoPrecision"/> picks for this model at the training
    /// shape (rank 0 decides for every process); an explicit bf16 or fp16 that this CPU only emulates is warned about
    /// with the measured slowdown.
    /// </summary>
    private void ChoosePrecision(SegmentationDataset train, IProgress<TrainingProgress>? progress)
    {
        bool auto = Options.Precision == Precision.Auto;
        string? emulation = device.type != DeviceType.CPU ? null : Options.Precision switch
        {
            Precision.Float16 => "libtorch's CPU kernels compute fp16 by reference code",
            Precision.BFloat16 => AutoPrecision.NoNativeBf16(AutoPrecision.CpuFlags()),
            _ => null,
        };
        if (!auto && emulation is null) return;
        var (w, h) = Options.Crop is { } c ? (c.Width, c.Height) : Options.Size is { } s ? (s.Width, s.Height)
            : train.UniformSize() ?? (train.SmallestImage() is var (_, sw, sh) ? (sw, sh) : (64, 64));
        var shape = new long[] { Math.Max(1, Options.BatchSize / (group?.WorldSize ?? 1)), model.Description.InChannels,
            h, w };
        if (auto)
        {
            var decision = AutoPrecision.Choose(model, device, shape);
            var chosen = new[] { decision.Chosen == Precision.BFloat16 ? 1.0 : 0 };
            group?.Broadcast(chosen, "the precision rank 0 chose");
            Options = Options with { Precision = chosen[0] > 0 ? Precision.BFloat16 : Precision.Float32 };
            model.Precision = Options.Precision;
            progress?.Report(new TrainingProgress { Kind = ProgressKind.Message, Message =
                $"precision auto: {Options.Precision.ShortName()} ({decision.Reason})" });
            return;
        }
        double slowdown = 1 / AutoPrecision.Measure(model, device, shape, Options.Precision);
        progress?.Report(new TrainingProgress { Kind = ProgressKind.Message, Message =
            $"warning: {Options.Precision.ShortName()} is emulated on this CPU ({emulation}): this model's step takes "
                + $"{slowdown:F1}x as long as in fp32. Use --precision fp32, or auto." });
    }

    /// <summary>
    /// One parameter group, or two (encoder first, then the rest) when the encoder learns at another rate or starts
    /// frozen; returns the optimiser and each group's share of the scheduled learning rate.
    /// </summary>
    private static (TorchSharp.Modules.OptimizerHelper, double[]) CreateOptimizer(SegmentationModel model,
        TrainerOptions o)
    {
        bool split = o.EncoderLearningRateScale != 1 || o.FreezeEncoderEpochs > 0;
        var encoderParameters = model.Encoder.parameters().ToHashSet();
        var groups = new List<(List<TorchSharp.Modules.Parameter> Parameters, double Scale)>();
        if (split)
        {
            groups.Add((model.parameters().Where(encoderParameters.Contains).ToList(), o.EncoderLearningRateScale));
            groups.Add((model.parameters().Where(p => !encoderParameters.Contains(p)).ToList(), 1.0));
        }
        else groups.Add((model.parameters().ToList(), 1.0));
        var scales = groups.Select(g => g.Scale).ToArray();
        if (o.Optimizer == OptimizerKind.Sgd)
            return (optim.SGD(groups.Select(g => new TorchSharp.Modules.SGD.ParamGroup(g.Parameters, o.LearningRate
                * g.Scale, o.Momentum, weight_decay: o.WeightDecay)), o.LearningRate, o.Momentum,
                    weight_decay: o.WeightDecay), scales);
        return (optim.AdamW(groups.Select(g => new TorchSharp.Modules.AdamW.ParamGroup(g.Parameters, o.LearningRate
            * g.Scale, weight_decay: o.WeightDecay)), o.LearningRate, weight_decay: o.WeightDecay), scales);
    }

    /// <summary>Sets every group's learning rate: the scheduled rate times the group's share.</summary>
    private void SetLearningRate(double lr)
    {
        int i = 0;
        foreach (var g in optimizer.ParamGroups) g.LearningRate = lr
            * groupScales[Math.Min(i++, groupScales.Length - 1)];
    }

    /// <summary>Freezes the encoder during the first <see cref="TrainerOptions.FreezeEncoderEpochs"/> epochs, and thaws
    /// it after.</summary>
    private void FreezeEncoderFor(int epoch)
    {
        if (Options.FreezeEncoderEpochs == 0) return;
        bool frozen = epoch <= Options.FreezeEncoderEpochs;
        foreach (var p in model.Encoder.parameters()) p.requires_grad_(!frozen);
    }

    /// <summary>The task of the data; instance data weighs its boundary class in the loss when no weights are
    /// given.</summary>
    private void UseTask(DatasetDescription d)
    {
        var chosen = SegmentationTask.For(d);
        if (chosen.Name == task.Name) return;
        task = chosen;
        if (task is InstanceSegmentation instances && ownsLoss && Options.ClassWeights is null)
        {
            (loss as IDisposable)?.Dispose();
            loss = LossRegistry.Create(Options with { ClassWeights = instances.ClassWeights() });
        }
        loss = task.Loss(loss); // the target's own terms (the distance target's)
    }

    /// <summary>The data must fit the model and each other; returns the training data's description.</summary>
    private DatasetDescription CheckData(SegmentationDataset train, SegmentationDataset? val)
    {
        var d = train.Description;
        if (val is not null && val.Description.Classes != d.Classes)
            throw new DataException($"Training data has {d.Classes} classes, validation data "
                + $"{val.Description.Classes}.");
        if (val is not null && val.Description.Task != d.Task)
            throw new DataException($"Training data is {d.Task.ToString().ToLowerInvariant()} data, validation data "
                + $"{val.Description.Task.ToString().ToLowerInvariant()}.");
        var m = model.Description;
        if (d.OutputPlanes() != m.Classes)
            throw new OptionsException($"The model has {m.Classes} output classes but the data set has {d.Classes} "
                + $"({string.Join(", ", d.ClassNames)})" + (d.OutputPlanes() == d.Classes ? "." : $", and its "
                + $"{d.Instances!.Target.ToString().ToLowerInvariant()} target one more plane after them: give the "
                + $"model {d.OutputPlanes()}."));
        if (Options.ClassWeights is { } w && w.Length != d.Classes)
            throw new OptionsException($"{w.Length} class weights were given for data of {d.Classes} classes "
                + $"({string.Join(", ", d.ClassNames)}).");
        if (d.InChannels != m.InChannels)
            throw new OptionsException($"The model takes {m.InChannels} input channel(s) but the data set gives "
                + $"{d.InChannels}.");
        RefuseImagesSmallerThanTheModel(train, val);
        return d;
    }

    /// <summary>
    /// Images that reach the model at their own size (no <see cref="TrainerOptions.Size"/>; validation is never
    /// cropped) must be at least the model's smallest input: named before training, not failed in the first step.
    /// </summary>
    private void RefuseImagesSmallerThanTheModel(SegmentationDataset train, SegmentationDataset? val)
    {
        int min = model.MinimumInputSize;
        if (Options.Crop is { } crop && (crop.Height < min || crop.Width < min))
            throw new OptionsException($"The crop {crop} is smaller than the smallest input this model takes "
                + $"({min}x{min}).");
        if (Options.Size is not null) return;
        var extremes = train.SizeExtremes();
        if (Options.Crop is null && Options.BatchSize > 1 && extremes?.Differing is [var (f1, w1, h1),
            var (f2, w2, h2)])
            throw new DataException($"{train.Origin}: the training images differ in size ({f1} is {w1}x{h1}, {f2} is "
                + $"{w2}x{h2}), and a batch of {Options.BatchSize} needs one size. Resize them as they are read "
                + $"(--size {h1}x{w1}, TrainerOptions.Size), train on random crops (--crop), or use --batch-size 1.",
                f1);
        foreach (var data in Options.Crop is null ? new[] { train, val } : new[] { val })
            if ((data == train ? extremes?.Smallest : data?.SmallestImage()) is var (file, w, h) && (w < min
                || h < min))
                throw new DataException($"{file}: {w}x{h} is smaller than the smallest input this model takes "
                    + $"({min}x{min}: its encoder halves the image {(int)Math.Log2(min)} times). Resize the images as "
                    + $"they are read (--size, TrainerOptions.Size), or use larger ones. (Prediction pads small "
                    + $"images; training does not.)", file);
    }

    /// <summary>One call of <see cref="Fit"/>: its loaders, schedule, state and history, epoch by epoch.</summary>
    private sealed class FitRun
    {
        private readonly Trainer t;
        private readonly SegmentationDataset train;
        private readonly SegmentationDataset? val;
        private readonly Normalization normalization;
        private readonly RunFolder? run;
        private readonly IProgress<TrainingProgress>? progress;
        private readonly CancellationToken cancellation;
        private readonly DataLoader trainLoader;
        private readonly DataLoader? valLoader;
        private LearningRateSchedule schedule;
        private readonly List<(int Epoch, double Train, double Eval)> timings = new();
        private readonly Stopwatch clock = new();
        private readonly List<EpochRecord> history = new();
        private SegmentationMetrics? bestMetrics;
        private ConvolutionReport? reported;
        private double priorSeconds;

        public TrainingState State { get; private set; } = new();
        public string StopReason { get; set; } = "completed";
        private TrainerOptions O => t.Options;

        public FitRun(Trainer trainer, SegmentationDataset train, SegmentationDataset? val,
            Normalization normalization, RunFolder? run,
            IProgress<TrainingProgress>? progress, CancellationToken cancellation)
        {
            t = trainer; this.train = train; this.val = val; this.normalization = normalization; this.run = run;
            this.progress = progress; this.cancellation = cancellation;
            (trainLoader, valLoader) = trainer.Loaders(train, val, normalization, progress);
            reported = trainer.model.Convolutions; // only checks made during this call are news
            schedule = ScheduleOver(O.Epochs);
            plannedEpochs = O.Epochs;
        }

        /// <summary>The learning-rate schedule laid over <paramref name="epochs"/> epochs of optimiser steps.</summary>
        private LearningRateSchedule ScheduleOver(int epochs)
        {
            long optimizerStepsPerEpoch = (trainLoader.BatchesPerEpoch + O.AccumulationSteps - 1) / O.AccumulationSteps;
            long totalSteps = optimizerStepsPerEpoch * epochs;
            return new LearningRateSchedule(O.Schedule, O.LearningRate, totalSteps,
                (long)(O.WarmupFraction * totalSteps), O.PolyPower);
        }

        /// <summary>The epochs the run was set up for, before any fitting to the time limit.</summary>
        private int plannedEpochs;

        /// <summary>Fitting to the time limit lengthens a schedule to at most this many times the epochs
        /// planned.</summary>
        internal const int GrowthCap = 3;

        /// <summary>The median training epoch of this call (the first left out once there are others: it carries the
        /// layer check and a cold cache) and the median evaluation (0 before the first); medians, so that one slow
        /// epoch (another process's burst) does not move them.</summary>
        private (double Train, double Eval) EpochTimes()
        {
            var evals = timings.Where(x => x.Eval > 0).Select(x => x.Eval).ToList();
            return (TrainingBenchmark.Median((timings.Count > 1 ? timings.Skip(1) : timings).Select(x => x.Train)
                .ToList()), evals.Count == 0 ? 0 : TrainingBenchmark.Median(evals));
        }

        /// <summary>
        /// <see cref="TrainerOptions.FitScheduleToTimeLimit"/>: after each epoch, the most epochs (up to <see
        /// cref="GrowthCap"/> times those planned) whose training and evaluations at their median times still end
        /// within the limit; the schedule is laid over them when that differs from its current length. A plan's epoch
        /// time comes from a short step benchmark; where real epochs are faster, the run takes the epochs that fit
        /// rather than leave the budget unused.
        /// </summary>
        private void FitToTimeLimit(int epoch)
        {
            if (!O.FitScheduleToTimeLimit || O.TimeLimit is not { } limit || valLoader is not null
                && !timings.Any(x => x.Eval > 0)) return;
            var (train, eval) = EpochTimes();
            double left = (limit - Elapsed).TotalSeconds;
            int fitted = epoch, cap = plannedEpochs * GrowthCap;
            for (int e = epoch + 1; e <= cap; e++)
            {
                int evaluations = Enumerable.Range(epoch + 1, e - epoch).Count(k => k % O.EvalEvery == 0 || k == e);
                if ((e - epoch) * train + (valLoader is null ? 0 : evaluations * eval) > left) break;
                fitted = e;
            }
            var decided = new[] { (double)fitted };
            t.group?.Broadcast(decided, "the epochs rank 0 fitted to the time limit"); // every process stops together
            fitted = Math.Max((int)decided[0], epoch);
            // shortened whenever the rest would not fit; lengthened only by two or more (or to the cap)
            if (fitted == O.Epochs || fitted > O.Epochs && fitted < Math.Min(O.Epochs + 2, cap)) return;
            t.Options = O with { Epochs = fitted };
            schedule = ScheduleOver(O.Epochs);
            State = State with { ScheduleEpochs = fitted != plannedEpochs ? O.Epochs : null };
            Report(ProgressKind.Message, epoch, string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"time limit: the schedule now ends after epoch {O.Epochs} (epochs take {train:F1} s, evaluations "
                    + $"{eval:F1} s; {left:F0} s left)"));
        }

        /// <summary>From scratch (seeded) or from a checkpoint of this run (optimiser, RNG, history), after repairing
        /// the run folder.</summary>
        public void Start(Checkpoint? resumeFrom)
        {
            if (resumeFrom is not null)
            {
                State = resumeFrom.State;
                if (t.average is not null && resumeFrom.TrainingWeights.Length > 0)
                {
                    // the model was built from the checkpoint's weights, which are the average (and so is the
                    // average now); training goes on from the weights as trained
                    using var scope = NewDisposeScope();
                    StateDicts.Load(t.model, StateDicts.ReadTorchSharp(resumeFrom.TrainingWeights),
                        "The checkpoint's training weights");
                }
                if (resumeFrom.OptimizerState.Length > 0)
                {
                    using var reader = new BinaryReader(new MemoryStream(resumeFrom.OptimizerState));
                    t.optimizer.load_state_dict(reader);
                    t.fused?.Reset();
                }
                if (t.scaler is not null && resumeFrom.State.LossScale is { } scale)
                {
                    t.scaler.Restore(scale, resumeFrom.State.LossScaleGoodSteps);
                    t.deviceScaler?.Load();
                }
                if (resumeFrom.RngState.Length > 0)
                {
                    using var rng = tensor(resumeFrom.RngState, ScalarType.Byte);
                    random.set_rng_state(rng);
                }
                // the routes the layers had: each is the first right for every shape checked so far
                if (t.model.VerifyLayers)
                    foreach (var input in resumeFrom.State.CheckedInputs) t.model.CheckLayers(input.Shape,
                        input.Training);
            }
            else random.manual_seed(O.Seed);
            if (resumeFrom?.State.ScheduleEpochs is { } fitted && O.FitScheduleToTimeLimit && fitted != O.Epochs)
            {
                t.Options = O with { Epochs = fitted }; // the schedule the run was fitted to, not the one planned
                schedule = ScheduleOver(fitted);
            }
            if (run is not null)
            {
                // An interrupted run leaves files behind: temporary saves, and best.ckpt out of step with last.ckpt.
                var repairs = resumeFrom is not null ? run.Repair() : run.SweepTemporaryFiles();
                foreach (var line in repairs) Report(ProgressKind.Message, 0, message: $"{run.Directory}: {line}");
            }
            history.AddRange(State.History);
            if (resumeFrom is not null) run?.WriteMetrics(history); // the record matches the checkpoint resumed from
            priorSeconds = State.Seconds;
            bestMetrics = resumeFrom?.Metrics is { } m && resumeFrom.State.BestEpoch == resumeFrom.State.Epoch ? m
                : null;
            if (bestMetrics is null && resumeFrom is not null && run is not null && File.Exists(run.Best))
            {
                try { bestMetrics = Checkpoint.Load(run.Best).Metrics; } catch (CheckpointException) { }
            }
            clock.Start();
            progress?.Report(new TrainingProgress { Kind = ProgressKind.Started, Epoch = State.Epoch,
                Epochs = O.Epochs, StepsPerEpoch = trainLoader.BatchesPerEpoch });
        }

        /// <summary>Trains one epoch, evaluates it when due, records it and writes its checkpoints.</summary>
        public void RunEpoch(int epoch)
        {
            var epochClock = Stopwatch.StartNew();
            var (lossMean, images, lr, optStep) = TrainEpoch(epoch, epochClock);
            double trainSeconds = epochClock.Elapsed.TotalSeconds;
            bool evaluate = valLoader is not null && (epoch % O.EvalEvery == 0 || epoch == O.Epochs);
            var (metrics, valLoss) = evaluate ? EvaluateEpoch(epoch) : (null, double.NaN);
            var record = new EpochRecord
            {
                Epoch = epoch, TrainLoss = lossMean, ValLoss = valLoss, MeanIoU = metrics?.MeanIoU ?? double.NaN,
                PixelAccuracy = metrics?.PixelAccuracy ?? double.NaN, LearningRate = lr,
                    Seconds = epochClock.Elapsed.TotalSeconds,
                ImagesPerSecond = images / Math.Max(1e-9, trainSeconds), Metrics = metrics,
                Ap = metrics?.Instances?.Ap ?? double.NaN, Ap50 = metrics?.Instances?.Ap50 ?? double.NaN,
                Pq = metrics?.Instances?.Pq ?? double.NaN,
            };
            t.ReleaseMemory();
            record = record with { ResidentMemoryMB = ResidentMemoryMB() }; // read at the same point every epoch
            history.Add(record);
            double score = metrics is null ? double.NaN : t.task.Score(metrics);
            bool improved = !double.IsNaN(score) && (double.IsNaN(State.BestMeanIoU) || score > State.BestMeanIoU);
            State = State with
            {
                Epoch = epoch, OptimizerStep = optStep, History = history.ToArray(), Seconds = priorSeconds
                    + clock.Elapsed.TotalSeconds,
                LossScale = t.scaler?.Scale, LossScaleGoodSteps = t.scaler?.GoodSteps ?? 0,
                CheckedInputs = t.model.CheckedInputs.ToArray(),
                BestMeanIoU = improved ? score : State.BestMeanIoU,
                BestEpoch = improved ? epoch : State.BestEpoch,
                EvaluationsWithoutImprovement = improved ? 0 : evaluate ? State.EvaluationsWithoutImprovement + 1
                    : State.EvaluationsWithoutImprovement,
            };
            if (improved) bestMetrics = metrics;
            timings.Add((epoch, trainSeconds, evaluate ? epochClock.Elapsed.TotalSeconds - trainSeconds : 0));
            FitToTimeLimit(epoch);
            SaveCheckpoints(epoch, metrics, improved);
            progress?.Report(new TrainingProgress { Kind = ProgressKind.Epoch, Epoch = epoch, Epochs = O.Epochs,
                Record = record, LearningRate = lr });
        }

        private (double LossMean, int Images, double LearningRate, long OptimizerStep) TrainEpoch(int epoch,
            Stopwatch epochClock)
        {
            t.model.train();
            t.FreezeEncoderFor(epoch);
            double lossSum = 0, images = 0;
            int step = 0, steps = trainLoader.BatchesPerEpoch;
            t.deviceScaler?.ReadInto();
            long optStep = State.OptimizerStep, skippedBefore = t.scaler?.SkippedSteps ?? 0;
            double lr = schedule.RateAt(optStep);
            using (NewDisposeScope()) t.optimizer.zero_grad(); // gradient handles are tensors too
            foreach (var batch in trainLoader.Epoch(epoch - 1, cancellation))
            {
                step++;
                bool apply = step % O.AccumulationSteps == 0 || step == steps;
                if (apply)
                {
                    lr = schedule.RateAt(optStep);
                    t.SetLearningRate(lr);
                }
                t.StepName = $"step {step} of epoch {epoch}";
                O.BeforeStep?.Invoke(epoch, step);
                float value = t.TrainStep(batch, normalization, apply);
                ReportConvolutions();
                if (apply)
                {
                    optStep++;
                    t.average?.Update(optStep);
                }
                images += batch.Count;
                if (float.IsFinite(value)) lossSum += value * batch.Count;
                else
                {
                    t.deviceScaler?.ReadInto(); // the skips in a row: read back only when a loss is not finite
                    if (t.scaler is null || t.scaler.ConsecutiveSkips >= MaxConsecutiveSkippedSteps)
                        throw Diverged(value, epoch, step, lr);
                }
                double ips = images / Math.Max(1e-9, epochClock.Elapsed.TotalSeconds);
                progress?.Report(new TrainingProgress
                {
                    Kind = ProgressKind.Step, Epoch = epoch, Epochs = O.Epochs, Step = step, StepsPerEpoch = steps,
                    Loss = value, LearningRate = lr, ImagesPerSecond = ips,
                        Eta = Eta(epoch, images / (double)trainLoader.SamplesPerEpoch, ips),
                });
            }
            if (t.group is { } g)
            {
                var sums = new[] { lossSum, images }; // the global batch's mean loss, whatever the process count
                g.AllReduce(sums, $"the training losses of epoch {epoch}");
                (lossSum, images) = (sums[0], (int)sums[1]);
            }
            t.deviceScaler?.ReadInto();
            if (t.scaler is { } sc && sc.SkippedSteps > skippedBefore)
                Report(ProgressKind.Message, epoch,
                    $"fp16: {sc.SkippedSteps - skippedBefore} step(s) skipped for non-finite gradients this epoch; "
                        + $"loss scale now {sc.Scale:g4}");
            return (lossSum / Math.Max(1, images), (int)images, lr, optStep);
        }

        /// <summary>
        /// Time to the end of the run: the epochs left at the median training time of the finished ones (the first
        /// left out once there are others: it carries the layer check and a cold cache), plus the evaluations left at
        /// the median of those done (before the first, as long as a training epoch); within the first epoch, its own
        /// pace.
        /// Never past the time limit.
        /// </summary>
        private TimeSpan Eta(int epoch, double doneOfEpoch, double imagesPerSecond)
        {
            double left = O.Epochs - epoch + 1 - Math.Clamp(doneOfEpoch, 0, 1);
            var (train, eval) = EpochTimes();
            if (timings.Count == 0) train = trainLoader.SamplesPerEpoch / Math.Max(imagesPerSecond, 1e-9);
            int evaluations = valLoader is null ? 0
                : Enumerable.Range(epoch, O.Epochs - epoch + 1).Count(k => k % O.EvalEvery == 0 || k == O.Epochs);
            double seconds = left * train + evaluations * (eval > 0 ? eval : train);
            if (O.TimeLimit is { } limit) seconds = Math.Min(seconds,
                Math.Max(0, (limit - Elapsed).TotalSeconds));
            return TimeSpan.FromSeconds(seconds);
        }

        private TrainingDivergedException Diverged(float value, int epoch, int step, double lr)
        {
            var lastGood = run is not null && File.Exists(run.Last)
                ? $"the last good checkpoint is {run.Last} (epoch {State.Epoch})" : "no checkpoint was written yet";
            return new TrainingDivergedException($"The loss became {value} at epoch {epoch}, step {step} (learning "
                + $"rate {lr:g3}); training stopped and {lastGood}. "
                + (epoch == 1 && step <= 10
                    ? "A NaN this early, whatever the learning rate, points at the machine's kernels: run 'segment "
                    + "doctor' with the same model flags; otherwise lower the learning rate or enable gradient "
                    + "clipping."
                    : "Lower the learning rate or enable gradient clipping (and if that does not help, run 'segment "
                    + "doctor' with the same model flags)."));
        }

        private (SegmentationMetrics? Metrics, double Loss) EvaluateEpoch(int epoch)
        {
            int valSteps = valLoader!.BatchesPerEpoch;
            t.BroadcastModel($"the model's weights before evaluating epoch {epoch}");
            (SegmentationMetrics, double, IReadOnlyList<Preview>?) Validate()
            {
                var (m, l) = t.Evaluate(valLoader, normalization, train.Description, cancellation, step =>
                {
                    ReportConvolutions();
                    progress?.Report(new TrainingProgress { Kind = ProgressKind.ValidationStep, Epoch = epoch,
                        Epochs = O.Epochs, Step = step, StepsPerEpoch = valSteps });
                });
                return (m, l, O.PreviewImages > 0 ? Previews.Render(t.model, valLoader, normalization, t.device,
                    train.Description, O.PreviewImages) : null);
            }
            // with a weight average, the average is what is validated
            var (metrics, loss, previews) = t.average?.With(Validate) ?? Validate();
            progress?.Report(new TrainingProgress { Kind = ProgressKind.Evaluated, Epoch = epoch, Epochs = O.Epochs,
                Metrics = metrics, Previews = previews });
            return (metrics, loss);
        }

        private void SaveCheckpoints(int epoch, SegmentationMetrics? metrics, bool improved)
        {
            if (run is null) return;
            var ckpt = t.MakeCheckpoint(State, train.Description, normalization, metrics, train.Origin, val?.Origin);
            run.SaveEpoch(ckpt, improved, t.CheckpointBoundary);
            run.WriteMetrics(history);
            if (improved) Report(ProgressKind.Checkpoint, epoch, message: run.Best);
            Report(ProgressKind.Checkpoint, epoch, message: run.Last);
            t.ReleaseMemory(); // the checkpoint's model- and optimiser-sized buffers
        }

        /// <summary>The run's time so far, across resumes: --time-limit is the whole run's budget, so a run resumed
        /// after a crash goes on within what is left of it.</summary>
        private TimeSpan Elapsed => TimeSpan.FromSeconds(priorSeconds) + clock.Elapsed;

        /// <summary>Early stopping and the time limit, checked after each epoch but the last.</summary>
        public bool ShouldStop(int epoch)
        {
            if (epoch >= O.Epochs) return false;
            if (O.EarlyStoppingPatience is { } patience && State.EvaluationsWithoutImprovement >= patience)
            {
                StopReason = "early stopping";
                Report(ProgressKind.Message, epoch,
                    $"early stopping: no better {t.task.SelectionMetric} in {patience} evaluation(s) since epoch "
                        + $"{State.BestEpoch}");
                return true;
            }
            if (O.TimeLimit is { } limit && TimeIsUp(limit))
            {
                StopReason = "time limit";
                Report(ProgressKind.Message, epoch, $"time limit of {limit} reached after epoch {epoch}");
                return true;
            }
            return false;
        }

        /// <summary>Whether the time limit has passed; in a distributed run, on any process (all stop
        /// together).</summary>
        private bool TimeIsUp(TimeSpan limit)
        {
            var up = new[] { Elapsed >= limit ? 1.0 : 0 };
            t.group?.AllReduce(up, $"the time-limit check");
            return up[0] > 0;
        }

        public TrainingResult Result()
        {
            var result = new TrainingResult
            {
                Epochs = State.Epoch, BestEpoch = State.BestEpoch, Metrics = bestMetrics, History = history,
                    StopReason = StopReason,
                Seconds = priorSeconds + clock.Elapsed.TotalSeconds,
                BestCheckpoint = run is not null && File.Exists(run.Best) ? run.Best : null, LastCheckpoint = run?.Last,
            };
            if (run is not null && State.Epoch > 0) run.WriteSummary(Summary(result));
            return result;
        }

        /// <summary>summary.json: the best epoch's metrics and how the run went.</summary>
        private System.Text.Json.Nodes.JsonObject Summary(TrainingResult result)
        {
            var summary = result.Metrics?.ToJsonObject() ?? new System.Text.Json.Nodes.JsonObject();
            summary["bestEpoch"] = result.BestEpoch;
            summary["epochs"] = result.Epochs;
            summary["params"] = t.model.ParameterCount();
            summary["device"] = t.device.ToString();
            summary["precision"] = O.Precision.ShortName();
            summary["seconds"] = Math.Round(result.Seconds, 2);
            summary["stopReason"] = result.StopReason;
            var checkpoint = result.BestCheckpoint ?? (File.Exists(run!.Last) ? run.Last : null);
            summary["checkpoint"] = checkpoint is null ? null : Path.GetFullPath(checkpoint);
            return summary;
        }

        /// <summary>
        /// The model checks its layers before the first input of each shape (<see
        /// cref="SegmentationModel.CheckLayers"/>);
        /// a check that ran in the last forward pass is reported once, before that batch's own progress.
        /// </summary>
        private void ReportConvolutions()
        {
            if (t.model.Convolutions is not { } report || ReferenceEquals(report, reported)) return;
            reported = report;
            progress?.Report(new TrainingProgress { Kind = ProgressKind.Convolutions, Convolutions = report,
                Message = report.Summary() });
        }

        private void Report(ProgressKind kind, int epoch, string? message) =>
            progress?.Report(new TrainingProgress { Kind = kind, Epoch = epoch, Epochs = O.Epochs, Message = message });
    }

    /// <summary>The training loader (shuffled, augmented) and the validation loader (one image at a time when sizes
    /// differ).</summary>
    private (DataLoader Train, DataLoader? Val) Loaders(SegmentationDataset train, SegmentationDataset? val,
        Normalization normalization, IProgress<TrainingProgress>? progress)
    {
        int world = group?.WorldSize ?? 1, rank = group?.Rank ?? 0;
        if (world > 1 && train.Count < Options.BatchSize)
            throw new DataException($"{train.Origin}: {train.Count} training samples make no full global batch of "
                + $"{Options.BatchSize} for {world} processes.");
        var trainLoader = new DataLoader(train, new DataLoaderOptions
        {
            BatchSize = Options.BatchSize, Shuffle = true, DropLast = train.Count > Options.BatchSize || world > 1,
                Seed = Options.Seed,
            Workers = Options.Workers, CacheBytes = Options.CacheBytes, Transform = TrainTransform(),
            Shards = world, Shard = rank, Normalization = normalization,
        });
        if (val is null) return (trainLoader, null);
        if (world > 1)
        {
            // each process validates every world-th image; the counts are summed (Evaluator.Run)
            if (val.Count < world)
                throw new DataException($"{val.Origin}: {val.Count} validation image(s) cannot be shared among {world} "
                    + "processes; each needs at least one.");
            val = val.Subset(Enumerable.Range(0, val.Count).Where(i => i % world == rank));
        }
        int valBatch = Options.ValBatchSize ?? Options.BatchSize;
        if (Options.ValBatchSize is null && Options.Size is null && valBatch > 1 && val.UniformSize() is null)
        {
            valBatch = 1; // full-size images of different sizes cannot share a batch
            progress?.Report(new TrainingProgress { Kind = ProgressKind.Message,
                Message =
                    "validation images differ in size: validating one image at a time (a validation batch needs one "
                        + "size: resize them as they are read with --size, TrainerOptions.Size; --val-batch-size 1, "
                        + "TrainerOptions.ValBatchSize, says this choice outright)" });
        }
        return (trainLoader, new DataLoader(val, new DataLoaderOptions
        {
            BatchSize = valBatch, Shuffle = false, Workers = Options.Workers,
            CacheBytes = Options.CacheBytes, Transform = Options.Size is { } s ? new Resize(s.Height, s.Width) : null,
            Normalization = normalization,
        }));
    }

    /// <summary>
    /// Refuses a step whose activations alone (every layer's output and its gradient, float32, estimated from the
    /// model's layer table) would not fit the memory there is, instead of swapping, being killed or overflowing.
    /// </summary>
    private static void CheckMemory(SegmentationModel model, Size2 size, int batch, Device device)
    {
        if (device.type != DeviceType.CPU) return; // CUDA reports its own out-of-memory error, with figures
        // refused with its own message
        if (size.Height < model.MinimumInputSize || size.Width < model.MinimumInputSize) return;
        double perImage = ModelSummary.EstimateActivationElements(model, size.Height, size.Width);
        double needed = perImage * batch * sizeof(float) * 2;
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (needed > available)
            throw new OptionsException($"A training step at {size} with batch {batch} needs about "
                + $"{needed / (1L << 30):N1} GiB for this model's activations alone; this machine has "
                + $"{available / (double)(1L << 30):N1} GiB. Use a smaller crop or size (--crop, --size) or batch "
                + $"(--batch-size).");
    }

    /// <summary>
    /// Every sample of both data sets is decoded once before the first step, so bad files are all reported now; a run
    /// folder remembers the fingerprints of data validated before, so a resume on unchanged files skips it.
    /// </summary>
    private static void ValidateData(SegmentationDataset train, SegmentationDataset? val, RunFolder? run,
        IProgress<TrainingProgress>? progress, CancellationToken cancellation)
    {
        var known = run is not null && File.Exists(run.Validated) ? RegularFile.ReadAllText(run.Validated,
            Limits.ConfigFileBytes, "record of checked data").Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .ToHashSet()
            : new HashSet<string>();
        var fresh = new List<string>();
        foreach (var (data, role) in new[] { (train, "training"), (val, "validation") })
        {
            if (data is null || data.Fingerprint() is not { } print || known.Contains(print)) continue;
            var clock = Stopwatch.StartNew();
            data.Validate(new SynchronousProgress<int>(n
                => progress?.Report(new TrainingProgress { Kind = ProgressKind.DataCheck, Step = n,
                StepsPerEpoch = data.Count, Message = $"checking {role} data" })), cancellation);
            progress?.Report(new TrainingProgress { Kind = ProgressKind.Message,
                Message =
                    $"checked all {data.Count} {role} pairs (decoded, sizes and labels) in "
                        + $"{clock.Elapsed.TotalSeconds:F1} s" });
            fresh.Add(print);
        }
        if (run is not null && fresh.Count > 0)
        {
            Directory.CreateDirectory(run.Directory);
            AtomicFile.WriteAllText(run.Validated, string.Join("\n", known.Concat(fresh)) + "\n");
        }
    }

    /// <summary>The step being trained, for messages ("step 12 of epoch 2").</summary>
    internal string StepName { get; set; } = "a step";

    /// <summary>One training step on a host batch, in its own dispose scope; returns the loss (one
    /// read-back).</summary>
    internal float TrainStep(HostBatch batch, Normalization normalization, bool applyOptimizer)
    {
        using var scope = NewDisposeScope();
        var (images, targets) = task.ToDevice(batch, device);
        var value = loss.Compute(task.Outputs(model.forward(normalization.Apply(images, batch))), targets);
        var objective = Options.AccumulationSteps > 1 ? value / Options.AccumulationSteps : value;
        (deviceScaler?.ScaleLoss(objective) ?? scaler?.ScaleLoss(objective) ?? objective).backward();
        if (applyOptimizer)
        {
            reducer?.Reduce(StepName);
            if (fused is not null) fused.Step(Options.GradientClipNorm, deviceScaler); // the scale stays on the device
            else PerParameterStep();
            optimizer.zero_grad();
        }
        return value.item<float>();
    }

    /// <summary>TorchSharp's optimiser step; float16: gradients back to their true size first, and a step with an
    /// overflow is skipped (the scale backs off).</summary>
    private void PerParameterStep()
    {
        bool finite = scaler?.Unscale(model.parameters()) ?? true;
        if (finite)
        {
            if (Options.GradientClipNorm is { } clip) nn.utils.clip_grad_norm_(model.parameters(), clip);
            optimizer.step();
        }
        scaler?.Update(finite);
    }

    /// <summary>Metrics and mean loss of the model on a loader's data (the one evaluation loop, in eval
    /// mode).</summary>
    private (SegmentationMetrics, double) Evaluate(DataLoader loader, Normalization normalization,
        DatasetDescription d, CancellationToken cancellation, Action<int> onBatch)
    {
        model.eval();
        try
        {
            var result = task.Evaluate(loader, device, d, normalization, model.forward, loss, onBatch, cancellation,
                group);
            return (result.Metrics, result.MeanLoss);
        }
        finally { model.train(); }
    }

    private ISampleTransform? TrainTransform()
    {
        var list = new List<ISampleTransform>();
        if (Options.Size is { } s) list.Add(new Resize(s.Height, s.Width));
        if (Options.Transforms is { } steps) list.AddRange(steps);
        else if (Options.Augmentation is { } text) list.AddRange(Augmentations.Parse(text).Transforms);
        else if (Options.Augment)
        {
            if (Options.Crop is { } c) list.AddRange(Compose.TrainPreset(c.Height, c.Width, Options.ScaleMin,
                Options.ScaleMax, 0.75, Options.VerticalFlip).Transforms);
            else
            {
                list.Add(new HorizontalFlip());
                if (Options.VerticalFlip) list.Add(new VerticalFlip());
                list.Add(new ColorJitter(0.25, 0.25, 0.25, 0.02, probability: 0.5));
            }
        }
        else if (Options.Crop is { } c) list.Add(new RandomCrop(c.Height, c.Width));
        return list.Count == 0 ? null : new Compose(list.ToArray());
    }

    private Checkpoint MakeCheckpoint(TrainingState state, DatasetDescription d, Normalization normalization,
        SegmentationMetrics? metrics, string trainOrigin, string? valOrigin)
    {
        var opt = new MemoryStream();
        fused?.SyncSteps();
        using (var w = new BinaryWriter(opt, System.Text.Encoding.UTF8, leaveOpen: true)) optimizer.save_state_dict(w);
        using var rng = random.get_rng_state();
        return new Checkpoint
        {
            Model = model.Description, Dataset = d, Preprocessing = new Preprocessing(normalization, Options.Size),
                TrainerSettings = Options.ToJson(), State = state,
            TrainOrigin = trainOrigin, ValOrigin = valOrigin, Metrics = metrics,
            // with an average, the checkpoint predicts with it and resumes from the weights as trained
            Weights = average?.With(() => Checkpoint.SerializeWeights(model)) ?? Checkpoint.SerializeWeights(model),
            TrainingWeights = average is null ? Array.Empty<byte>() : Checkpoint.SerializeWeights(model),
            OptimizerState = opt.ToArray(), RngState = rng.data<byte>().ToArray(),
        };
    }

    /// <summary>
    /// A checkpoint leaves model- and optimiser-sized managed buffers behind (hundreds of MB for a full-size U-Net),
    /// and the tuned allocator keeps every freed native block for reuse. Collecting the one and handing the other back
    /// at the end of each epoch keeps resident memory flat across epochs; it costs milliseconds and one slower step.
    /// </summary>
    private void ReleaseMemory()
    {
        if (!Options.ManageProcessMemory) return;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        AllocatorTuning.ReleaseFreeMemory();
    }

    private static double ResidentMemoryMB()
    {
        using var self = Process.GetCurrentProcess();
        return Math.Round(self.WorkingSet64 / 1048576.0, 1);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        reducer?.Dispose();
        fused?.Dispose();
        deviceScaler?.Dispose();
        average?.Dispose();
        optimizer.Dispose();
        if (ownsLoss) (loss as IDisposable)?.Dispose();
    }
}
