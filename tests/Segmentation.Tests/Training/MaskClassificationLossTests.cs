using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Tests.Training;

/// <summary>Mask2Former's matched set loss: its targets, its matching and its terms.</summary>
public class MaskClassificationLossTests
{
    private static readonly ModelOutput[] Schema =
    {
        new(MaskClassificationLoss.ClassLogits, 3, OutputKind.QueryClassLogits),
        new(MaskClassificationLoss.MaskLogits, 4, OutputKind.QueryMaskLogits),
    };

    /// <summary>An 8x8 mask: class 2 on the left half, class 0 on the right, a 2x2 ignored corner.</summary>
    private static Tensor Mask()
    {
        var mask = zeros(new long[] { 1, 8, 8 }, ScalarType.Int64);
        mask[0, .., ..4] = 2;
        mask[0, ..2, 6..] = Labels.Ignore;
        return mask;
    }

    [Fact]
    public void Each_class_present_is_one_target_mask_and_ignored_pixels_belong_to_none()
    {
        var (classes, masks) = MaskClassificationLoss.TargetMasks(Mask());
        Assert.Equal(new long[] { 0, 2 }, classes[0].data<long>().ToArray());
        Assert.Equal(new long[] { 2, 8, 8 }, masks[0].shape);
        Assert.Equal(32 - 4, masks[0][0].sum().item<float>()); // class 0: the right half less the ignored corner
        Assert.Equal(32, masks[0][1].sum().item<float>());
        Assert.Equal(0, (masks[0][0] * masks[0][1]).sum().item<float>());
    }

    [Fact]
    public void Queries_that_predict_the_targets_are_matched_to_them_and_cost_less_than_the_same_queries_swapped()
    {
        using var scope = NewDisposeScope();
        var (_, masks) = MaskClassificationLoss.TargetMasks(Mask());
        // query 1 predicts class 0's mask and class 0, query 3 class 2's; queries 0 and 2 predict no object
        var classLogits = full(new long[] { 1, 4, 4 }, -4f);
        classLogits[0, 0, 3] = 4; classLogits[0, 2, 3] = 4;
        classLogits[0, 1, 0] = 4; classLogits[0, 3, 2] = 4;
        var maskLogits = full(new long[] { 1, 4, 8, 8 }, -6f);
        maskLogits[0, 1] = masks[0][0] * 12 - 6;
        maskLogits[0, 3] = masks[0][1] * 12 - 6;
        var loss = new MaskClassificationLoss { Points = 256 };
        var right = loss.Compute(new ModelOutputs(new Dictionary<string, Tensor>
        {
            [MaskClassificationLoss.ClassLogits] = classLogits, [MaskClassificationLoss.MaskLogits] = maskLogits,
        }, Schema), new Targets(Mask())).item<float>();
        var swappedMasks = maskLogits.index_select(1, tensor(new long[] { 0, 3, 2, 1 }));
        var wrong = loss.Compute(new ModelOutputs(new Dictionary<string, Tensor>
        {
            [MaskClassificationLoss.ClassLogits] = classLogits, [MaskClassificationLoss.MaskLogits] = swappedMasks,
        }, Schema), new Targets(Mask())).item<float>();
        // the mask terms are taken on the most uncertain points, the edges, so a right prediction still costs some
        Assert.True(wrong > 3 * right, $"masks swapped between the classes' queries cost {wrong}, right {right}");
    }

    [Fact]
    public void Every_prediction_auxiliary_ones_too_gets_a_gradient()
    {
        var classLogits = randn(new long[] { 2, 5, 4 }).requires_grad_(true);
        var maskLogits = randn(new long[] { 2, 5, 4, 4 }).requires_grad_(true);
        var auxClasses = randn(new long[] { 2, 3, 5, 4 }).requires_grad_(true);
        var auxMasks = randn(new long[] { 2, 3, 5, 4, 4 }).requires_grad_(true);
        var schema = Schema.Concat(new[]
        {
            new ModelOutput(MaskClassificationLoss.AuxClassLogits, 4, OutputKind.Auxiliary),
            new ModelOutput(MaskClassificationLoss.AuxMaskLogits, 5, OutputKind.Auxiliary),
        }).ToArray();
        var target = cat(new[] { Mask(), zeros(new long[] { 1, 8, 8 }, ScalarType.Int64) }, 0);
        var loss = new MaskClassificationLoss { Points = 64 }.Compute(new ModelOutputs(new Dictionary<string, Tensor>
        {
            [MaskClassificationLoss.ClassLogits] = classLogits, [MaskClassificationLoss.MaskLogits] = maskLogits,
            [MaskClassificationLoss.AuxClassLogits] = auxClasses, [MaskClassificationLoss.AuxMaskLogits] = auxMasks,
        }, schema), new Targets(target));
        loss.backward();
        foreach (var (name, t) in new[] { ("classes", classLogits), ("masks", maskLogits), ("aux classes", auxClasses),
            ("aux masks", auxMasks) })
            Assert.True(t.grad is { } g && g.abs().sum().item<float>() > 0, $"{name} get no gradient");
        for (int i = 0; i < 3; i++)
            Assert.True(auxMasks.grad![.., i].abs().sum().item<float>() > 0, $"auxiliary prediction {i}");
    }
}
