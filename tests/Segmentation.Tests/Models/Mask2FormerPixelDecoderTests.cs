using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using static TorchSharp.torch;

namespace Segmentation.Tests.Models;

/// <summary>
/// Mask2Former's pixel decoder against a PyTorch reference written from transformers' <c>modeling_mask2former.py</c>
/// (<c>tools/interop/mask2former_reference.py --fixture tests/fixtures/mask2former</c>), stage by stage, each stage fed
/// the reference's own inputs; and in a model: checked against float64, exported to ONNX and run by ONNX Runtime.
/// </summary>
public class Mask2FormerPixelDecoderTests
{
    private static bool Registered => Mask2FormerTestParts.Registered;

    private static readonly Mask2FormerPixelDecoderOptions Small = new()
    {
        FeatureSize = 64, MaskFeatureSize = 32, Heads = 8, Layers = 2, FeedForward = 128,
    };

    private static Mask2FormerPixelDecoder Reference()
    {
        var stages = new[] { new EncoderStage(8, 4), new EncoderStage(16, 8), new EncoderStage(32, 16),
            new EncoderStage(64, 32) };
        var decoder = new Mask2FormerPixelDecoder(stages, Small);
        StateDicts.Load(decoder, StateDicts.ReadFile(Mask2FormerFixtures.File("pixel_decoder.pth")), "the reference's pixel decoder");
        decoder.eval();
        return decoder;
    }

    [Fact]
    public void Keys_and_shapes_are_transformers_in_its_order()
    {
        using var decoder = Reference();
        var expected = System.IO.File.ReadAllLines(Mask2FormerFixtures.File("pixel_decoder_keys.txt"))
            .Where(l => l.Length > 0);
        Assert.Equal(expected, KeyFixtures.Lines(decoder.state_dict(), ""));
    }

    [Fact]
    public void Every_stage_equals_the_transformers_reference_fed_its_inputs()
    {
        using var decoder = Reference();
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var io = StateDicts.ReadFile(Mask2FormerFixtures.File("pixel_decoder_io.pth"));
        var features = Enumerable.Range(0, 4).Select(i => io[$"feature{i}"]).ToArray();
        var projected = decoder.Project(features);
        for (int l = 0; l < 3; l++)
            Mask2FormerFixtures.Near(io[$"position{l}"], new SinePositionOp(32).Run(projected[l]), $"position embedding of level {l}");
        var (positions, points) = decoder.Embed(projected);
        var tokens = io["tokens"];
        Mask2FormerFixtures.Near(tokens, LayerOps.Concat(projected.Select(LayerOps.ToTokens).ToArray()), "projected tokens");
        for (int i = 0; i < 2; i++)
        {
            var next = io[$"encoder{i}"];
            Mask2FormerFixtures.Near(next, decoder.EncoderLayer(i).forward(tokens, positions, points, projected), $"deformable layer {i}");
            tokens = next;
        }
        var outputs = decoder.Decode(features);
        Mask2FormerFixtures.Near(io["mask_features"], outputs[0], "mask features");
        for (int i = 0; i < 3; i++) Mask2FormerFixtures.Near(io[$"multi_scale{i}"], outputs[1 + i], $"multi-scale map {i}");
        Assert.Equal(new[] { ("mask_features", 32, 4), ("multi_scale_0", 64, 32), ("multi_scale_1", 64, 16),
            ("multi_scale_2", 64, 8) }, decoder.Maps.Select(m => (m.Name, m.Channels, m.Stride)));
    }

    [Fact]
    public void In_a_model_every_leaf_passes_the_float64_check_and_onnx_runtime_agrees()
    {
        Assert.True(Registered);
        using var model = new SegmentationModel(new ModelDescription
        {
            Encoder = new ModelPart("resnet18"), Classes = 3, Seed = 3,
            Decoder = ModelPart.Of(Mask2FormerPixelDecoder.Name, Small with { Layers = 1 }),
            Head = new ModelPart("test-m2f-head"),
        });
        Assert.Empty(model.NonLeafModules());
        ConformanceTests.StateDictRoundTrip(model);
        ConformanceTests.FloatCheckCoversEveryLeafInBf16(model);
        ConformanceTests.OnnxRuntimeAgrees(model);
    }
}

/// <summary>A test's head on the pixel decoder (under a test- name, which the conformance test leaves out).</summary>
internal static class Mask2FormerTestParts
{
    public static readonly bool Registered = Register();

    private static bool Register()
    {
        ModelRegistry.AddHead<ToyHeadOptions>("test-m2f-head",
            (c, _) => new ToyHead(c.InChannels, c.Classes, c.EncoderMaps[^1]), "a test's head");
        return true;
    }
}

/// <summary>The reference's fixtures (<c>tests/fixtures/mask2former</c>) and the comparison every stage uses.</summary>
internal static class Mask2FormerFixtures
{
    public static string File(string name)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !System.IO.File.Exists(Path.Combine(dir.FullName, "Segmentation.sln")))
            dir = dir.Parent;
        return Path.Combine(dir!.FullName, "tests", "fixtures", "mask2former", name);
    }

    /// <summary>Within 1e-4 of the expected tensor's largest magnitude.</summary>
    public static void Near(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double scale = expected.abs().max().item<float>();
        double error = (actual - expected).abs().max().item<float>();
        Assert.True(error <= 1e-4 * scale, $"{what}: max difference {error:E2}, largest value {scale:E2}");
    }
}
