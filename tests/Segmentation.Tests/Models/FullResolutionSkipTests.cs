using System.Text.Json;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Tests.Models;

/// <summary>smp's decoder with a full-resolution skip (<see cref="SmpUNetDecoderOptions.FullResolutionChannels"/>): its
/// weights, that the last block uses it, what it leaves unchanged, and where it is refused.</summary>
public class FullResolutionSkipTests
{
    private static ModelDescription ResNet(int skip, int inChannels = 3) => ModelDescription.For("resnet18", classes: 3,
        inChannels: inChannels) with
    {
        Decoder = ModelPart.Of("smp-unet", new SmpUNetDecoderOptions { FullResolutionChannels = skip }), Seed = 7,
    };

    private static Checkpoint CheckpointOf(SegmentationModel model) => new()
    {
        Model = model.Description,
        Dataset = new DatasetDescription { Classes = 3, ClassNames = new[] { "a", "b", "c" },
            ClassColors = DatasetDescription.Defaults(3).Colors },
        Preprocessing = new Preprocessing(Normalization.ImageNet, null), TrainerSettings = new TrainerOptions().ToJson(),
        State = new TrainingState(), Weights = Checkpoint.SerializeWeights(model),
    };

    [Fact]
    public void Without_it_the_description_and_weights_are_smps_with_it_a_stem_feeds_the_last_block()
    {
        using var plain = new SegmentationModel(ResNet(0));
        using var skip = new SegmentationModel(ResNet(16, inChannels: 1));
        Assert.DoesNotContain("FullResolutionChannels", JsonSerializer.Serialize(plain.Description, Checkpoint.Json));
        Assert.Contains("\"FullResolutionChannels\":16", JsonSerializer.Serialize(skip.Description, Checkpoint.Json));
        var a = plain.state_dict();
        var b = skip.state_dict();
        Assert.DoesNotContain(a.Keys, k => k.StartsWith("decoder.stem.", StringComparison.Ordinal));
        Assert.Equal(new long[] { 16, 1, 3, 3 }, b["decoder.stem.0.0.weight"].shape);
        Assert.Equal(new long[] { 16, 16, 3, 3 }, b["decoder.stem.1.0.weight"].shape);
        Assert.Equal(new long[] { 16, 32, 3, 3 }, a["decoder.blocks.4.conv1.0.weight"].shape); // smp: 32 from below
        Assert.Equal(new long[] { 16, 48, 3, 3 }, b["decoder.blocks.4.conv1.0.weight"].shape); // + 16 from the stem
        Assert.Equal(a.Keys.Count + 12, b.Keys.Count); // two convolutions, two batch norms (weight, bias, 3 statistics)
    }

    [Theory]
    [InlineData(64, 64)]
    [InlineData(67, 93)] // odd sizes: the upsampled features are aligned to the stem's map
    public void The_last_block_sees_the_stem_and_gradients_reach_it(int height, int width)
    {
        using var scope = NewDisposeScope();
        using var model = new SegmentationModel(ResNet(8));
        model.train();
        var x = randn(new long[] { 2, 3, height, width }, generator: new Generator(3));
        var logits = model.Logits(x);
        Assert.Equal(new long[] { 2, 3, height, width }, logits.shape);
        logits.square().mean().backward();
        var stem = model.named_parameters().Where(p => p.name.StartsWith("decoder.stem.", StringComparison.Ordinal))
            .ToList();
        Assert.Equal(6, stem.Count); // two convolutions (no bias under batch norm) and two batch norms' weight and bias
        Assert.All(stem, p => Assert.True(p.parameter.grad is { } g && g.abs().sum().item<float>() > 0,
            $"{p.name} has no gradient"));

        model.eval();
        Tensor before, after;
        using (no_grad())
        {
            before = model.Logits(x);
            model.state_dict()["decoder.stem.0.0.weight"].mul_(-1);
            after = model.Logits(x);
        }
        Assert.True((before - after).abs().max().item<float>() > 1e-3, "the stem does not change the logits");
    }

    [Fact]
    public void A_checkpoint_round_trips_and_smps_layout_refuses_it()
    {
        using var scope = NewDisposeScope();
        using var dir = new TempDir();
        using var model = new SegmentationModel(ResNet(8));
        model.eval();
        var checkpoint = CheckpointOf(model);
        checkpoint.Save(dir["m.ckpt"]);
        var back = Checkpoint.Load(dir["m.ckpt"]);
        Assert.Equal(model.Description, back.Model);
        using var loaded = back.CreateModel();
        loaded.eval();
        var x = randn(new long[] { 1, 3, 64, 64 }, generator: new Generator(4));
        using (no_grad()) Assert.True(model.Logits(x).eq(loaded.Logits(x)).all().item<bool>());

        var e = Assert.Throws<OptionsException>(() => PyTorchInterop.Export(checkpoint, dir["smp.pth"],
            PyTorchLayout.Smp));
        Assert.Contains("full-resolution skip", e.Message);
        Assert.False(File.Exists(dir["smp.pth"]));
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(65537)]
    public void Out_of_range_channels_are_refused_by_name(int channels)
    {
        var e = Assert.Throws<OptionsException>(() => new SegmentationModel(ResNet(channels)));
        Assert.Contains($"FullResolutionChannels {channels}", e.Message);
    }
}
