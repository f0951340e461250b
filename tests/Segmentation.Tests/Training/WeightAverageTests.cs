using Segmentation.Models;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Tests.Training;

/// <summary>The exponential moving average of the weights, against its definition computed in float64.</summary>
public class WeightAverageTests
{
    private static SegmentationModel Model() => new(ModelDescription.UNet(classes: 2, baseChannels: 4, depth: 1,
        norm: Segmentation.Models.Layers.NormLayer.Batch, seed: 3));

    private static double[][] Values(SegmentationModel m) => m.state_dict().Values
        .Select(t => t.to_type(ScalarType.Float64).cpu().data<double>().ToArray()).ToArray();

    [Fact]
    public void The_average_follows_its_definition_with_timms_warm_up_and_swaps_back_exactly()
    {
        using var model = Model();
        using var average = new WeightAverage(model, decay: 0.9);
        Assert.Equal(2.0 / 11, average.DecayAt(1), 12);
        Assert.Equal(0.9, average.DecayAt(1000), 12);
        var expected = Values(model);
        for (long step = 1; step <= 30; step++)
        {
            // new "trained" weights: every floating-point tensor moved at random, the step counts increased
            using (no_grad())
                foreach (var t in model.state_dict().Values)
                {
                    if (t.is_floating_point()) t.add_(randn_like(t) * 0.1);
                    else t.add_(1);
                }
            average.Update(step);
            double d = Math.Min(0.9, (1.0 + step) / (10.0 + step));
            var now = Values(model);
            for (int i = 0; i < expected.Length; i++)
                for (int j = 0; j < expected[i].Length; j++)
                    expected[i][j] = model.state_dict().Values.ElementAt(i).is_floating_point()
                        ? d * expected[i][j] + (1 - d) * now[i][j] : now[i][j];
        }
        var trained = Values(model);
        average.Swap();
        var swapped = Values(model);
        for (int i = 0; i < expected.Length; i++)
            for (int j = 0; j < expected[i].Length; j++)
                Assert.True(Math.Abs(expected[i][j] - swapped[i][j]) <= 1e-5 * (1 + Math.Abs(expected[i][j])),
                    $"tensor {i}, value {j}: {swapped[i][j]} for {expected[i][j]}");
        Assert.NotEqual(trained.SelectMany(v => v), swapped.SelectMany(v => v));
        average.Swap();
        Assert.Equal(trained.SelectMany(v => v), Values(model).SelectMany(v => v)); // bit for bit
        Assert.Equal(7, average.With(() => 7));
        Assert.Equal(trained.SelectMany(v => v), Values(model).SelectMany(v => v));
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(1.0)]
    [InlineData(double.NaN)]
    public void A_decay_outside_zero_to_one_is_refused(double decay)
    {
        using var model = Model();
        Assert.Contains("between 0 and 1", Assert.Throws<OptionsException>(() => new WeightAverage(model, decay))
            .Message);
        Assert.Contains("between 0 and 1", Assert.Throws<OptionsException>(() =>
            new TrainerOptions { Optimizer = new() { WeightAverageDecay = decay } }.Validate()).Message);
    }
}
