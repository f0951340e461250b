using System.Diagnostics;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Models;
using Segmentation.Models.Layers;

namespace Segmentation.Training;

/// <summary>The data one <see cref="Trainer.Fit"/> trains and validates on, normalised as the model will see
/// it.</summary>
internal sealed record FitData(SegmentationDataset Train, SegmentationDataset? Val, Normalization Normalization);

/// <summary>
/// The loop of one <see cref="Trainer.Fit"/>: epoch by epoch, the steps under the learning-rate schedule, the
/// evaluations, the record of each epoch, the best epoch, early stopping and the time limit (the schedule laid over
/// what fits). It works through its parts: the <see cref="TrainingStep"/>, the <see cref="DataParallel"/> strategy and
/// the <see cref="RunRecorder"/>, the only writer of the run folder.
/// </summary>
internal sealed class TrainingLoop
{
    private readonly TrainingStep step;
    private readonly DataParallel parallel;
    private readonly SegmentationModel model;
    private readonly FitData data;
    private readonly RunRecorder? run;
    private readonly IProgress<TrainingProgress>? progress;
    private readonly CancellationToken cancellation;
    private readonly DataLoader trainLoader;
    private readonly DataLoader? valLoader;
    private readonly List<EpochRecord> history = new();
    private readonly int plannedEpochs;
    private LearningRateSchedule schedule;
    private RunClock clock = new(0);
    private SegmentationMetrics? bestMetrics;
    private ConvolutionReport? reported;

    /// <summary>Fitting to the time limit lengthens a schedule to at most this many times the epochs
    /// planned.</summary>
    internal const int GrowthCap = 3;

    /// <summary>The options, with the epochs as fitted to the time limit.</summary>
    public TrainerOptions Options { get; private set; }
    /// <summary>Where the run stands (what the checkpoints record).</summary>
    public TrainingState State { get; private set; } = new();
    /// <summary>Why the run stopped.</summary>
    public string StopReason { get; set; } = "completed";
    /// <summary>Called between the checkpoint writes of an epoch (tests interrupt there to simulate a kill).</summary>
    public Action<string>? CheckpointBoundary { get; init; }

    public TrainingLoop(TrainingStep step, DataParallel parallel, SegmentationModel model, TrainerOptions options,
        FitData data, RunRecorder? run, IProgress<TrainingProgress>? progress, CancellationToken cancellation)
    {
        this.step = step; this.parallel = parallel; this.model = model; Options = options; this.data = data;
        this.run = run; this.progress = progress; this.cancellation = cancellation;
        (trainLoader, valLoader) = TrainingData.Loaders(data.Train, data.Val, data.Normalization, options, parallel,
            progress);
        reported = model.Convolutions; // only checks made during this call are news
        schedule = ScheduleOver(options.Epochs);
        plannedEpochs = options.Epochs;
    }

    private TrainerOptions O => Options;

    /// <summary>The learning-rate schedule laid over <paramref name="epochs"/> epochs of optimiser steps.</summary>
    private LearningRateSchedule ScheduleOver(int epochs)
    {
        long optimizerStepsPerEpoch = (trainLoader.BatchesPerEpoch + O.Optimizer.AccumulationSteps
            - 1) / O.Optimizer.AccumulationSteps;
        long totalSteps = optimizerStepsPerEpoch * epochs;
        return new LearningRateSchedule(O.Schedule.Kind, O.Optimizer.LearningRate, totalSteps,
            (long)(O.Schedule.WarmupFraction * totalSteps), O.Schedule.PolyPower);
    }

    /// <summary>Whether epoch <paramref name="k"/> of a run of <paramref name="epochs"/> is evaluated.</summary>
    private bool Evaluates(int k, int epochs) => valLoader is not null
        && (k % O.Checkpoints.EvalEvery == 0 || k == epochs);

