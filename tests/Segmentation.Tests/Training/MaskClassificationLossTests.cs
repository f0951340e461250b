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

    /// <summary>Every case of instance data's pixels: stuff, an object, a thing pixel outside any object, ignored; and
    /// a class the data does not have.</summary>
    [Fact]
    public void Segments_are_each_object_and_each_stuff_class_present_and_nothing_else()
    {
        // two 2x3 images; classes: 0 background (stuff), 1 round (thing), 2 oval (thing); 255 ignored
        var mask = new byte[] { 0, 1, 1, 2, 2, 255, /* second */ 1, 1, 0, 0, 2, 1 };
        var objects = new ushort[] { 0, 7, 7, 3, 3, 0, /* second */ 0, 5, 0, 0, 9, 5 };
        var things = new[] { false, true, true };
        var (segments, classes, most) = Tasks.SegmentTargets.Make(mask, objects, 2, 6, things);
        // image 1: background, object 7 (round), object 3 (oval), in order of their first pixel; the ignored pixel none
        Assert.Equal(new[] { 0, 1, 1, 2, 2, -1 }, segments[..6]);
        // image 2: a round pixel without an object belongs to none; object 5 is one segment, wherever its pixels are
        Assert.Equal(new[] { -1, 0, 1, 1, 2, 0 }, segments[6..]);
        Assert.Equal(3, most);
        Assert.Equal(new long[] { 0, 1, 2, /* second */ 1, 0, 2 }, classes);
        var bad = Assert.Throws<DataException>(() => Tasks.SegmentTargets.Make(new byte[] { 3 }, new ushort[] { 0 },
            1, 1, things));
        Assert.Contains("class 3", bad.Message);
    }

    /// <summary>Segments that are one per class present (all stuff) give the semantic targets' loss exactly, and
    /// sharing the mask count over processes divides the mask terms by the shared count.</summary>
    [Fact]
    public void Segment_targets_give_the_semantic_loss_when_each_class_is_one_segment_and_the_count_can_be_shared()
    {
        using var scope = NewDisposeScope();
        var mask = Mask();
        var bytes = mask.to(ScalarType.Byte).data<byte>().ToArray();
        var (segments, classes, most) = Tasks.SegmentTargets.Make(bytes, new ushort[64], 1, 64,
            new[] { false, false, false });
        var targets = new Targets(new Dictionary<string, Tensor>
        {
            [Targets.MaskName] = mask,
            [MaskClassificationLoss.SegmentsName] = tensor(segments, new long[] { 1, 8, 8 }),
            [MaskClassificationLoss.SegmentClassesName] = tensor(classes, new long[] { 1, most }),
        });
        var outputs = new ModelOutputs(new Dictionary<string, Tensor>
        {
            [MaskClassificationLoss.ClassLogits] = randn(new long[] { 1, 5, 4 }),
            [MaskClassificationLoss.MaskLogits] = randn(new long[] { 1, 5, 8, 8 }),
        }, Schema);
        float Loss(Targets t, Func<double, double>? reduce = null)
        {
            manual_seed(3);
            return new MaskClassificationLoss { Points = 64, ReduceCount = reduce }.Compute(outputs, t).item<float>();
        }
        float semantic = Loss(new Targets(mask)), segmented = Loss(targets);
        Assert.Equal(semantic, segmented);
        // the class term does not divide by the count, the mask terms do: twice the count takes half of them off,
        // four times the count a quarter more
        float twice = Loss(targets, own => own * 2), fourfold = Loss(targets, own => own * 4);
        Assert.True(segmented - twice > 0.01, $"{segmented} vs {twice}");
        Assert.Equal(segmented - twice, 2 * (twice - fourfold), 4);
    }
}
