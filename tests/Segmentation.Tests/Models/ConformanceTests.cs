using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Layers;
using Segmentation.Training;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace Segmentation.Tests.Models;

/// <summary>
/// One conformance test over every registered part and architecture: every encoder in its own architecture, and each
/// architecture with an encoder from the other family, so that every registered encoder, decoder and head is built.
/// Each model must keep its parameters in leaf layers, round-trip its state dict bit for bit, have its declared
/// strides and channels measured so, pass the float64 check of every leaf in bf16 where the CPU has it natively
/// (each within its tolerance, every leaf with parameters or several inputs checked), and give TorchSharp's logits
/// through ONNX Runtime. A part added
/// to the registry is in this test without a line here.
/// </summary>
public class ConformanceTests
{
    /// <summary>The variants of a family differ only in widths and depths: the numerical checks (float64, ONNX) run on
    /// the smallest of each, the structural ones on all.</summary>
    private static readonly HashSet<string> StructureOnly = new()
    {
        "mit-b2", "mit-b3", "mit-b4", "mit-b5", "swin-small", "swin-base", "swin-large",
    };

    /// <summary>The largest variants (82 and 195 million parameters) skip the state-dict round trip too: a second copy
    /// and two serialisations of up to 800 MB take 20 s of the suite for the code path their family's smallest
    /// variant already takes.</summary>
    private static readonly HashSet<string> Largest = new() { "mit-b5", "swin-large" };

    public static IEnumerable<object[]> Cases()
    {
        var encoders = ModelRegistry.Parts(PartKind.Encoder)
            .Where(p => !p.Name.StartsWith("test-", StringComparison.Ordinal))
            .ToList();
        foreach (var e in encoders) yield return new object[] { e.DefaultArchitecture, e.Name };
        // each architecture with an encoder of another family: U-Net on a Mix Transformer, the others on a ResNet
        yield return new object[] { "unet", "mit-b0" };
        foreach (var (name, _) in ModelRegistry.ArchitectureNames().Where(a => a.Name != "unet"))
            yield return new object[] { name, "resnet18" };
    }

    [Fact]
    public void Every_registered_part_is_built_by_some_case()
    {
        var built = new HashSet<string>();
        foreach (var c in Cases())
        {
            var d = new ModelDescription { Architecture = (string)c[0], Encoder = new ModelPart((string)c[1]),
                Classes = 3 }
                .Resolve();
            built.Add($"encoder {d.Encoder.Name}"); built.Add($"decoder {d.Decoder!.Name}"); built.Add($"head {d.Head!.Name}");
        }
        foreach (var kind in new[] { PartKind.Encoder, PartKind.Decoder, PartKind.Head })
            foreach (var part in ModelRegistry.Parts(kind)
                .Where(p => !p.Name.StartsWith("test-", StringComparison.Ordinal)))
                Assert.Contains($"{kind.ToString().ToLowerInvariant()} {part.Name}", built);
        Assert.All(ModelRegistry.ArchitectureNames(), a => Assert.Contains(Cases(), c => (string)c[0] == a.Name));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_registered_model_conforms(string architecture, string encoder)
    {
        var description = new ModelDescription
        {
            Architecture = architecture, Encoder = new ModelPart(encoder), Classes = 3, Seed = 1,
        };
        using var model = new SegmentationModel(description);
        Assert.Empty(model.NonLeafModules()); // parameters only in leaf layers
        if (!Largest.Contains(encoder)) StateDictRoundTrip(model);
        StridesAsDeclared(model);
        if (StructureOnly.Contains(encoder)) return;
        FloatCheckCoversEveryLeafInBf16(model);
        OnnxRuntimeAgrees(model);
    }

    internal static void StateDictRoundTrip(SegmentationModel model)
    {
        var bytes = Checkpoint.SerializeWeights(model);
        using var other = new SegmentationModel(model.Description with { Seed = 2 });
        using (NewDisposeScope()) StateDicts.Load(other, StateDicts.ReadTorchSharp(bytes), "the round trip");
        var a = model.state_dict();
        var b = other.state_dict();
        Assert.Equal(a.Keys.OrderBy(k => k), b.Keys.OrderBy(k => k));
        foreach (var (key, value) in a) Assert.True(value.equal(b[key]).all().item<bool>(),
            $"{key} differs after the round trip");
        Assert.Equal(bytes, Checkpoint.SerializeWeights(other));
    }

    internal static void StridesAsDeclared(SegmentationModel model)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        model.eval();
        const int Size = 64;
        var features = model.Encoder.call(randn(1, 3, Size, Size, generator: new Generator(3)));
        var stages = model.Encoder.Stages;
        Assert.Equal(stages.Count + 1, features.Length); // the input first, as smp's encoders give it
        Assert.Equal(new long[] { 1, 3, Size, Size }, features[0].shape);
        for (int i = 0; i < stages.Count; i++)
        {
            var f = features[i + 1];
            Assert.True((stages[i].Channels, Size / stages[i].Stride, Size / stages[i].Stride)
                == (f.shape[1], f.shape[2], f.shape[3]), $"stage {i}: declared {stages[i]}, measured "
                + $"{string.Join("x", f.shape)}");
        }
    }

