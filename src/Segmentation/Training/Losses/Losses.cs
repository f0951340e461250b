using TorchSharp;
using static TorchSharp.torch;
using Segmentation.Data;
using Segmentation.Models;

namespace Segmentation.Training;

/// <summary>
/// A training loss: the model's named outputs and the batch's named targets to a scalar in the graph. Give one to the
/// trainer as <see cref="TrainerOptions.Loss"/>. Losses of the class logits and mask derive from <see
/// cref="PixelLoss"/>.
/// </summary>
public interface ISegmentationLoss
{
    /// <summary>The loss for a batch (a scalar tensor in the graph).</summary>
    Tensor Compute(ModelOutputs outputs, Targets targets);
}

/// <summary>A loss of the class logits N x C x H x W against the class mask N x H x W (every semantic loss
/// here).</summary>
public abstract class PixelLoss : ISegmentationLoss
{
    /// <summary>The loss of <paramref name="logits"/> against integer targets <paramref name="target"/>.</summary>
    public abstract Tensor Compute(Tensor logits, Tensor target);

    /// <summary>Reads the logits and the mask by name.</summary>
    public virtual Tensor Compute(ModelOutputs outputs, Targets targets) => Compute(outputs.Logits, targets.Mask);
}

/// <summary>Cross-entropy with optional class weights, ignore index and label smoothing.</summary>
public sealed class CrossEntropyLoss : PixelLoss, IDisposable
{
    private readonly Tensor? weights;
    private readonly long ignoreIndex;
    private readonly double labelSmoothing;

    /// <summary>Creates the loss. <paramref name="classWeights"/> has one weight per class, or is null.</summary>
    public CrossEntropyLoss(float[]? classWeights = null, int ignoreIndex = Labels.Ignore, double labelSmoothing = 0)
    {
        if (labelSmoothing < 0 || labelSmoothing >= 1)
            throw new OptionsException($"Label smoothing is {labelSmoothing}; it must be in [0, 1).");
        if (classWeights is not null && classWeights.Any(w => !float.IsFinite(w) || w < 0))
            throw new OptionsException($"Class weights must be finite and non-negative; got "
                + $"[{string.Join(", ", classWeights)}].");
        weights = classWeights is null ? null : tensor(classWeights).DetachFromDisposeScope();
        this.ignoreIndex = ignoreIndex;
        this.labelSmoothing = labelSmoothing;
    }

    /// <inheritdoc />
    public override Tensor Compute(Tensor logits, Tensor target)
    {
        if (weights is not null && weights.shape[0] != logits.shape[1])
            throw new OptionsException($"{weights.shape[0]} class weights were given for a model with "
                + $"{logits.shape[1]} classes.");
        using var w = weights?.to(logits.dtype, logits.device);
        return nn.functional.cross_entropy(logits, target, w, ignoreIndex, label_smoothing: labelSmoothing);
    }

    /// <inheritdoc />
    public void Dispose() => weights?.Dispose();
}

/// <summary>
/// Soft Dice loss, 1 - mean over classes of (2 |P∩G| + s) / (|P| + |G| + s), on softmax probabilities (multiclass)
/// or, for a single-channel output, on sigmoid probabilities (binary: target 0/1).
/// </summary>
/// <remarks>
/// Pixels at the ignore index leave both numerator and denominator. Sums run over the whole batch. A class absent
/// from the batch's ground truth is left out of the mean (as segmentation_models.pytorch does): its false positives
/// still cost through the other classes' denominators and through cross-entropy when combined. A batch with no valid
/// pixel gives a loss of 0 that keeps the graph.
/// </remarks>
public sealed class DiceLoss : PixelLoss
{
    private readonly long ignoreIndex;
    private readonly double smooth;

    /// <summary>Creates the loss.</summary>
    public DiceLoss(int ignoreIndex = Labels.Ignore, double smooth = 1.0)
    {
        if (smooth < 0) throw new OptionsException($"Dice smoothing is {smooth}; it must be at least 0.");
        this.ignoreIndex = ignoreIndex;
        this.smooth = smooth;
    }

