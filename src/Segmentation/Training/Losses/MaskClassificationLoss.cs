using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Models;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Training;

/// <summary>
/// Mask2Former's training loss (transformers' <c>Mask2FormerLoss</c> with its <c>Mask2FormerHungarianMatcher</c>). The
/// target masks are the segments of each image when the targets hold them (<see cref="SegmentsName"/>: instance and
/// panoptic data, each object and each stuff class present one segment), else one per class present (semantic data);
/// ignored pixels belong to none. For every
/// prediction (the last and, when the model gives them, each auxiliary one), the queries are matched to the targets by
/// the least total of 2 x (minus the class probability) + 5 x sigmoid cross-entropy + 5 x Dice, the mask terms on
/// <see cref="Points"/> points drawn uniformly (<see cref="LinearAssignment"/>, exact). The loss is 2 x the class
/// cross-entropy over all queries (the unmatched ones' target "no object", weighted 0.1) plus 5 x the sigmoid
/// cross-entropy and 5 x the Dice of each matched mask on points chosen by uncertainty (3 x as many drawn, the 75 %
/// most uncertain kept, the rest drawn anew), each divided by the number of target masks.
/// </summary>
public sealed class MaskClassificationLoss : ISegmentationLoss
{
    /// <summary>Points per mask (transformers' train_num_points, 12,544).</summary>
    public int Points { get; init; } = 12544;

    /// <summary>The weights of the class, mask and Dice terms (2, 5, 5) and of "no object" (0.1).</summary>
    public (double Class, double Mask, double Dice, double NoObject) Weights { get; init; } = (2, 5, 5, 0.1);

    private const double Oversample = 3, Importance = 0.75;

    /// <summary>The names of the per-query outputs it reads, and of their auxiliary stacks (N x layers x
    /// ...).</summary>
    public const string ClassLogits = "class_queries_logits", MaskLogits = "masks_queries_logits",
        AuxClassLogits = "aux_class_queries_logits", AuxMaskLogits = "aux_masks_queries_logits";

    /// <summary>The targets' names of the segment map (N x H x W, int32: each pixel's segment, -1 where none) and of
    /// the segments' classes (N x S, int64, -1 after an image's last segment).</summary>
    public const string SegmentsName = "segments", SegmentClassesName = "segment_classes";

    /// <summary>The number of target masks the terms are divided by, from this process's count: in a data-parallel
    /// run, the mean over the processes (transformers all-reduces it and divides by the world size); null: this
    /// process's own.</summary>
    public Func<double, double>? ReduceCount { get; set; }

    /// <inheritdoc />
    public Tensor Compute(ModelOutputs outputs, Targets targets)
    {
        using var time = StepProfile.Time("loss");
        using var scope = NewDisposeScope();
        var (classes, masks) = targets.Names.Contains(SegmentsName)
            ? SegmentMasks(targets[SegmentsName], targets[SegmentClassesName]) : TargetMasks(targets.Mask);
        double own = classes.Sum(c => c.shape[0]);
        double count = Math.Max(1, ReduceCount?.Invoke(own) ?? own);
        var total = Term(outputs[ClassLogits], outputs[MaskLogits], classes, masks, count);
        if (outputs.TryGet(AuxClassLogits, out var auxClasses) && outputs.TryGet(AuxMaskLogits, out var auxMasks))
            for (long i = 0; i < auxClasses.shape[1]; i++)
                total = total + Term(auxClasses.select(1, i), auxMasks.select(1, i), classes, masks, count);
        return total.MoveToOuterDisposeScope();
    }

    /// <summary>Each image's classes (T, int64) and masks (T x H x W, float32): one per class present.</summary>
    internal static (Tensor[] Classes, Tensor[] Masks) TargetMasks(Tensor mask)
    {
        long n = mask.shape[0];
        var classes = new Tensor[n];
        var masks = new Tensor[n];
        for (long b = 0; b < n; b++)
        {
            var image = mask[b];
            var present = image.unique().Item1.to(ScalarType.Int64);
            present = present.masked_select(present.ne(Labels.Ignore));
            classes[b] = present;
            masks[b] = present.numel() == 0 ? zeros(new long[] { 0, image.shape[0], image.shape[1] }, device:
                image.device) : image.unsqueeze(0).eq(present.reshape(-1, 1, 1)).to(ScalarType.Float32);
        }
        return (classes, masks);
    }

    /// <summary>Each image's classes (T, int64) and masks (T x H x W, float32) from a segment map and the segments'
    /// classes.</summary>
    internal static (Tensor[] Classes, Tensor[] Masks) SegmentMasks(Tensor segments, Tensor segmentClasses)
    {
        long n = segments.shape[0];
        var classes = new Tensor[n];
        var masks = new Tensor[n];
        for (long b = 0; b < n; b++)
        {
            var own = segmentClasses[b];
            var present = own.masked_select(own.ge(0));
            classes[b] = present;
            var ids = arange(present.shape[0], ScalarType.Int32, segments.device).reshape(-1, 1, 1);
            masks[b] = segments[b].unsqueeze(0).eq(ids).to(ScalarType.Float32);
        }
        return (classes, masks);
    }

