using Segmentation.Data;
using static TorchSharp.torch;

namespace Segmentation.Evaluation;

/// <summary>What one pass over a data set gave: the metrics, and the mean loss when a loss was given (else
/// NaN).</summary>
/// <param name="Metrics">Everything derived from the one confusion matrix.</param>
/// <param name="MeanLoss">Loss averaged over images.</param>
internal sealed record EvaluationResult(SegmentationMetrics Metrics, double MeanLoss);

/// <summary>
/// The one evaluation loop (as torchvision's <c>evaluate</c>): batches to the device, normalised, through the model,
/// into one <see cref="ConfusionMatrix"/> on the device, one scope per batch, no gradients. The trainer's validation
/// and the predictor's <c>Evaluate</c> both run it; they differ only in how logits are made.
/// </summary>
internal static class Evaluator
{
    /// <summary>Runs <paramref name="logits"/> over <paramref name="loader"/>'s batches (one epoch, in
    /// order).</summary>
    /// <param name="loader">The data, unshuffled.</param>
    /// <param name="device">Where the model is.</param>
    /// <param name="description">Classes, names and the ignore label.</param>
    /// <param name="normalization">Applied to each image batch before <paramref name="logits"/>.</param>
    /// <param name="logits">Normalised images N x C x H x W to logits N x classes x H x W.</param>
    /// <param name="loss">Optional loss of (logits, masks), averaged over images into <see
    /// cref="EvaluationResult.MeanLoss"/>.</param>
    /// <param name="perImage">Also keep each image's IoU (for the worst-images list).</param>
    /// <param name="onBatch">Called after each batch with the number of batches done.</param>
    /// <param name="cancellation">Stops between batches.</param>
    /// <param name="toDevice">How a batch becomes images and class masks on the device (default: as it is; the
    /// instance task writes its boundary class in).</param>
    /// <param name="onLogits">Called with each batch and its logits (the instance task decodes and scores its
    /// objects there).</param>
    /// <param name="group">The processes of a distributed run, each with its shard of the data: the counts and
    /// losses are summed over them.</param>
    public static EvaluationResult Run(DataLoader loader, Device device, DatasetDescription description,
        Normalization normalization,
        Func<Tensor, Tensor> logits, Func<Tensor, Tensor, Tensor>? loss = null, bool perImage = false,
            Action<int>? onBatch = null,
        CancellationToken cancellation = default, Func<HostBatch, (Tensor Images, Tensor Masks)>? toDevice = null,
        Action<HostBatch, Tensor>? onLogits = null, Distributed.ProcessGroup? group = null)
    {
        using var cm = new ConfusionMatrix(description.Classes, Labels.Ignore, description.ClassNames,
            trackPerImage: perImage);
        double lossSum = 0;
        int images = 0, batches = 0;
        using (no_grad())
        {
            foreach (var batch in loader.Epoch(0, cancellation))
            {
                using var scope = NewDisposeScope();
                var (x, masks) = toDevice?.Invoke(batch) ?? batch.ToDevice(device);
                var y = logits(normalization.Apply(x, batch));
                if (loss is not null) lossSum += loss(y, masks).item<float>() * batch.Count;
                images += batch.Count;
                cm.Update(y, masks);
                onLogits?.Invoke(batch, y);
                onBatch?.Invoke(++batches);
            }
        }
        if (group is { WorldSize: > 1 })
        {
            cm.AllReduce(group, device); // each process evaluated its shard
            var sums = new double[] { lossSum, images };
            group.AllReduce(sums, "the validation losses");
            (lossSum, images) = (sums[0], (int)sums[1]);
        }
        return new EvaluationResult(cm.Compute(), loss is null ? double.NaN : lossSum / Math.Max(1, images));
    }
}
