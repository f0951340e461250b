using Segmentation.Data;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>
/// Focal loss (Lin et al. 2017), multi-class: the mean over valid pixels of -(1 - p_t)^gamma log p_t, where p_t is the
/// softmax probability of the pixel's class. It lowers the weight of pixels that are already right, so the rare and
/// hard ones count more; gamma 0 is cross-entropy. Pixels at the ignore label count nowhere; a batch with none valid
/// gives 0 that keeps the graph.
/// </summary>
public sealed class FocalLoss : PixelLoss
{
    private readonly long ignoreIndex;

    /// <summary>The focusing exponent.</summary>
    public double Gamma { get; }

    /// <summary>Creates the loss.</summary>
    public FocalLoss(double gamma = 2.0, int ignoreIndex = Labels.Ignore)
    {
        if (!(gamma >= 0) || double.IsInfinity(gamma))
            throw new OptionsException($"Focal gamma is {gamma}; it must be a finite number of at least 0.");
        Gamma = gamma;
        this.ignoreIndex = ignoreIndex;
    }

    /// <inheritdoc />
    public override Tensor Compute(Tensor logits, Tensor target)
    {
        using var scope = NewDisposeScope();
        var valid = target.ne(ignoreIndex);
        var safe = target.masked_fill(valid.logical_not(), 0).unsqueeze(1);            // N x 1 x H x W
        var logP = logits.log_softmax(1).gather(1, safe).squeeze(1);                  // log p_t
        var weight = Gamma == 0 ? ones_like(logP) : (1 - logP.exp()).clamp_min(0).pow(Gamma);
        var perPixel = -(weight * logP) * valid.to_type(logits.dtype);
        var count = valid.sum();
        var loss = where(count.gt(0), perPixel.sum() / count.clamp_min(1).to_type(logits.dtype), logits.sum() * 0);
        return loss.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Lovász-softmax loss (Berman et al. 2018): a convex surrogate of 1 - IoU, optimised directly. For each class present
/// in the batch's valid pixels, the errors |truth - probability| are sorted in decreasing order and weighted by the
/// steps of the Jaccard loss along that order (the Lovász extension); the loss is the mean over those classes. Computed
/// over the whole batch, as the paper's <c>per_image=False</c>; ignored pixels leave out. A batch with no class
/// present gives 0 that keeps the graph.
/// </summary>
public sealed class LovaszSoftmaxLoss : PixelLoss
{
    private readonly long ignoreIndex;

    /// <summary>Creates the loss.</summary>
    public LovaszSoftmaxLoss(int ignoreIndex = Labels.Ignore) => this.ignoreIndex = ignoreIndex;

    /// <inheritdoc />
    public override Tensor Compute(Tensor logits, Tensor target)
    {
        using var scope = NewDisposeScope();
        long classes = logits.shape[1];
        var probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, classes);      // P x C
        var labels = target.reshape(-1);
        var keep = labels.ne(ignoreIndex).nonzero().squeeze(1);
        probs = probs.index_select(0, keep);
        labels = labels.index_select(0, keep);
        Tensor? total = null;
        long present = 0;
        for (long c = 0; c < classes; c++)
        {
            var truth = labels.eq(c).to_type(probs.dtype);
            if (truth.sum().item<float>() == 0) continue;
            var errors = (truth - probs[.., c]).abs();
            var (sorted, order) = errors.sort(0, descending: true);
            var term = sorted.dot(JaccardSteps(truth.index_select(0, order)));
            total = total is null ? term : total + term;
            present++;
        }
        var loss = total is null ? logits.sum() * 0 : total / present;
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>The gradient of the Lovász extension of the Jaccard loss at the sorted ground truth (the paper's
    /// lovasz_grad).</summary>
    internal static Tensor JaccardSteps(Tensor sortedTruth)
    {
        var total = sortedTruth.sum();
        var intersection = total - sortedTruth.cumsum(0);
        var union = total + (1 - sortedTruth).cumsum(0);
        var jaccard = 1 - intersection / union;
        if (jaccard.shape[0] > 1) jaccard = cat(new[] { jaccard[..1], jaccard[1..] - jaccard[..^1] });
        return jaccard;
    }
}
