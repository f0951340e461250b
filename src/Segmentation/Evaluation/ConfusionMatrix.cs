using TorchSharp;
using static TorchSharp.torch;
using Segmentation.Data;

namespace Segmentation.Evaluation;

/// <summary>
/// Accumulates a classes x classes confusion matrix (rows: ground truth, columns: prediction) on the tensors' device
/// and derives every metric from it.
/// </summary>
/// <remarks>
/// <para><b>The Mean IoU rule</b> (mmsegmentation's and Hugging Face evaluate's <c>mean_iou</c>, the one papers
/// report):</para>
/// <list type="number">
/// <item>Counts are summed over the whole data set first; metrics are derived once from the totals.</item>
/// <item>Pixels whose ground truth is the ignore index are dropped, whatever was predicted there.</item>
/// <item>IoU(c) = I / (P + G - I), with I the pixels of class c predicted as c, P the pixels predicted as c and G the
/// ground-truth pixels of c.</item>
/// <item>A class whose union is empty (absent from both prediction and ground truth) is NaN and left out of every
/// mean.</item>
/// <item>A class predicted but never in the ground truth has IoU 0 and accuracy NaN.</item>
/// </list>
/// <para>The other common rule, the mean over images of each image's mean IoU, is available as
/// <see cref="SegmentationMetrics.PerImageMeanIoU"/> when <c>trackPerImage</c> is on.</para>
/// <para>Each update is one <c>bincount</c> over <c>classes * target + prediction</c>; nothing is copied to the host
/// until <see cref="Compute"/>.</para>
/// </remarks>
public sealed class ConfusionMatrix : IDisposable
{
    private readonly int classes;
    private readonly bool trackPerImage;
    private Tensor? matrix;          // classes*classes, int64
    private Tensor? badPredictions;  // count of valid pixels predicted outside [0, classes)
    private Tensor? badValue;        // one such value
    private Tensor? perImageSum;     // [sum over images of each image's mean IoU, images with a defined mean]

    /// <summary>Number of classes.</summary>
    public int Classes => classes;

    /// <summary>Ground-truth label whose pixels are not counted.</summary>
    public int IgnoreIndex { get; }

    /// <summary>Names of the classes, when known.</summary>
    public IReadOnlyList<string>? ClassNames { get; }

    /// <summary>Creates an empty matrix.</summary>
    public ConfusionMatrix(int classes, int ignoreIndex = Labels.Ignore, IReadOnlyList<string>? classNames = null,
        bool trackPerImage = false)
    {
        if (classes < 1) throw new OptionsException($"ConfusionMatrix needs at least 1 class; got {classes}.");
        if (classNames is not null && classNames.Count != classes)
            throw new OptionsException($"ConfusionMatrix has {classes} classes but {classNames.Count} class names "
                + $"were given.");
        this.classes = classes;
        IgnoreIndex = ignoreIndex;
        ClassNames = classNames;
        this.trackPerImage = trackPerImage;
    }

    /// <summary>Adds a batch: logits N x C x H x W (argmax over C) or class indices N x H x W; target N x H x
    /// W.</summary>
    public void Update(Tensor predictionOrLogits, Tensor target)
    {
        using var scope = NewDisposeScope();
        var prediction = predictionOrLogits.dim() == target.dim() + 1 ? predictionOrLogits.argmax(1)
            : predictionOrLogits;
        if (!prediction.shape.SequenceEqual(target.shape))
            throw new ArgumentException($"Prediction of shape [{string.Join(", ", prediction.shape)}] does not match "
                + $"target of shape [{string.Join(", ", target.shape)}].");
        if (prediction.dim() == 2) { prediction = prediction.unsqueeze(0); target = target.unsqueeze(0); }

        var p = prediction.to(target.device).to_type(ScalarType.Int64);
        var t = target.to_type(ScalarType.Int64);
        long n = classes, cells = n * n;
        var valid = t.ne(IgnoreIndex).logical_and(t.ge(0)).logical_and(t.lt(n));
        var outOfRange = valid.logical_and(p.lt(0).logical_or(p.ge(n)));
        var counted = valid.logical_and(outOfRange.logical_not());
        // Uncounted pixels go to an extra bin that is dropped.
        var index = where(counted, t * n + p, full_like(t, cells));

        EnsureState(t.device);
        matrix!.add_(index.flatten().bincount(null, cells + 1).narrow(0, 0, cells));
        badPredictions!.add_(outOfRange.sum());
        badValue!.copy_(maximum(badValue, where(outOfRange, p, full_like(p, long.MinValue)).max()));

        if (trackPerImage)
        {
            long batch = t.shape[0];
            var offsets = arange(batch, device: t.device).mul(cells + 1).view(batch, 1);
            var perImage = (index.view(batch, -1) + offsets).flatten().bincount(null, batch * (cells + 1))
                .view(batch, cells + 1).narrow(1, 0, cells).view(batch, n, n).to_type(ScalarType.Float64);
            var inter = perImage.diagonal(0, 1, 2);
            var union = perImage.sum(2) + perImage.sum(1) - inter;
            var iou = inter / union; // NaN where the union is empty
            var defined = iou.isnan().logical_not();
            // NaN when no class is defined
            var imageMean = where(defined, iou, zeros_like(iou)).sum(1) / defined.sum(1);
            var seen = imageMean.isnan().logical_not();
            perImageSum!.add_(stack(new[] { where(seen, imageMean, zeros_like(imageMean)).sum(),
                seen.sum().to_type(ScalarType.Float64) }));
        }
    }

