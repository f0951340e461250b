using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Tests.Training;

public class LossTests
{
    [Fact]
    public void Dice_ignores_pixels_at_the_ignore_index()
    {
        using var scope = NewDisposeScope();
        var dice = new DiceLoss(ignoreIndex: 255, smooth: 0);
        // Perfect logits on the first two pixels, wrong confident logits on the third, which is ignored.
        var logits = tensor(new float[] { 20, -20, -20, /* class 1: */ -20, 20, 20 }).reshape(1, 2, 1, 3);
        var target = tensor(new long[] { 0, 1, 255 }).reshape(1, 1, 3);
        Assert.True(dice.Compute(logits, target).item<float>() < 1e-4);
        var wrong = tensor(new long[] { 0, 1, 0 }).reshape(1, 1, 3);
        Assert.True(dice.Compute(logits, wrong).item<float>() > 0.2);
    }

    [Fact]
    public void Dice_matches_a_hand_computed_value()
    {
        using var scope = NewDisposeScope();
        var dice = new DiceLoss(smooth: 0);
        // Binary (one channel, sigmoid). Logit 0 -> p = 0.5 everywhere; target [1, 0]: 2*0.5 / (1 + 1) = 0.5 -> loss 0.5
        var logits = zeros(1, 1, 1, 2);
        var target = tensor(new long[] { 1, 0 }).reshape(1, 1, 2);
        Assert.Equal(0.5f, dice.Compute(logits, target).item<float>(), 5);
    }

    [Fact]
    public void Dice_with_no_valid_pixel_is_zero_and_keeps_the_graph()
    {
        using var scope = NewDisposeScope();
        var logits = randn(1, 3, 2, 2).requires_grad_();
        var target = full(new long[] { 1, 2, 2 }, 255L);
        var loss = new DiceLoss().Compute(logits, target);
        Assert.Equal(0f, loss.item<float>());
        loss.backward();
        Assert.NotNull(logits.grad);
    }

    [Fact]
    public void Cross_entropy_ignores_the_ignore_index_and_applies_weights()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 2, 0, 0, 1 }).reshape(1, 2, 1, 2);
        var target = tensor(new long[] { 0, 255 }).reshape(1, 1, 2);
        using var ce = new CrossEntropyLoss(ignoreIndex: 255);
        float expected = (float)-Math.Log(Math.Exp(2) / (Math.Exp(2) + 1));
        Assert.Equal(expected, ce.Compute(logits, target).item<float>(), 5);
        using var weighted = new CrossEntropyLoss(new[] { 3f, 1f });
        Assert.Equal(expected, weighted.Compute(logits, target).item<float>(), 5); // weighted mean over one pixel
    }

    [Fact]
    public void Combined_loss_is_the_weighted_sum()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(1);
        var logits = randn(2, 3, 4, 4);
        var target = randint(0, 3, new long[] { 2, 4, 4 });
        using var ce = new CrossEntropyLoss();
        var dice = new DiceLoss();
        var sum = new CombinedLoss((ce, 1.0), (dice, 0.5)).Compute(logits, target).item<float>();
        Assert.Equal(ce.Compute(logits, target).item<float>() + 0.5f * dice.Compute(logits, target).item<float>(), sum, 5);
    }

    [Fact]
    public void Median_frequency_weights_match_a_hand_computed_answer()
    {
        // Class 0: 60 px in images totalling 100 px -> 0.6. Class 1: 30 of 100 -> 0.3. Class 2: 10 px in one 50-px image -> 0.2.
        var w = ClassWeights.MedianFrequency(new long[] { 60, 30, 10, 0 }, new long[] { 100, 100, 50, 0 });
        Assert.Equal(new[] { 0.5f, 1f, 1.5f, 0f }, w.Select(x => MathF.Round(x, 5)).ToArray());
    }

    [Fact]
    public void Inverse_frequency_weights_average_one_over_present_classes()
    {
        var w = ClassWeights.InverseFrequency(new long[] { 75, 25, 0 });
        Assert.Equal(2f / 3, w[0], 5);
        Assert.Equal(2f, w[1], 5);
        Assert.Equal(0f, w[2]);
    }
}

