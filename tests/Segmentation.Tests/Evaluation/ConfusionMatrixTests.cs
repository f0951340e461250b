using System.Text.Json.Nodes;
using Segmentation.Evaluation;
using static TorchSharp.torch;

namespace Segmentation.Tests.Evaluation;

public class ConfusionMatrixTests
{
    private static Tensor Map(long[,] values) => tensor(values);

    [Fact]
    public void Reproduces_the_Hugging_Face_evaluate_mean_iou_doctest()
    {
        using var scope = NewDisposeScope();
        using var cm = new ConfusionMatrix(10, ignoreIndex: 255);
        cm.Update(Map(new long[,] { { 1, 2 }, { 3, 4 }, { 5, 255 } }), Map(new long[,] { { 0, 3 }, { 5, 4 }, { 6, 255 } }));
        cm.Update(Map(new long[,] { { 2, 7 }, { 9, 2 }, { 3, 6 } }), Map(new long[,] { { 1, 7 }, { 9, 2 }, { 3, 6 } }));
        cm.Update(Map(new long[,] { { 2, 2, 3 }, { 8, 2, 4 }, { 3, 255, 2 } }), Map(new long[,] { { 1, 2, 2 }, { 8, 2, 1 }, { 3, 255, 1 } }));
        var m = cm.Compute();
        Assert.Equal(0.4775, m.MeanIoU, 10);
        Assert.Equal(0.5916666666666666, m.MeanAccuracy, 10);
        Assert.Equal(0.5263157894736842, m.PixelAccuracy, 10);
        var expected = new[] { 0, 0, 0.375, 0.4, 0.5, 0, 0.5, 1, 1, 1 };
        for (int c = 0; c < 10; c++) Assert.Equal(expected[c], m.PerClassIoU[c], 10);
    }

    [Fact]
    public void A_class_absent_from_prediction_and_truth_is_NaN_and_left_out_of_the_mean()
    {
        using var cm = new ConfusionMatrix(3);
        using var p = Map(new long[,] { { 0, 0, 1, 1 } });
        using var t = Map(new long[,] { { 0, 0, 1, 0 } });
        cm.Update(p, t);
        var m = cm.Compute();
        Assert.True(double.IsNaN(m.PerClassIoU[2]));
        Assert.True(double.IsNaN(m.PerClassAccuracy[2]));
        Assert.Equal((2.0 / 3 + 1.0 / 2) / 2, m.MeanIoU, 12);
    }

    [Fact]
    public void A_class_predicted_but_never_true_has_IoU_zero_and_accuracy_NaN()
    {
        using var cm = new ConfusionMatrix(3);
        using var p = Map(new long[,] { { 0, 2 } });
        using var t = Map(new long[,] { { 0, 0 } });
        cm.Update(p, t);
        var m = cm.Compute();
        Assert.Equal(0.0, m.PerClassIoU[2]);
        Assert.True(double.IsNaN(m.PerClassAccuracy[2]));
        Assert.Equal((0.5 + 0.0) / 2, m.MeanIoU, 12);
    }

    [Fact]
    public void Pixels_at_the_ignore_index_are_dropped_whatever_was_predicted()
    {
        using var cm = new ConfusionMatrix(2, ignoreIndex: 11);
        using var p = Map(new long[,] { { 0, 1, 1, 1 } });
        using var t = Map(new long[,] { { 0, 1, 11, 11 } });
        cm.Update(p, t);
        var m = cm.Compute();
        Assert.Equal(1.0, m.MeanIoU);
        Assert.Equal(2L, m.ConfusionMatrix.Cast<long>().Sum());
    }

    [Fact]
    public void A_prediction_outside_the_classes_at_a_valid_pixel_is_an_error_naming_the_value()
    {
        using var cm = new ConfusionMatrix(3, ignoreIndex: 255);
        using var p = Map(new long[,] { { 0, 7, 9 } });
        using var t = Map(new long[,] { { 0, 1, 255 } });
        cm.Update(p, t);
        var e = Assert.Throws<SegmentationException>(() => cm.Compute());
        Assert.Contains("Prediction value 7", e.Message);
        Assert.Contains("0-2", e.Message);
    }

    [Fact]
    public void Logits_are_reduced_by_argmax()
    {
        using var scope = NewDisposeScope();
        using var cm = new ConfusionMatrix(2);
        var logits = tensor(new float[] { 5, 0, 0, 5, 0, 5 }).reshape(1, 2, 1, 3); // argmax: [0, 1, 1]? channel0=[5,0,0], channel1=[5,0,5]
        cm.Update(logits, Map(new long[,] { { 0, 0, 1 } }).unsqueeze(0));
        Assert.Equal(new long[,] { { 2, 0 }, { 0, 1 } }, cm.ToArray());
    }