    /// <summary>Clears the counts.</summary>
    public void Reset()
    {
        DisposeState();
    }

    /// <summary>The raw matrix as a host array [truth, prediction].</summary>
    public long[,] ToArray()
    {
        var result = new long[classes, classes];
        if (matrix is null) return result;
        using var host = matrix.cpu();
        var flat = host.data<long>().ToArray();
        for (int i = 0; i < classes; i++)
            for (int j = 0; j < classes; j++)
                result[i, j] = flat[i * classes + j];
        return result;
    }

    /// <summary>Derives the metrics from the counts so far. Throws when a prediction was outside [0,
    /// classes).</summary>
    public SegmentationMetrics Compute()
    {
        if (badPredictions is not null)
        {
            long bad = badPredictions.item<long>();
            if (bad > 0)
                throw new SegmentationException($"Prediction value {badValue!.item<long>()} (at {bad} valid pixel(s) "
                    + $"in all) is outside the classes 0-{classes - 1}.");
        }
        double? perImage = null;
        if (trackPerImage && perImageSum is not null)
        {
            using var host = perImageSum.cpu();
            var sums = host.data<double>().ToArray();
            perImage = sums[1] > 0 ? sums[0] / sums[1] : double.NaN;
        }
        return SegmentationMetrics.FromConfusion(ToArray(), ClassNames, perImage);
    }

    /// <summary>
    /// Sums the counts of every process of a distributed run into this matrix (each process evaluated its shard);
    /// every rank calls it, also one that saw no image.
    /// </summary>
    internal void AllReduce(Distributed.ProcessGroup group, Device device)
    {
        if (group.WorldSize == 1) return;
        EnsureState(matrix?.device ?? device);
        group.AllReduce(matrix!, "the validation confusion matrices");
        group.AllReduce(badPredictions!.view(1), "the validation confusion matrices");
    }

    private void EnsureState(Device device)
    {
        if (matrix is not null && matrix.device == device) return;
        if (matrix is not null)
        {
            Replace(ref matrix, matrix.to(device));
            Replace(ref badPredictions, badPredictions!.to(device));
            Replace(ref badValue, badValue!.to(device));
            Replace(ref perImageSum, perImageSum!.to(device));
            return;
        }
        matrix = zeros(new long[] { (long)classes * classes }, ScalarType.Int64, device).DetachFromDisposeScope();
        badPredictions = zeros(new long[0], ScalarType.Int64, device).DetachFromDisposeScope();
        badValue = full(new long[0], long.MinValue, ScalarType.Int64, device).DetachFromDisposeScope();
        perImageSum = zeros(new long[] { 2 }, ScalarType.Float64, device).DetachFromDisposeScope();
    }

    private static void Replace(ref Tensor? field, Tensor value)
    {
        var old = field;
        field = value.DetachFromDisposeScope();
        old?.Dispose();
    }

    private void DisposeState()
    {
        matrix?.Dispose(); badPredictions?.Dispose(); badValue?.Dispose(); perImageSum?.Dispose();
        matrix = badPredictions = badValue = perImageSum = null;
    }

    /// <inheritdoc />
    public void Dispose() => DisposeState();
}
