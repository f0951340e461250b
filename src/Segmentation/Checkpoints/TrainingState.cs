using System.Text.Json.Nodes;
using Segmentation.Evaluation;

namespace Segmentation.Checkpoints;

/// <summary>Where a training run stands: enough to resume exactly.</summary>
public sealed record TrainingState
{
    /// <summary>Epochs completed.</summary>
    public int Epoch { get; init; }
    /// <summary>Optimiser steps taken (the schedule's position).</summary>
    public long OptimizerStep { get; init; }
    /// <summary>Best validation mean IoU so far (NaN: none yet).</summary>
    public double BestMeanIoU { get; init; } = double.NaN;
    /// <summary>Epoch of the best mean IoU (0: none).</summary>
    public int BestEpoch { get; init; }
    /// <summary>Evaluations since the best one (for early stopping).</summary>
    public int EvaluationsWithoutImprovement { get; init; }
    /// <summary>Wall-clock seconds of training so far.</summary>
    public double Seconds { get; init; }
    /// <summary>One record per epoch.</summary>
    public IReadOnlyList<EpochRecord> History { get; init; } = Array.Empty<EpochRecord>();
    /// <summary>float16 training: the loss scale after the epoch (null: no loss scaling).</summary>
    public double? LossScale { get; init; }
    /// <summary>float16 training: good steps since the loss scale last changed.</summary>
    public int LossScaleGoodSteps { get; init; }
    /// <summary>The inputs the model's layers were checked for, in order (<see
    /// cref="Models.SegmentationModel.CheckedInputs"/>): a resumed run checks them again first, so that its layers take
    /// the routes the interrupted run's had.</summary>
    public IReadOnlyList<Models.CheckedInput> CheckedInputs { get; init; } = Array.Empty<Models.CheckedInput>();
    /// <summary>The epochs the learning-rate schedule was laid over when the trainer fitted it to the time limit
    /// (<c>TrainerOptions.Schedule.FitToTimeLimit</c>); null when it was not shortened.</summary>
    public int? ScheduleEpochs { get; init; }
}

/// <summary>One epoch of training: the line written to <c>metrics.jsonl</c>.</summary>
public sealed record EpochRecord
{
    /// <summary>1-based epoch.</summary>
    public int Epoch { get; init; }
    /// <summary>Mean training loss.</summary>
    public double TrainLoss { get; init; }
    /// <summary>Mean validation loss (NaN when not evaluated).</summary>
    public double ValLoss { get; init; } = double.NaN;
    /// <summary>Validation mean IoU (NaN when not evaluated).</summary>
    public double MeanIoU { get; init; } = double.NaN;
    /// <summary>Validation pixel accuracy (NaN when not evaluated).</summary>
    public double PixelAccuracy { get; init; } = double.NaN;
    /// <summary>Learning rate at the end of the epoch.</summary>
    public double LearningRate { get; init; }
    /// <summary>Wall-clock seconds of the epoch (training and evaluation).</summary>
    public double Seconds { get; init; }
    /// <summary>Training images per second.</summary>
    public double ImagesPerSecond { get; init; }
    /// <summary>Resident memory of the process at the end of the epoch, in MiB (how flat native memory
    /// stays).</summary>
    public double ResidentMemoryMB { get; init; } = double.NaN;
    /// <summary>Full validation metrics (null when not evaluated).</summary>
    public SegmentationMetrics? Metrics { get; init; }
    /// <summary>Objects: validation AP over IoU 0.50..0.95 (NaN when not evaluated or not instance data).</summary>
    public double Ap { get; init; } = double.NaN;
    /// <summary>Objects: validation AP at IoU 0.5.</summary>
    public double Ap50 { get; init; } = double.NaN;
    /// <summary>Objects: validation panoptic quality.</summary>
    public double Pq { get; init; } = double.NaN;

    /// <summary>As a JSON object (<c>epoch, trainLoss, valLoss, meanIoU, pixelAccuracy, lr, seconds, imagesPerSecond,
    /// rssMB</c>, and <c>perClassIoU</c> when evaluated; <c>ap, ap50, pq</c> too for objects).</summary>
    public JsonObject ToJson()
    {
        static JsonNode? N(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;
        var o = new JsonObject
        {
            ["epoch"] = Epoch, ["trainLoss"] = N(TrainLoss), ["valLoss"] = N(ValLoss), ["meanIoU"] = N(MeanIoU),
            ["pixelAccuracy"] = N(PixelAccuracy), ["lr"] = LearningRate, ["seconds"] = Seconds,
                ["imagesPerSecond"] = N(ImagesPerSecond),
            ["rssMB"] = N(ResidentMemoryMB),
        };
        if (Metrics is not null) o["perClassIoU"] = Metrics.ToJsonObject()["perClassIoU"]!.DeepClone();
        if (!double.IsNaN(Ap) || !double.IsNaN(Pq)) // instance and panoptic data
        {
            o["ap"] = N(Ap); o["ap50"] = N(Ap50); o["pq"] = N(Pq);
        }
        return o;
    }

    /// <summary>From <see cref="ToJson"/>.</summary>
    public static EpochRecord FromJson(JsonObject o)
    {
        static double D(JsonNode? n) => n is null ? double.NaN : n.GetValue<double>();
        return new EpochRecord
        {
            Epoch = o["epoch"]!.GetValue<int>(), TrainLoss = D(o["trainLoss"]), ValLoss = D(o["valLoss"]),
                MeanIoU = D(o["meanIoU"]),
            PixelAccuracy = D(o["pixelAccuracy"]), LearningRate = D(o["lr"]), Seconds = D(o["seconds"]),
                ImagesPerSecond = D(o["imagesPerSecond"]),
            ResidentMemoryMB = D(o["rssMB"]), Ap = D(o["ap"]), Ap50 = D(o["ap50"]), Pq = D(o["pq"]),
        };
    }
}
