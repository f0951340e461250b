using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Tests.Models;

public class UNetTests
{
    private static SegmentationModel Small(ModelDescription? o = null) => new(o ?? ModelDescription.UNet(inChannels: 3, classes: 4, baseChannels: 4, depth: 3));

    [Theory]
    [InlineData(253, 317, 1, 3, UpsamplingMode.Transposed, NormLayer.Batch)]
    [InlineData(16, 16, 3, 2, UpsamplingMode.Bilinear, NormLayer.Group)]
    [InlineData(64, 33, 5, 7, UpsamplingMode.Transposed, NormLayer.None)]
    [InlineData(37, 41, 3, 1, UpsamplingMode.Bilinear, NormLayer.Batch)]
    public void Logits_have_the_input_size_and_one_channel_per_class(int h, int w, int inChannels, int classes, UpsamplingMode up, NormLayer norm)
    {
        using var scope = NewDisposeScope();
        using var model = new SegmentationModel(ModelDescription.UNet(inChannels: inChannels, classes: classes, baseChannels: 4, depth: 4, upsampling: up, norm: norm));
        model.eval();
        var logits = model.Logits(randn(2, inChannels, h, w));
        Assert.Equal(new long[] { 2, classes, h, w }, logits.shape);
    }

    [Fact]
    public void Canonical_configuration_has_the_parameter_count_of_the_PyTorch_UNet()
    {
        using var model = new SegmentationModel(ModelDescription.UNet(inChannels: 3, classes: 2, baseChannels: 64, depth: 4));
        Assert.Equal(31_037_698L, model.ParameterCount());
    }

    [Fact]
    public void State_dict_keys_name_the_blocks()
    {
        using var model = Small();
        var keys = model.state_dict().Keys.ToList();
        Assert.Contains("encoder.stem.block.conv1.weight", keys);
        Assert.Contains("encoder.blocks.2.conv.block.norm2.running_mean", keys);
        Assert.Contains("decoder.blocks.0.up.weight", keys);
        Assert.Contains("head.bias", keys);
        Assert.All(keys, k => Assert.Equal(k, SegmentationModel.LegacyKey(k))); // today's keys are left alone by the 0.1 mapping
    }

    [Fact]
    public void Input_smaller_than_two_to_the_depth_is_refused_with_the_minimum()
    {
        using var model = Small();
        using var x = randn(1, 3, 7, 20);
        var e = Assert.Throws<ArgumentException>(() => model.forward(x));
        Assert.Contains("minimum is 8x8", e.Message);
    }

    [Fact]
    public void Wrong_channel_count_is_refused()
    {
        using var model = Small();
        using var x = randn(1, 1, 16, 16);
        var e = Assert.Throws<ArgumentException>(() => model.forward(x));
        Assert.Contains("3 input channel(s); the batch has 1", e.Message);
    }

    [Theory]
    [InlineData(0, 2, 64, 4, 0.0, "InChannels is 0")]
    [InlineData(3, 0, 64, 4, 0.0, "Classes is 0")]
    [InlineData(3, 2, 64, 0, 0.0, "Depth is 0")]
    [InlineData(3, 2, 64, 4, 1.0, "Dropout is 1")]
    public void Invalid_options_are_refused_with_the_value(int inC, int classes, int width, int depth, double dropout, string expected)
    {
        var e = Assert.Throws<OptionsException>(() => new SegmentationModel(ModelDescription.UNet(inChannels: inC, classes: classes, baseChannels: width, depth: depth, dropout: dropout)));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Backward_gives_finite_gradients_to_every_parameter()
    {
        using var scope = NewDisposeScope();
        random.manual_seed(1);
        using var model = Small(ModelDescription.UNet(inChannels: 3, classes: 4, baseChannels: 4, depth: 3, dropout: 0.2));
        var logits = model.Logits(randn(2, 3, 24, 24));
        var loss = nn.functional.cross_entropy(logits, randint(0, 4, new long[] { 2, 24, 24 }));
        loss.backward();
        foreach (var (name, p) in model.named_parameters())
        {
            Assert.True(p.grad is not null, $"{name} has no gradient");
            Assert.True(p.grad!.isfinite().all().item<bool>(), $"{name} has a non-finite gradient");
            Assert.True(p.grad.abs().sum().item<float>() > 0, $"{name} has an all-zero gradient");
        }
    }

    [Fact]
    public void A_few_optimizer_steps_on_one_batch_lower_the_loss()
    {
        random.manual_seed(2);
        using var model = Small();
        using var x = randn(2, 3, 32, 32);
        using var y = randint(0, 4, new long[] { 2, 32, 32 });
        using var opt = optim.Adam(model.parameters(), 1e-2);
        float first = 0, last = 0;
        for (int i = 0; i < 30; i++)
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            var loss = nn.functional.cross_entropy(model.Logits(x), y);
            loss.backward();
            opt.step();
            if (i == 0) first = loss.item<float>();
            last = loss.item<float>();
        }
        Assert.True(last < first * 0.7, $"loss went from {first} to {last}");
    }

    [Fact]
    public void A_training_step_in_a_dispose_scope_leaves_only_parameters_gradients_and_optimizer_state()
    {
        random.manual_seed(3);
        using var model = Small();
        using var opt = optim.AdamW(model.parameters(), 1e-3);
        using var x = randn(2, 3, 16, 16);
        using var y = randint(0, 4, new long[] { 2, 16, 16 });
        void Step()
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            var loss = nn.functional.cross_entropy(model.Logits(x), y);
            loss.backward();
            opt.step();
        }
        Step(); // creates gradients and optimizer state
        Step();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++) Step();
        long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Assert.Equal(before, after);
    }
}
