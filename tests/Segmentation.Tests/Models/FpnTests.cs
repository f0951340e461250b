using Segmentation.Models;
using Segmentation.Models.Decoders;
using static TorchSharp.torch;

namespace Segmentation.Tests.Models;

/// <summary>segmentation_models.pytorch's FPN, registered as one decoder file: smp's keys and shapes, smp's counts,
/// any input size, its options checked. (The conformance test covers its leaves, float64 check, ONNX parity.)</summary>
public class FpnTests
{
    [Fact]
    public void Decoder_and_head_have_smps_keys_and_shapes()
    {
        using var model = new SegmentationModel(new ModelDescription
        {
            Architecture = "fpn", Encoder = new ModelPart("resnet34"), Classes = 4, Seed = 1,
        });
        var ours = KeyFixtures.Lines(model.state_dict().Where(kv => !kv.Key.StartsWith("encoder.",
            StringComparison.Ordinal)), "");
        Assert.Equal(KeyFixtures.Read("smp-fpn-resnet34-4-classes-decoder-and-head.txt"), ours);
        // smp's FPN(resnet34, classes=1) rebuilt on torchvision (tools/interop/fpn_convnext_reference.py)
        using var one = new SegmentationModel(new ModelDescription
        {
            Architecture = "fpn", Encoder = new ModelPart("resnet34"), Classes = 1, Seed = 1,
        });
        Assert.Equal(23_155_393, one.ParameterCount());
    }

    [Theory]
    [InlineData(64, 64)]
    [InlineData(70, 97)] // not a multiple of 32: smp refuses it; here each level is resized to the next
    public void Logits_come_at_the_input_size(int height, int width)
    {
        using var model = new SegmentationModel(new ModelDescription
        {
            Architecture = "fpn", Encoder = new ModelPart("resnet18"), Classes = 3, Seed = 1,
        });
        model.eval();
        using var scope = NewDisposeScope();
        using var grad = no_grad();
        var logits = model.Logits(randn(2, 3, height, width));
        Assert.Equal(new long[] { 2, 3, height, width }, logits.shape);
        Assert.False(logits.isnan().any().item<bool>());
    }

    [Fact]
    public void Options_out_of_range_are_refused_by_name()
    {
        foreach (var (o, word) in new (FpnDecoderOptions, string)[]
        {
            (new() { SegmentationChannels = 100 }, "SegmentationChannels"),
            (new() { PyramidChannels = 0 }, "PyramidChannels"),
            (new() { Dropout = 1 }, "Dropout"),
        })
            Assert.Contains(word, Assert.Throws<OptionsException>(o.Validate).Message);
        var tooShallow = new ModelDescription
        {
            Architecture = "fpn", Encoder = ModelPart.Of("unet", new Segmentation.Models.Encoders.UNetEncoderOptions
                { Depth = 2, BaseChannels = 8 }), Classes = 2,
        };
        Assert.Contains("four deepest", Assert.ThrowsAny<Exception>(() => new SegmentationModel(tooShallow)).Message);
    }
}