    /// <summary>
    /// <see cref="ScheduleOptions.FitToTimeLimit"/>: after each epoch, the most epochs (up to <see
    /// cref="GrowthCap"/> times those planned) whose training and evaluations at their median times still end
    /// within the limit; the schedule is laid over them when that differs from its current length. A plan's epoch
    /// time comes from a short step benchmark; where real epochs are faster, the run takes the epochs that fit
    /// rather than leave the budget unused.
    /// </summary>
    private void FitToTimeLimit(int epoch)
    {
        if (!O.Schedule.FitToTimeLimit || O.Schedule.TimeLimit is not { } limit || valLoader is not null
            && !clock.HasEvaluation) return;
        int cap = plannedEpochs * GrowthCap;
        var (fitted, train, eval, left) = clock.EpochsWithin(limit, epoch, cap,
            e => Enumerable.Range(epoch + 1, e - epoch).Count(k => Evaluates(k, e)));
        var decided = new[] { (double)fitted };
        parallel.FromMain(decided, "the epochs rank 0 fitted to the time limit"); // every process stops together
        fitted = Math.Max((int)decided[0], epoch);
        // shortened whenever the rest would not fit; lengthened only by two or more (or to the cap)
        if (fitted == O.Epochs || fitted > O.Epochs && fitted < Math.Min(O.Epochs + 2, cap)) return;
        Options = O with { Epochs = fitted };
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
            step.Resume(resumeFrom);
        }
        else TorchSharp.torch.random.manual_seed(O.Seed);
        if (resumeFrom?.State.ScheduleEpochs is { } fitted && O.Schedule.FitToTimeLimit && fitted != O.Epochs)
        {
            Options = O with { Epochs = fitted }; // the schedule the run was fitted to, not the one planned
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
        clock = new RunClock(State.Seconds);
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
        bool evaluate = Evaluates(epoch, O.Epochs);
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
        TrainingData.ReleaseMemory(O);
        record = record with { ResidentMemoryMB = TrainingData.ResidentMemoryMB() }; // read at one point every epoch
        history.Add(record);
        bool improved = Record(epoch, optStep, metrics, evaluate);
        clock.Record(epoch, trainSeconds, evaluate ? epochClock.Elapsed.TotalSeconds - trainSeconds : 0);
        FitToTimeLimit(epoch);
        SaveCheckpoints(epoch, metrics, improved);
        progress?.Report(new TrainingProgress { Kind = ProgressKind.Epoch, Epoch = epoch, Epochs = O.Epochs,
            Record = record, LearningRate = lr });
    }

    /// <summary>The state after an epoch: its step, history and time, and the best epoch; returns whether this one is
    /// the best so far.</summary>
    private bool Record(int epoch, long optStep, SegmentationMetrics? metrics, bool evaluated)
    {
        double score = metrics is null ? double.NaN : step.Task.Score(metrics);
        bool improved = !double.IsNaN(score) && (double.IsNaN(State.BestMeanIoU) || score > State.BestMeanIoU);
        State = State with
        {
            Epoch = epoch, OptimizerStep = optStep, History = history.ToArray(), Seconds = clock.Elapsed.TotalSeconds,
            LossScale = step.Scaler?.Scale, LossScaleGoodSteps = step.Scaler?.GoodSteps ?? 0,
            CheckedInputs = model.CheckedInputs.ToArray(),
            BestMeanIoU = improved ? score : State.BestMeanIoU,
            BestEpoch = improved ? epoch : State.BestEpoch,
            EvaluationsWithoutImprovement = improved ? 0 : evaluated ? State.EvaluationsWithoutImprovement + 1
                : State.EvaluationsWithoutImprovement,
        };
        if (improved) bestMetrics = metrics;
        return improved;
    }