    private Tensor Term(Tensor classLogits, Tensor maskLogits, Tensor[] classes, Tensor[] masks, double count)
    {
        classLogits = classLogits.to(ScalarType.Float32);
        maskLogits = maskLogits.to(ScalarType.Float32);
        long n = classLogits.shape[0], queries = classLogits.shape[1], k = classLogits.shape[2] - 1;
        var targetClasses = full(new[] { n, queries }, k, ScalarType.Int64, classLogits.device);
        var matchedLogits = new List<Tensor>();
        var matchedTargets = new List<Tensor>();
        for (long b = 0; b < n; b++)
        {
            if (classes[b].numel() == 0) continue;
            var (rows, columns) = Match(classLogits[b], maskLogits[b], classes[b], masks[b]);
            var q = tensor(rows.Select(r => (long)r).ToArray(), device: classLogits.device);
            var t = tensor(columns.Select(c => (long)c).ToArray(), device: classLogits.device);
            targetClasses[b].index_put_(classes[b].index_select(0, t), q);
            matchedLogits.Add(maskLogits[b].index_select(0, q));
            matchedTargets.Add(masks[b].index_select(0, t));
        }
        var weights = ones(k + 1, device: classLogits.device);
        weights[k] = (float)Weights.NoObject;
        var classTerm = F.cross_entropy(classLogits.transpose(1, 2), targetClasses, weights);
        if (matchedLogits.Count == 0) return classTerm * Weights.Class;
        var (maskTerm, diceTerm) = MaskTerms(cat(matchedLogits, 0), cat(matchedTargets, 0), count);
        return classTerm * Weights.Class + maskTerm * Weights.Mask + diceTerm * Weights.Dice;
    }

    /// <summary>The matcher's assignment for one image: query rows and target columns.</summary>
    private (int[] Rows, int[] Columns) Match(Tensor classLogits, Tensor maskLogits, Tensor classes, Tensor masks)
    {
        using var time = StepProfile.Time("loss: matcher");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var probabilities = classLogits.softmax(-1).index_select(1, classes); // Q x T
        var coordinates = rand(1, Points, 2, device: maskLogits.device);
        var predicted = Sample(maskLogits.unsqueeze(0), coordinates).squeeze(0);         // Q x P
        var target = Sample(masks.unsqueeze(0), coordinates).squeeze(0);                 // T x P
        var positive = F.binary_cross_entropy_with_logits(predicted, ones_like(predicted),
            reduction: nn.Reduction.None);
        var negative = F.binary_cross_entropy_with_logits(predicted, zeros_like(predicted),
            reduction: nn.Reduction.None);
        var crossEntropy = (positive.matmul(target.t()) + negative.matmul((1 - target).t())) / Points;
        var sigmoid = predicted.sigmoid();
        var dice = 1 - (sigmoid.matmul(target.t()) * 2 + 1) / (sigmoid.sum(-1).unsqueeze(1) + target.sum(-1)
            .unsqueeze(0) + 1);
        var cost = (crossEntropy * Weights.Mask - probabilities * Weights.Class + dice * Weights.Dice)
            .to(ScalarType.Float64).cpu();
        long q = cost.shape[0], t = cost.shape[1];
        var values = cost.data<double>().ToArray();
        var matrix = new double[q, t];
        for (long i = 0; i < q; i++) for (long j = 0; j < t; j++) matrix[i, j] = values[i * t + j];
        using var assignment = StepProfile.Time("loss: matcher: assignment");
        return LinearAssignment.Solve(matrix);
    }

    /// <summary>The masks' cross-entropy and Dice terms on points chosen by uncertainty, each divided by
    /// <paramref name="count"/>.</summary>
    private (Tensor Mask, Tensor Dice) MaskTerms(Tensor logits, Tensor targets, double count)
    {
        long m = logits.shape[0];
        var input = logits.unsqueeze(1); // M x 1 x h x w
        Tensor coordinates;
        using (no_grad())
        {
            long drawn = (long)(Points * Oversample), uncertain = (long)(Importance * Points);
            var candidates = rand(m, drawn, 2, device: logits.device);
            var uncertainty = Sample(input, candidates).squeeze(1).abs().neg(); // M x drawn
            var top = uncertainty.topk((int)uncertain, 1).indexes;
            var chosen = candidates.gather(1, top.unsqueeze(-1).expand(m, uncertain, 2));
            coordinates = cat(new[] { chosen, rand(m, Points - uncertain, 2, device: logits.device) }, 1);
        }
        var labels = Sample(targets.unsqueeze(1), coordinates).squeeze(1).detach(); // M x P
        var points = Sample(input, coordinates).squeeze(1);                          // M x P
        var maskTerm = F.binary_cross_entropy_with_logits(points, labels, reduction: nn.Reduction.None)
            .mean(new long[] { 1 }).sum()
            / count;
        var p = points.sigmoid();
        var diceTerm = (1 - ((p * labels).sum(-1) * 2 + 1) / (p.sum(-1) + labels.sum(-1) + 1)).sum() / count;
        return (maskTerm, diceTerm);
    }

    /// <summary>Bilinear samples (zeros outside) of maps B x C x H x W at points B x P x 2 in [0, 1] (x then y):
    /// B x C x P (transformers' <c>sample_point</c>).</summary>
    private static Tensor Sample(Tensor maps, Tensor coordinates) =>
        F.grid_sample(maps, (coordinates * 2 - 1).unsqueeze(2), GridSampleMode.Bilinear, GridSamplePaddingMode.Zeros,
            align_corners: false).squeeze(3);
}