    /// <summary>bf16 where this CPU computes it natively; where it is emulated (AVX2 only) a bf16 check of every
    /// registered model would take minutes, so there the check runs in float32 (its own, tighter tolerance) and the
    /// bf16 tolerance is left to the layer tests.</summary>
    private static readonly Segmentation.Models.Precision CheckedPrecision =
        AutoPrecision.NoNativeBf16(AutoPrecision.CpuFlags()) is null ? Segmentation.Models.Precision.BFloat16
            : Segmentation.Models.Precision.Float32;

    internal static void FloatCheckCoversEveryLeafInBf16(SegmentationModel model)
    {
        model.Precision = CheckedPrecision;
        try
        {
            // throws when no route of a leaf is within its tolerance of float64
            var report = model.CheckLayers(new long[] { 1, 3, 64, 64 }, training: false)!; // gradients: LayerCheckTests
            var checkedNames = report.Layers.Select(l => l.Layer).Concat(report.OtherLayers.Select(l => l.Layer))
                .ToHashSet();
            var needed = model.named_modules().Where(m => m.module is IMultiInputLeaf
                || m.module is Layer && m.module.parameters(recurse: false).Any()).Select(m => m.name).ToList();
            Assert.NotEmpty(needed);
            Assert.All(needed, n => Assert.Contains(n, checkedNames));
        }
        finally { model.Precision = Segmentation.Models.Precision.Float32; }
    }

    /// <summary>ONNX Runtime gives TorchSharp's outputs, every one the model declares, at the size the graph was
    /// recorded at (64 x 64) and at an odd size it was not (45 x 61, or the model's smallest input where that is
    /// larger): a shape taken from the recording instead of the input would show at the second.</summary>
    internal static void OnnxRuntimeAgrees(SegmentationModel model)
    {
        model.eval();
        using var scope = NewDisposeScope();
        var checkpoint = new Checkpoint
        {
            Model = model.Description, Preprocessing = new Preprocessing(Normalization.ImageNet),
            TrainerSettings = new TrainerOptions().ToJson(),
            Dataset = new DatasetDescription { Classes = 3, ClassNames = new[] { "a", "b", "c" },
                ClassColors = DatasetDescription.Defaults(3).Colors },
            State = new TrainingState(), Weights = Checkpoint.SerializeWeights(model),
        };
        using var session = new InferenceSession(OnnxExport.Build(checkpoint).ToByteArray());
        int min = model.MinimumInputSize;
        foreach (var (h, w) in new[] { (64, 64), (Math.Max(45, min), Math.Max(61, min)) })
        {
            var x = randn(new long[] { 1, 3, h, w }, generator: new Generator(4));
            ModelOutputs expected;
            using (no_grad()) expected = model.forward(x);
            var input = new DenseTensor<float>(x.data<float>().ToArray(), new[] { 1, 3, h, w });
            using var results = session.Run(new[] { NamedOnnxValue.CreateFromTensor(OnnxExport.Input, input) });
            foreach (var name in expected.Names)
            {
                var want = expected[name];
                var actual = tensor(results.Single(r => r.Name == name).AsTensor<float>().ToArray(), want.shape);
                double error = (actual - want).abs().max().item<float>();
                double scale = want.abs().max().item<float>();
                Assert.True(error <= 1e-4 * Math.Max(1, scale),
                    $"{h}x{w}, output '{name}': max |ONNX Runtime - TorchSharp| = {error:E2} (values up to "
                    + $"{scale:E2})");
            }
        }
    }
}