    private (double LossMean, int Images, double LearningRate, long OptimizerStep) TrainEpoch(int epoch,
        Stopwatch epochClock)
    {
        model.train();
        step.FreezeEncoderFor(epoch);
        double lossSum = 0, images = 0;
        int stepIndex = 0, steps = trainLoader.BatchesPerEpoch;
        step.SyncScaler();
        long optStep = State.OptimizerStep, skippedBefore = step.Scaler?.SkippedSteps ?? 0;
        double lr = schedule.RateAt(optStep);
        step.ZeroGradients();
        foreach (var batch in trainLoader.Epoch(epoch - 1, cancellation))
        {
            stepIndex++;
            bool apply = stepIndex % O.Optimizer.AccumulationSteps == 0 || stepIndex == steps;
            if (apply)
            {
                lr = schedule.RateAt(optStep);
                step.SetLearningRate(lr);
            }
            step.Name = $"step {stepIndex} of epoch {epoch}";
            O.BeforeStep?.Invoke(epoch, stepIndex);
            float value = step.Run(batch, data.Normalization, apply);
            ReportConvolutions();
            if (apply)
            {
                optStep++;
                step.Average?.Update(optStep);
            }
            images += batch.Count;
            if (float.IsFinite(value)) lossSum += value * batch.Count;
            else
            {
                step.SyncScaler(); // the skips in a row: read back only when a loss is not finite
                if (step.Scaler is null || step.Scaler.ConsecutiveSkips >= Trainer.MaxConsecutiveSkippedSteps)
                    throw Diverged(value, epoch, stepIndex, lr);
            }
            double ips = images / Math.Max(1e-9, epochClock.Elapsed.TotalSeconds);
            progress?.Report(new TrainingProgress
            {
                Kind = ProgressKind.Step, Epoch = epoch, Epochs = O.Epochs, Step = stepIndex, StepsPerEpoch = steps,
                Loss = value, LearningRate = lr, ImagesPerSecond = ips,
                    Eta = Eta(epoch, images / (double)trainLoader.SamplesPerEpoch, ips),
            });
        }
        var sums = new[] { lossSum, images }; // the global batch's mean loss, whatever the process count
        parallel.Sum(sums, $"the training losses of epoch {epoch}");
        (lossSum, images) = (sums[0], (int)sums[1]);
        step.SyncScaler();
        if (step.Scaler is { } sc && sc.SkippedSteps > skippedBefore)
            Report(ProgressKind.Message, epoch,
                $"fp16: {sc.SkippedSteps - skippedBefore} step(s) skipped for non-finite gradients this epoch; "
                    + $"loss scale now {sc.Scale:g4}");
        return (lossSum / Math.Max(1, images), (int)images, lr, optStep);
    }

    /// <summary>Time to the end of the run (<see cref="RunClock.Eta"/>), never past the time limit.</summary>
    private TimeSpan Eta(int epoch, double doneOfEpoch, double imagesPerSecond) => clock.Eta(epoch, O.Epochs,
        doneOfEpoch, trainLoader.SamplesPerEpoch / Math.Max(imagesPerSecond, 1e-9), k => Evaluates(k, O.Epochs),
        O.Schedule.TimeLimit);

    private TrainingDivergedException Diverged(float value, int epoch, int stepIndex, double lr)
    {
        var lastGood = run is not null && File.Exists(run.Last)
            ? $"the last good checkpoint is {run.Last} (epoch {State.Epoch})" : "no checkpoint was written yet";
        return new TrainingDivergedException($"The loss became {value} at epoch {epoch}, step {stepIndex} (learning "
            + $"rate {lr:g3}); training stopped and {lastGood}. "
            + (epoch == 1 && stepIndex <= 10
                ? "A NaN this early, whatever the learning rate, points at the machine's kernels: run 'segment "
                + "doctor' with the same model flags; otherwise lower the learning rate or enable gradient "
                + "clipping."
                : "Lower the learning rate or enable gradient clipping (and if that does not help, run 'segment "
                + "doctor' with the same model flags)."));
    }

