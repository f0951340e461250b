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
