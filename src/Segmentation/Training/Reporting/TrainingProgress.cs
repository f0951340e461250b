using System.Text.Json.Nodes;
using Segmentation.Evaluation;
using Segmentation.Checkpoints;
using Segmentation.Models;
using Segmentation.Models.Layers;

namespace Segmentation.Training;

/// <summary>What a progress report is about.</summary>
public enum ProgressKind
{
    /// <summary>Training is about to start (totals are set).</summary>
    Started,
    /// <summary>A training step finished.</summary>
    Step,
    /// <summary>A validation batch finished (<see cref="TrainingProgress.Step"/> of <see
    /// cref="TrainingProgress.StepsPerEpoch"/> batches).</summary>
    ValidationStep,
    /// <summary>Validation finished.</summary>
    Evaluated,
    /// <summary>An epoch finished (its record is set).</summary>
    Epoch,
    /// <summary>A checkpoint was written (<see cref="TrainingProgress.Message"/> says which).</summary>
    Checkpoint,
    /// <summary>The data is being checked before training (<see cref="TrainingProgress.Step"/> of <see
    /// cref="TrainingProgress.StepsPerEpoch"/> samples; <see cref="TrainingProgress.Message"/> says which
    /// set).</summary>
    DataCheck,
    /// <summary>The convolution check ran for a new input shape and routed the layers (<see
    /// cref="TrainingProgress.Convolutions"/>).</summary>
    Convolutions,
    /// <summary>Something worth telling: early stop, time limit, allocator tuning, data warnings.</summary>
    Message,
}

/// <summary>A progress report from the trainer (delivered through <see cref="IProgress{T}"/>, on the training
/// thread).</summary>
public sealed record TrainingProgress
{
    /// <summary>What this report is about.</summary>
    public ProgressKind Kind { get; init; }
    /// <summary>1-based epoch.</summary>
    public int Epoch { get; init; }
    /// <summary>Epochs planned.</summary>
    public int Epochs { get; init; }
    /// <summary>1-based step within the epoch.</summary>
    public int Step { get; init; }
    /// <summary>Steps per epoch.</summary>
    public int StepsPerEpoch { get; init; }
    /// <summary>Loss of the step.</summary>
    public double Loss { get; init; }
    /// <summary>Learning rate.</summary>
    public double LearningRate { get; init; }
    /// <summary>Training images per second over the epoch so far.</summary>
    public double ImagesPerSecond { get; init; }
    /// <summary>Estimated time to the end of training.</summary>
    public TimeSpan? Eta { get; init; }
    /// <summary>For <see cref="ProgressKind.Epoch"/>: the record.</summary>
    public EpochRecord? Record { get; init; }
    /// <summary>For <see cref="ProgressKind.Evaluated"/>: the metrics.</summary>
    public SegmentationMetrics? Metrics { get; init; }
    /// <summary>For messages and checkpoints.</summary>
    public string? Message { get; init; }
    /// <summary>For <see cref="ProgressKind.Evaluated"/>: pictures of the first validation predictions (<see
    /// cref="CheckpointOptions.PreviewImages"/>; null when none were asked for).</summary>
    public IReadOnlyList<Preview>? Previews { get; init; }
    /// <summary>For <see cref="ProgressKind.Convolutions"/>: what the check found and chose.</summary>
    public ConvolutionReport? Convolutions { get; init; }
}

/// <summary>The outcome of <see cref="Trainer.Fit"/>.</summary>
public sealed record TrainingResult
{
    /// <summary>Epochs completed in all (including before a resume).</summary>
    public int Epochs { get; init; }
    /// <summary>Best validation epoch (0 when never evaluated).</summary>
    public int BestEpoch { get; init; }
    /// <summary>Validation metrics of the best epoch (null when never evaluated).</summary>
    public SegmentationMetrics? Metrics { get; init; }
    /// <summary>One record per epoch.</summary>
    public IReadOnlyList<EpochRecord> History { get; init; } = Array.Empty<EpochRecord>();
    /// <summary>Why training ended: "completed", "early stopping", "time limit", "interrupted" (cancelled through the
    /// token).</summary>
    public string StopReason { get; init; } = "completed";
    /// <summary>Wall-clock seconds of training (all sessions).</summary>
    public double Seconds { get; init; }
    /// <summary>Path of the best checkpoint, when checkpoints were written.</summary>
    public string? BestCheckpoint { get; init; }
    /// <summary>Path of the last checkpoint, when checkpoints were written.</summary>
    public string? LastCheckpoint { get; init; }

    /// <summary>
    /// <see cref="BestCheckpoint"/> where there is one, for <c>Predictor.FromFile(result.RequireBestCheckpoint())</c>;
    /// otherwise an error that says why (no <see cref="CheckpointOptions.Directory"/>, or no evaluation yet).
    /// </summary>
    public string RequireBestCheckpoint() => BestCheckpoint ?? throw new OptionsException(
        "This training wrote no best checkpoint: give TrainerOptions.Checkpoints.Directory (and validation data) to "
            + "have one.");
}

/// <summary>Training stopped because the loss became NaN or infinite.</summary>
public sealed class TrainingDivergedException : SegmentationException
{
    /// <summary>Creates the exception.</summary>
    public TrainingDivergedException(string message) : base(message) { }
}

/// <summary>
/// An <see cref="IProgress{T}"/> that runs its handler on the reporting thread, at once and in order. Use it for
/// console output: <see cref="Progress{T}"/> posts each report to the thread pool when there is no synchronisation
/// context (a console application), so reports can arrive out of order, and after <see cref="Trainer.Fit"/> returned.
/// </summary>
public sealed class SynchronousProgress<T> : IProgress<T>
{
    private readonly Action<T> handler;

    /// <summary>Creates the reporter.</summary>
    public SynchronousProgress(Action<T> handler) => this.handler = handler
        ?? throw new ArgumentNullException(nameof(handler));

    /// <inheritdoc />
    public void Report(T value) => handler(value);
}