    private (SegmentationMetrics? Metrics, double Loss) EvaluateEpoch(int epoch)
    {
        int valSteps = valLoader!.BatchesPerEpoch;
        parallel.BroadcastModel(model, $"the model's weights before evaluating epoch {epoch}");
        (SegmentationMetrics, double, IReadOnlyList<Preview>?) Validate()
        {
            var (m, l) = step.Evaluate(valLoader, data.Normalization, data.Train.Description, cancellation, i =>
            {
                ReportConvolutions();
                progress?.Report(new TrainingProgress { Kind = ProgressKind.ValidationStep, Epoch = epoch,
                    Epochs = O.Epochs, Step = i, StepsPerEpoch = valSteps });
            });
            return (m, l, O.Checkpoints.PreviewImages > 0 ? Previews.Render(model, valLoader, data.Normalization,
                step.Device,
                data.Train.Description, O.Checkpoints.PreviewImages) : null);
        }
        // with a weight average, the average is what is validated
        var (metrics, loss, previews) = step.Average?.With(Validate) ?? Validate();
        progress?.Report(new TrainingProgress { Kind = ProgressKind.Evaluated, Epoch = epoch, Epochs = O.Epochs,
            Metrics = metrics, Previews = previews });
        return (metrics, loss);
    }

    private void SaveCheckpoints(int epoch, SegmentationMetrics? metrics, bool improved)
    {
        if (run is null) return;
        var ckpt = step.ToCheckpoint(State, O, data.Train.Description, data.Normalization, metrics, data.Train.Origin,
            data.Val?.Origin);
        run.SaveEpoch(ckpt, improved, CheckpointBoundary);
        run.WriteMetrics(history);
        if (improved) Report(ProgressKind.Checkpoint, epoch, message: run.Best);
        Report(ProgressKind.Checkpoint, epoch, message: run.Last);
        TrainingData.ReleaseMemory(O); // the checkpoint's model- and optimiser-sized buffers
    }

    /// <summary>Early stopping and the time limit, checked after each epoch but the last.</summary>
    public bool ShouldStop(int epoch)
    {
        if (epoch >= O.Epochs) return false;
        if (O.Checkpoints.EarlyStoppingPatience is { } patience && State.EvaluationsWithoutImprovement >= patience)
        {
            StopReason = "early stopping";
            Report(ProgressKind.Message, epoch,
                $"early stopping: no better {step.Task.SelectionMetric} in {patience} evaluation(s) since epoch "
                    + $"{State.BestEpoch}");
            return true;
        }
        // in a distributed run, the limit has passed when it has on any process (all stop together)
        if (O.Schedule.TimeLimit is { } limit && parallel.Any(clock.Elapsed >= limit, "the time-limit check"))
        {
            StopReason = "time limit";
            Report(ProgressKind.Message, epoch, $"time limit of {limit} reached after epoch {epoch}");
            return true;
        }
        return false;
    }

    /// <summary>The outcome; summary.json records it.</summary>
    public TrainingResult Result()
    {
        var result = new TrainingResult
        {
            Epochs = State.Epoch, BestEpoch = State.BestEpoch, Metrics = bestMetrics, History = history,
                StopReason = StopReason,
            Seconds = clock.Elapsed.TotalSeconds,
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
        summary["params"] = model.ParameterCount();
        summary["device"] = step.Device.ToString();
        summary["precision"] = O.Precision.Kind.ShortName();
        summary["seconds"] = Math.Round(result.Seconds, 2);
        summary["stopReason"] = result.StopReason;
        var checkpoint = result.BestCheckpoint ?? (File.Exists(run!.Last) ? run.Last : null);
        summary["checkpoint"] = checkpoint is null ? null : Path.GetFullPath(checkpoint);
        return summary;
    }

    /// <summary>
    /// The model checks its layers before the first input of each shape (<see cref="SegmentationModel.CheckLayers"/>);
    /// a check that ran in the last forward pass is reported once, before that batch's own progress.
    /// </summary>
    private void ReportConvolutions()
    {
        if (model.Convolutions is not { } report || ReferenceEquals(report, reported)) return;
        reported = report;
        progress?.Report(new TrainingProgress { Kind = ProgressKind.Convolutions, Convolutions = report,
            Message = report.Summary() });
    }

    private void Report(ProgressKind kind, int epoch, string? message) =>
        progress?.Report(new TrainingProgress { Kind = kind, Epoch = epoch, Epochs = O.Epochs, Message = message });
}