/// <summary>Focal and Lovász-softmax against values computed here by hand (plain double arithmetic, no tensors).</summary>
public class FocalAndLovaszTests
{
    // One image of 1 x 4 pixels, 3 classes; the last pixel is ignored.
    private static readonly double[,] Logits = { { 2.0, 0.5, -1.0, 3.0 }, { 0.1, 1.5, 0.2, -2.0 }, { -0.3, 0.0, 2.5, 0.7 } }; // class x pixel
    private static readonly long[] Target = { 0, 2, 2, 255 };

    private static (Tensor Logits, Tensor Target) Batch()
    {
        var flat = new float[12];
        for (int c = 0; c < 3; c++) for (int p = 0; p < 4; p++) flat[c * 4 + p] = (float)Logits[c, p];
        return (tensor(flat, new long[] { 1, 3, 1, 4 }), tensor(Target, new long[] { 1, 1, 4 }));
    }

    private static double Softmax(int c, int p)
    {
        double sum = 0;
        for (int k = 0; k < 3; k++) sum += Math.Exp(Logits[k, p]);
        return Math.Exp(Logits[c, p]) / sum;
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(2.0)]
    [InlineData(0.5)]
    public void Focal_loss_is_the_mean_of_minus_one_minus_p_to_the_gamma_times_log_p(double gamma)
    {
        double expected = 0;
        for (int p = 0; p < 3; p++)
        {
            double pt = Softmax((int)Target[p], p);
            expected += -Math.Pow(1 - pt, gamma) * Math.Log(pt);
        }
        expected /= 3;
        var (logits, target) = Batch();
        Assert.Equal(expected, new FocalLoss(gamma).Compute(logits, target).item<float>(), 5);
        if (gamma == 0) Assert.Equal(new CrossEntropyLoss().Compute(logits, target).item<float>(), new FocalLoss(0).Compute(logits, target).item<float>(), 5);
    }

    [Fact]
    public void Lovasz_softmax_is_the_mean_over_present_classes_of_sorted_errors_times_the_Jaccard_steps()
    {
        double expected = 0; int present = 0;
        for (int c = 0; c < 3; c++)
        {
            var truth = Enumerable.Range(0, 3).Select(p => Target[p] == c ? 1.0 : 0.0).ToArray();
            if (truth.Sum() == 0) continue;
            present++;
            var order = Enumerable.Range(0, 3).OrderByDescending(p => Math.Abs(truth[p] - Softmax(c, p))).ToArray();
            double gts = truth.Sum(), previous = 0, inter = gts, union = gts;
            foreach (var p in order)
            {
                inter -= truth[p]; union += 1 - truth[p];
                double jaccard = 1 - inter / union;
                expected += Math.Abs(truth[p] - Softmax(c, p)) * (jaccard - previous);
                previous = jaccard;
            }
        }
        expected /= present;
        var (logits, target) = Batch();
        Assert.Equal(expected, new LovaszSoftmaxLoss().Compute(logits, target).item<float>(), 5);
    }

    [Fact]
    public void Lovasz_is_near_zero_for_confident_right_answers_and_both_losses_have_gradients()
    {
        var target = tensor(new long[] { 0, 1, 1, 0 }, new long[] { 1, 2, 2 });
        var right = nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).to_type(ScalarType.Float32) * 40 - 20;
        Assert.True(new LovaszSoftmaxLoss().Compute(right, target).item<float>() < 1e-6);
        var logits = randn(2, 3, 5, 5).requires_grad_();
        var labels = randint(0, 3, new long[] { 2, 5, 5 });
        foreach (PixelLoss loss in new PixelLoss[] { new FocalLoss(), new LovaszSoftmaxLoss() })
        {
            logits.grad?.zero_();
            loss.Compute(logits, labels).backward();
            Assert.True(logits.grad!.abs().sum().item<float>() > 0, loss.GetType().Name);
        }
    }
}