    [Fact]
    public void Random_predictions_match_a_plain_reference_and_many_updates_equal_one()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(7);
        const int classes = 5;
        var preds = randint(0, classes, new long[] { 6, 13, 17 });
        var truth = randint(0, classes + 1, new long[] { 6, 13, 17 });
        truth = truth.masked_fill(truth.eq(classes), 255);

        using var many = new ConfusionMatrix(classes);
        for (int i = 0; i < 6; i++) many.Update(preds[i], truth[i]);
        using var one = new ConfusionMatrix(classes);
        one.Update(preds, truth);
        Assert.Equal(one.ToArray(), many.ToArray());

        // Plain reference: count pixel by pixel.
        var p = preds.data<long>().ToArray();
        var t = truth.data<long>().ToArray();
        var reference = new long[classes, classes];
        for (int i = 0; i < p.Length; i++) if (t[i] != 255) reference[t[i], p[i]]++;
        Assert.Equal(reference, one.ToArray());

        var m = one.Compute();
        for (int c = 0; c < classes; c++)
        {
            long inter = reference[c, c], g = 0, pr = 0;
            for (int k = 0; k < classes; k++) { g += reference[c, k]; pr += reference[k, c]; }
            Assert.Equal((double)inter / (g + pr - inter), m.PerClassIoU[c], 12);
            Assert.Equal(2.0 * inter / (g + pr), m.PerClassDice[c], 12);
        }
    }

    [Fact]
    public void Per_image_mean_IoU_is_the_other_rule()
    {
        using var cm = new ConfusionMatrix(2, trackPerImage: true);
        // Image 1: perfect (IoU 1, 1). Image 2: class 1 only in truth, predicted all 0 -> IoU(0)=0, IoU(1)=0.
        using var p = tensor(new long[] { 0, 1, 0, 0 }).reshape(2, 1, 2);
        using var t = tensor(new long[] { 0, 1, 1, 1 }).reshape(2, 1, 2);
        cm.Update(p, t);
        var m = cm.Compute();
        Assert.Equal(0.5, m.PerImageMeanIoU!.Value, 12);
        Assert.Equal((1.0 / 3 + 1.0 / 3) / 2, m.MeanIoU, 12); // data-set rule: I0=1,U0=3; I1=1,U1=3
    }

    [Fact]
    public void Json_has_the_documented_keys_and_null_for_NaN()
    {
        using var cm = new ConfusionMatrix(3, classNames: new[] { "bg", "cat", "dog" });
        using var p = Map(new long[,] { { 0, 1 } });
        using var t = Map(new long[,] { { 0, 1 } });
        cm.Update(p, t);
        var json = JsonNode.Parse(cm.Compute().ToJson())!.AsObject();
        foreach (var key in new[] { "meanIoU", "pixelAccuracy", "meanAccuracy", "meanDice", "frequencyWeightedIoU", "perClassIoU", "perClassAccuracy", "perClassDice", "classNames", "confusionMatrix" })
            Assert.True(json.ContainsKey(key), key);
        Assert.Null(json["perClassIoU"]![2]);
        Assert.Equal("dog", json["classNames"]![2]!.GetValue<string>());
        var back = SegmentationMetrics.FromJsonObject(json);
        Assert.Equal(1.0, back.MeanIoU);
        Assert.Contains("dog", cm.Compute().ToString());
    }

    [Fact]
    public void Tracking_per_image_IoU_leaves_the_data_set_matrix_unchanged()
    {
        // 8 x 36 x 48 = 13,824 pixels, a multiple of 256: a total summed as bytes would wrap to exactly 0.
        random.manual_seed(0);
        using var logits = randn(new long[] { 8, 12, 36, 48 });
        using var target = randint(0, 12, new long[] { 8, 36, 48 });
        using var tracked = new ConfusionMatrix(12, trackPerImage: true);
        using var plain = new ConfusionMatrix(12);
        tracked.Update(logits, target);
        plain.Update(logits, target);
        Assert.Equal(plain.ToArray(), tracked.ToArray());
        Assert.Equal(13_824, tracked.ToArray().Cast<long>().Sum());
        Assert.Equal(plain.Compute().MeanIoU, tracked.Compute().MeanIoU, 12);
    }
}
