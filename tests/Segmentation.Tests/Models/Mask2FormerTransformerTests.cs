using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Heads;
using Segmentation.Models.Parts;
using static TorchSharp.torch;

namespace Segmentation.Tests.Models;

/// <summary>
/// Mask2Former's transformer decoder against a PyTorch reference written from transformers'
/// <c>modeling_mask2former.py</c> (<c>tools/interop/mask2former_reference.py --fixture tests/fixtures/mask2former</c>):
/// masked attention turns differences of 1e-6 into flipped mask bits that cascade through the layers, so each layer is
/// fed the reference's own queries and attention mask, and its output, its prediction and the mask it makes for the next
/// layer are compared; then the head in a model is checked against float64 and run by ONNX Runtime.
/// </summary>
public class Mask2FormerTransformerTests
{
    private static readonly Mask2FormerHeadOptions Small = new() { Queries = 6, Layers = 3, Heads = 4, FeedForward = 64 };

    private static Mask2FormerHead Reference()
    {
        var maps = new[] { new FeatureMap("mask_features", 32, 4), new FeatureMap("multi_scale_0", 32, 32),
            new FeatureMap("multi_scale_1", 32, 16), new FeatureMap("multi_scale_2", 32, 8) };
        var head = new Mask2FormerHead(maps, 3, Small);
        StateDicts.Load(head, StateDicts.ReadFile(Mask2FormerFixtures.File("transformer.pth")), "the reference's transformer module");
        head.eval();
        return head;
    }

    /// <summary>The reference's mask (N heads x Q x S, 1 where blocked, the same for every head) as this decoder's
    /// additive N x 1 x Q x S.</summary>
    private static Tensor Additive(Tensor blocked, int heads)
    {
        var perImage = blocked.reshape(-1, heads, blocked.shape[1], blocked.shape[2]).select(1, 0);
        return zeros_like(perImage).masked_fill(perImage.gt(0.5), MaskedAttentionOp.BlockedValue).unsqueeze(1);
    }

    private static void SameMask(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        long differ = expected.ne(actual).sum().item<long>();
        Assert.True(differ == 0, $"{what}: {differ} of {expected.numel()} pairs differ");
    }

    [Fact]
    public void Keys_and_shapes_are_transformers_in_its_order()
    {
        using var head = Reference();
        var expected = System.IO.File.ReadAllLines(Mask2FormerFixtures.File("transformer_keys.txt"))
            .Where(l => l.Length > 0);
        Assert.Equal(expected, KeyFixtures.Lines(head.state_dict(), ""));
    }

    [Fact]
    public void Every_layer_fed_the_references_inputs_gives_its_queries_predictions_and_next_mask()
    {
        using var head = Reference();
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var io = StateDicts.ReadFile(Mask2FormerFixtures.File("transformer_io.pth"));
        var levels = Enumerable.Range(0, 3).Select(i => io[$"multi_scale{i}"]).ToArray();
        var maskFeatures = io["mask_features"];
        var transformer = head.Transformer;
        var (tokens, positions) = transformer.LevelTokens(levels);
        var (queryPositions, queryFeatures) = transformer.Queries(maskFeatures);
        Mask2FormerFixtures.Near(io["hidden0"], queryFeatures, "the learned queries");
        var (first, firstMask) = transformer.Decoder.Predict(queryFeatures, maskFeatures, levels[0], head.ClassPredictor);
        Mask2FormerFixtures.Near(io["masks0"], first.Masks, "masks before the first layer");
        Mask2FormerFixtures.Near(io["classes0"], first.Classes, "classes before the first layer");
        SameMask(Additive(io["attention0"], 4), firstMask, "the first layer's mask");
        for (int i = 0; i < 3; i++)
        {
            var mask = Additive(io[$"attention{i}"], 4);
            var hidden = transformer.Decoder.Layer(i).forward(io[$"hidden{i}"], tokens[i % 3], positions[i % 3],
                queryPositions, mask);
            Mask2FormerFixtures.Near(io[$"hidden{i + 1}"], hidden, $"layer {i}'s queries");
            var (prediction, next) = transformer.Decoder.Predict(io[$"hidden{i + 1}"], maskFeatures,
                levels[(i + 1) % 3], head.ClassPredictor);
            Mask2FormerFixtures.Near(io[$"masks{i + 1}"], prediction.Masks, $"layer {i}'s masks");
            Mask2FormerFixtures.Near(io[$"classes{i + 1}"], prediction.Classes, $"layer {i}'s classes");
            if (i < 2)
                SameMask(Additive(io[$"attention{i + 1}"], 4), next, $"layer {i + 1}'s mask");
        }
        // end to end the cascade may flip a bit where a mask logit is ~0; the last masks still agree in sign
        var all = head.Predictions(new[] { maskFeatures }.Concat(levels).ToArray());
        Assert.Equal(4, all.Count);
        double agree = all[^1].Masks.gt(0).eq(io["masks3"].gt(0)).to(ScalarType.Float32).mean().item<float>();
        Assert.True(agree >= 0.99, $"end to end, the last masks agree in sign on {agree:P2}");
    }

    [Fact]
    public void A_swin_tiny_mask2former_counts_the_parameters_of_transformers_default_config()
    {
        // transformers' Mask2Former (feature, mask and hidden 256, 6 + 9 layers, 100 queries) on SwinBackbone, COCO
        // panoptic's 133 classes: /usr/bin/python3 tools/interop/mask2former_reference.py --counts
        using var model = new SegmentationModel(new ModelDescription
        {
            Architecture = "mask2former", Encoder = new ModelPart("swin-tiny"), Classes = 133, Seed = 1,
        });
        Assert.Equal(47_435_264, model.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void In_a_model_every_leaf_passes_the_float64_check_and_onnx_runtime_agrees()
    {
        Assert.True(Mask2FormerTestParts.Registered);
        using var model = new SegmentationModel(new ModelDescription
        {
            Encoder = new ModelPart("resnet18"), Classes = 3, Seed = 4,
            Decoder = ModelPart.Of(Mask2FormerPixelDecoder.Name, new Mask2FormerPixelDecoderOptions
            {
                FeatureSize = 32, MaskFeatureSize = 32, Heads = 4, Layers = 1, FeedForward = 64,
            }),
            Head = ModelPart.Of("mask2former", Small),
        });
        Assert.Empty(model.NonLeafModules());
        ConformanceTests.StateDictRoundTrip(model);
        ConformanceTests.FloatCheckCoversEveryLeafInBf16(model);
        ConformanceTests.OnnxRuntimeAgrees(model);
    }
}