    /// <inheritdoc />
    public override Tensor Compute(Tensor logits, Tensor target)
    {
        using var scope = NewDisposeScope();
        long classes = logits.shape[1];
        var valid = target.ne(ignoreIndex).unsqueeze(1).to_type(logits.dtype);           // N x 1 x H x W
        var safeTarget = target.masked_fill(target.eq(ignoreIndex), 0);
        Tensor probs, truth;
        if (classes == 1)
        {
            probs = logits.sigmoid();
            truth = safeTarget.unsqueeze(1).to_type(logits.dtype);
        }
        else
        {
            probs = logits.softmax(1);
            truth = nn.functional.one_hot(safeTarget, classes).permute(0, 3, 1, 2).to_type(logits.dtype);
        }
        probs = probs * valid;
        truth = truth * valid;
        var dims = new long[] { 0, 2, 3 };
        var intersection = (probs * truth).sum(dims);
        var cardinality = probs.sum(dims) + truth.sum(dims);
        var dice = (2 * intersection + smooth) / (cardinality + smooth).clamp_min(1e-7);
        var present = truth.sum(dims).gt(0).to_type(logits.dtype);
        var count = present.sum();
        var loss = where(count.gt(0), ((1 - dice) * present).sum() / count.clamp_min(1), logits.sum() * 0);
        return loss.MoveToOuterDisposeScope();
    }
}

/// <summary>A weighted sum of losses, e.g. cross-entropy + Dice.</summary>
public sealed class CombinedLoss : PixelLoss, IDisposable
{
    private readonly (ISegmentationLoss Loss, double Weight)[] terms;

    /// <summary>Creates the sum.</summary>
    public CombinedLoss(params (ISegmentationLoss Loss, double Weight)[] terms)
    {
        if (terms.Length == 0) throw new OptionsException("A combined loss needs at least one term.");
        this.terms = terms;
    }

    /// <inheritdoc />
    public override Tensor Compute(Tensor logits, Tensor target) => Compute(new ModelOutputs(logits),
        new Targets(target));

    /// <summary>The weighted sum of the terms, each reading the outputs and targets it needs.</summary>
    public override Tensor Compute(ModelOutputs outputs, Targets targets)
    {
        Tensor? total = null;
        foreach (var (loss, weight) in terms)
        {
            var term = loss.Compute(outputs, targets) * weight;
            total = total is null ? term : total + term;
        }
        return total!;
    }

    /// <summary>Disposes the terms that own native memory.</summary>
    public void Dispose()
    {
        foreach (var (loss, _) in terms) (loss as IDisposable)?.Dispose();
    }
}

/// <summary>Class weights from per-class pixel statistics of the training masks (the ignore index is never
/// counted).</summary>
public static class ClassWeights
{
    /// <summary>
    /// Median-frequency balancing (Eigen and Fergus; SegNet's CamVid weights): freq(c) = pixels of c / pixels of the
    /// images in which c appears; weight(c) = median(freq) / freq(c). A class that never appears gets weight 0.
    /// </summary>
    public static float[] MedianFrequency(IReadOnlyList<long> classPixels, IReadOnlyList<long> pixelsOfImagesWithClass)
    {
        if (classPixels.Count != pixelsOfImagesWithClass.Count)
            throw new ArgumentException("Both statistics need one entry per class.");
        var freq = classPixels.Select((p, c) => p > 0 && pixelsOfImagesWithClass[c] > 0
            ? (double)p / pixelsOfImagesWithClass[c] : double.NaN).ToArray();
        var present = freq.Where(f => !double.IsNaN(f)).OrderBy(f => f).ToArray();
        if (present.Length == 0)
            throw new DataException("Class weights: no class has any pixel in the training masks.");
        double median = present.Length % 2 == 1 ? present[present.Length / 2]
            : (present[present.Length / 2 - 1] + present[present.Length / 2]) / 2;
        return freq.Select(f => double.IsNaN(f) ? 0f : (float)(median / f)).ToArray();
    }

    /// <summary>Inverse frequency: weight(c) = total / (present classes * pixels of c), so the weights average 1 over
    /// present classes. Absent classes get 0.</summary>
    public static float[] InverseFrequency(IReadOnlyList<long> classPixels)
    {
        double total = classPixels.Sum();
        int present = classPixels.Count(p => p > 0);
        if (present == 0) throw new DataException("Class weights: no class has any pixel in the training masks.");
        return classPixels.Select(p => p > 0 ? (float)(total / (present * (double)p)) : 0f).ToArray();
    }
}
