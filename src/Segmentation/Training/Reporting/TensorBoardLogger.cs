using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>
/// A progress consumer that writes TensorBoard event files through TorchSharp's own <c>SummaryWriter</c>: per step
/// <c>train/loss</c> and <c>train/lr</c> (at the global step); per epoch <c>epoch/train_loss</c>,
/// <c>epoch/val_loss</c>,
/// <c>epoch/mean_iou</c>, <c>epoch/pixel_accuracy</c>, <c>iou/&lt;class&gt;</c> and, for objects, <c>epoch/ap</c>,
/// <c>epoch/ap50</c>, <c>epoch/pq</c> (at the epoch); and the trainer's
/// validation previews (<see cref="CheckpointOptions.PreviewImages"/>) as images <c>val/&lt;name&gt;</c>. Pass it to
/// <see cref="Trainer.Fit"/>, alone or beside another consumer (<see cref="ProgressFanOut{T}"/>).
/// </summary>
public sealed class TensorBoardLogger : IProgress<TrainingProgress>
{
    private readonly TorchSharp.Modules.SummaryWriter writer;

    /// <summary>The folder the event files go to.</summary>
    public string Directory => writer.LogDir;

    /// <summary>Writes into <paramref name="directory"/> (created if needed).</summary>
    public TensorBoardLogger(string directory) => writer = utils.tensorboard.SummaryWriter(directory);

    /// <inheritdoc />
    public void Report(TrainingProgress p)
    {
        switch (p.Kind)
        {
            case ProgressKind.Step:
                int step = (p.Epoch - 1) * p.StepsPerEpoch + p.Step;
                writer.add_scalar("train/loss", (float)p.Loss, step);
                writer.add_scalar("train/lr", (float)p.LearningRate, step);
                break;
            case ProgressKind.Epoch when p.Record is { } r:
                Scalar("epoch/train_loss", r.TrainLoss, r.Epoch);
                Scalar("epoch/val_loss", r.ValLoss, r.Epoch);
                Scalar("epoch/mean_iou", r.MeanIoU, r.Epoch);
                Scalar("epoch/pixel_accuracy", r.PixelAccuracy, r.Epoch);
                if (r.Metrics is { } m)
                    for (int c = 0; c < m.ClassNames.Length; c++) Scalar($"iou/{m.ClassNames[c]}", m.PerClassIoU[c],
                        r.Epoch);
                if (r.Metrics?.Instances is not null) // instance and panoptic data
                {
                    Scalar("epoch/ap", r.Ap, r.Epoch);
                    Scalar("epoch/ap50", r.Ap50, r.Epoch);
                    Scalar("epoch/pq", r.Pq, r.Epoch);
                }
                break;
            case ProgressKind.Evaluated when p.Previews is { } previews:
                foreach (var preview in previews) Image($"val/{preview.Name}", preview, p.Epoch);
                break;
        }
    }

    /// <summary>
    /// Adds a preview as an image summary, from a PNG file that ImageSharp writes. Not from a tensor: TorchSharp's
    /// tensor route copies the pixels out of a temporary uint8 tensor that nothing references during the copy, so a
    /// garbage collection can free its memory mid-copy (a preview of a few megabytes is its own memory mapping, and the
    /// read then faults: the SIGSEGV of docs/reliability.md). The file route hands TorchSharp encoded bytes only.
    /// </summary>
    private void Image(string tag, Preview preview, int step)
    {
        var file = Path.Combine(Path.GetTempPath(), $"segmentation-preview-{Guid.NewGuid():N}.png");
        try
        {
            using (var png = SixLabors.ImageSharp.Image.LoadPixelData<SixLabors.ImageSharp.PixelFormats.Rgb24>(
                preview.Rgb, preview.Width, preview.Height))
                SixLabors.ImageSharp.ImageExtensions.SaveAsPng(png, file);
            writer.add_img(tag, file, step);
        }
        finally { File.Delete(file); }
    }

    private void Scalar(string tag, double value, int step)
    {
        if (double.IsFinite(value)) writer.add_scalar(tag, (float)value, step);
    }
}

/// <summary>Hands every report to each of several consumers, in order.</summary>
public sealed class ProgressFanOut<T>(params IProgress<T>?[] consumers) : IProgress<T>
{
    /// <inheritdoc />
    public void Report(T value)
    {
        foreach (var c in consumers) c?.Report(value);
    }
}
