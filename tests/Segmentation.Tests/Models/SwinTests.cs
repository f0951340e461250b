using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Encoders;
using static TorchSharp.torch;

namespace Segmentation.Tests.Models;

/// <summary>
/// The Swin Transformer encoder against a PyTorch reference written from transformers' <c>modeling_swin.py</c>
/// (<c>tools/interop/swin_reference.py --fixture tests/fixtures/swin</c>): a small Swin with random, perturbed weights
/// saved as a Hugging Face folder, an input whose size pads at every step, and the four stage maps it gave.
/// </summary>
public class SwinTests
{
    private static string Fixture(params string[] parts)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Segmentation.sln"))) dir = dir.Parent;
        return Path.Combine(new[] { dir!.FullName, "tests", "fixtures", "swin" }.Concat(parts).ToArray());
    }

    /// <summary>The reference's configuration: width 8, blocks 2-2-2-2, heads 1-2-2-4, window 4.</summary>
    private static Swin Small(int window = 4) =>
        new(new SwinShape(8, new[] { 2, 2, 2, 2 }, new[] { 1, 2, 2, 4 }, window), 3,
            new SwinOptions { DropPathRate = 0 });

    [Fact]
    public void Every_stage_equals_the_transformers_reference_after_loading_its_hugging_face_folder()
    {
        using var swin = Small();
        int loaded = swin.LoadWeights(Fixture("hf"), Normalization.ImageNet);
        using var scope = NewDisposeScope();
        var io = StateDicts.ReadFile(Fixture("io.pth"));
        Assert.Equal(StateDicts.ReadFile(Fixture("hf", "pytorch_model.bin")).Count, loaded);
        swin.eval();
        using var _ = no_grad();
        var maps = swin.forward(io["input"]); // 2 x 3 x 45 x 61: padded at the embedding, the windows and merging
        for (int i = 1; i <= 4; i++)
        {
            var expected = io[$"stage{i}"];
            Assert.Equal(expected.shape, maps[i].shape);
            double scale = expected.abs().max().item<float>();
            double error = (maps[i] - expected).abs().max().item<float>();
            Assert.True(error <= 1e-4 * scale, $"stage {i}: max difference {error:E2}, largest value {scale:E2}");
        }
    }

    [Fact]
    public void Keys_shapes_and_order_are_transformers_and_the_registered_counts_equal_its()
    {
        using var swin = Small();
        var reference = File.ReadAllLines(Fixture("keys.txt")).Where(l => l.Length > 0).ToList();
        static bool IsIndex(string line) => line.Contains("relative_position_index", StringComparison.Ordinal);
        // the parameters in transformers' order; the index buffers too (TorchSharp lists buffers after parameters)
        Assert.Equal(reference.Where(l => !IsIndex(l)), swin.named_parameters().Select(p =>
            $"{p.name} {string.Join("x", p.parameter.shape)}"));
        Assert.Equal(reference.OrderBy(l => l, StringComparer.Ordinal), KeyFixtures.Lines(swin.state_dict(), "")
            .OrderBy(l => l, StringComparer.Ordinal));
        Assert.Equal(8, reference.Count(IsIndex));
        // transformers' SwinBackbone with four stages out (/usr/bin/python3 tools/interop/swin_reference.py --counts)
        var expected = new Dictionary<string, long>
        {
            ["swin-tiny"] = 27_520_698, ["swin-small"] = 48_838_602, ["swin-base"] = 86_880_376,
        };
        foreach (var (name, count) in expected)
        {
            using var model = new SegmentationModel(new ModelDescription
            {
                Encoder = new ModelPart(name), Classes = 2, Seed = 1,
            });
            Assert.Equal(count, model.Encoder.parameters().Sum(p => p.numel()));
            Assert.Equal(new[] { 4, 8, 16, 32 }, model.Encoder.Stages.Select(s => s.Stride));
        }
    }

    [Fact]
    public void A_checkpoint_for_another_window_is_refused_naming_the_table_and_both_shapes()
    {
        using var swin = Small(window: 7);
        var e = Assert.Throws<SegmentationException>(() => swin.LoadWeights(Fixture("hf"), Normalization.ImageNet));
        Assert.Contains("encoder.layers.0.blocks.0.attention.self.relative_position_bias_table is [49, 1] (window 4); "
            + "this encoder's is [169, 1] (window 7)", e.Message);
        Assert.Contains("pytorch_model.bin", e.Message);
    }

    [Fact]
    public void A_classifier_checkpoint_loads_under_its_swin_prefix_and_keeps_the_stage_norms()
    {
        using var d = new TempDir();
        var reference = StateDicts.ReadFile(Fixture("hf", "pytorch_model.bin"));
        // SwinForImageClassification's layout: swin.*, a final layer norm and a classifier, no stage norms
        var classifier = reference.Where(kv => !kv.Key.StartsWith("hidden_states_norms.", StringComparison.Ordinal))
            .ToDictionary(kv => "swin." + kv.Key, kv => kv.Value);
        classifier["swin.layernorm.weight"] = ones(64);
        classifier["classifier.weight"] = zeros(1000, 64);
        var file = d["model.safetensors"];
        using (var stream = File.Create(file)) TorchSharp.PyBridge.Safetensors.SaveStateDict(stream, classifier);
        using var swin = Small();
        Assert.Equal(classifier.Count - 2, swin.LoadWeights(d.Path, Normalization.ImageNet));
        var state = swin.state_dict();
        Assert.True(state["encoder.layers.2.blocks.1.attention.self.relative_position_bias_table"]
            .equal(reference["encoder.layers.2.blocks.1.attention.self.relative_position_bias_table"]).all()
            .item<bool>());
        Assert.True(state["hidden_states_norms.stage3.weight"].equal(ones(32)).all().item<bool>());
    }
}
