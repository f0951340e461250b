using Microsoft.ML.OnnxRuntime;
using DenseTensor = Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>;
using Google.Protobuf;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Tests.Models;

/// <summary>A decoder that samples its deepest map at points it predicts: a grid from a convolution, the map sampled
/// there (<see cref="GridSample"/>), added back (deformable attention's pattern, in miniature).</summary>
public sealed class GridSampleDecoder : Decoder
{
    private readonly Convolution offsets;
    private readonly GridSample sample = new();
    private readonly long channels;

    public GridSampleDecoder(IReadOnlyList<EncoderStage> stages) : base(nameof(GridSampleDecoder))
    {
        channels = stages[^1].Channels;
        offsets = new Convolution(channels, 2, 3, padding: 1);
        RegisterComponents();
    }

    public override long OutChannels => channels;

    public override Tensor forward(Tensor[] features)
    {
        var deep = features[^1];
        var grid = LayerOps.SplitHeads(LayerOps.ToTokens(offsets.forward(deep)), 1); // N x 1 x hw x 2
        var sampled = sample.forward(deep, grid);                                       // N x C x 1 x hw
        return LayerOps.Add(deep, LayerOps.ToMap(LayerOps.ToTokens(sampled), deep));
    }
}

/// <summary>Bilinear grid sampling as a leaf: PyTorch's values, its two routes alike in float64 (gradients too), and in
/// a model: checked, summarised, exported to ONNX <c>GridSample</c> and run by ONNX Runtime.</summary>
public class GridSampleTests
{
    private static readonly bool Registered = Register();

    private static bool Register()
    {
        ModelRegistry.AddDecoder<ToyHeadOptions>("test-grid-sample", (c, _) => new GridSampleDecoder(c.Encoder.Stages),
            "a test's decoder that samples its map at predicted points");
        ModelRegistry.AddHead<ToyHeadOptions>("test-grid-head", (c, _) => new ToyHead(c.InChannels, c.Classes, c.EncoderMaps[^1]),
            "a test's head");
        return true;
    }

    private static Tensor Apply(int route, Tensor input, Tensor grid) =>
        ((ICheckedComputation)new GridSample()).Apply(route, new[] { input, grid }, Array.Empty<Tensor>(), false);

    [Fact]
    public void It_samples_as_pytorch_does_centres_between_and_outside()
    {
        var map = tensor(new float[] { 1, 2, 3, 4 }, new long[] { 1, 1, 2, 2 });
        // x then y; -1..1 spans the pixels' outer edges, so pixel centres are at -0.5 and 0.5 on a 2-pixel side
        var points = new float[] { -0.5f, -0.5f, 0.5f, -0.5f, -0.5f, 0.5f, 0, 0, -1, -1, 0.5f, 0, 3, 3 };
        var grid = tensor(points, new long[] { 1, 1, 7, 2 });
        // PyTorch 1.13 gives these (F.grid_sample, bilinear, zeros, align_corners=False): the corner is a quarter of
        // pixel (0, 0) and three quarters zeros from outside
        var expected = new[] { 1f, 2, 3, 2.5f, 0.25f, 3f, 0 };
        using var layer = new GridSample();
        for (int route = 0; route < 2; route++)
        {
            var got = (route == 0 ? layer.forward(map, grid) : Apply(1, map, grid)).data<float>().ToArray();
            for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - got[i]) < 1e-6,
                $"route {route}, point {i}: {got[i]}, expected {expected[i]}");
        }
        var e = Assert.Throws<ArgumentException>(() => layer.forward(map, tensor(points, new long[] { 1, 7, 2 })));
        Assert.Contains("N x Ho x Wo x 2 grid", e.Message);
    }

    [Fact]
    public void Libtorchs_kernel_and_the_gathered_route_agree_in_float64_values_and_gradients()
    {
        var g = new Generator(17);
        var map = randn(new long[] { 2, 3, 7, 9 }, float64, generator: g);
        var grid = (rand(new long[] { 2, 5, 6, 2 }, float64, generator: g) * 2.6 - 1.3); // some points outside
        var weighting = randn(new long[] { 2, 3, 5, 6 }, float64, generator: g);
        var results = new List<Tensor[]>();
        for (int route = 0; route < 2; route++)
        {
            var x = map.detach().requires_grad_(true);
            var p = grid.detach().requires_grad_(true);
            var y = Apply(route, x, p);
            y.backward(new[] { weighting });
            results.Add(new[] { y.detach(), x.grad!.detach(), p.grad!.detach() });
        }
        foreach (var (i, what) in new[] { (0, "values"), (1, "map gradient"), (2, "grid gradient") })
        {
            double error = (results[0][i] - results[1][i]).abs().max().item<double>();
            Assert.True(error < 1e-10, $"{what}: routes differ by {error:E2}");
        }
    }

    [Fact]
    public void In_a_model_it_is_checked_summarised_and_exported_to_onnx_runtimes_grid_sample()
    {
        Assert.True(Registered);
        using var scope = NewDisposeScope();
        var description = ModelDescription.UNet(inChannels: 3, classes: 3, baseChannels: 8, depth: 2, seed: 5) with
        {
            Decoder = new ModelPart("test-grid-sample"), Head = new ModelPart("test-grid-head"),
        };
        using var model = new SegmentationModel(description);
        model.eval();
        Assert.Empty(model.NonLeafModules());

        var report = model.CheckLayers(new long[] { 2, 3, 32, 32 }, training: true)!;
        var checkedSample = Assert.Single(report.OtherLayers, l => l.Kind == "GridSample");
        Assert.Equal("decoder.sample", checkedSample.Layer);
        Assert.True(checkedSample.Errors[^1] <= checkedSample.Tolerance, $"{checkedSample.Errors[^1]:E2}");
        var summary = ModelSummary.For(model, 32, 32);
        Assert.Contains(summary.Layers, l => l.Kind == "GridSample" && l.MultiplyAccumulates == 4L * 32 * 8 * 8);

        var checkpoint = new Checkpoint
        {
            Model = model.Description,
            Dataset = new DatasetDescription { Classes = 3, ClassNames = new[] { "a", "b", "c" },
                ClassColors = DatasetDescription.Defaults(3).Colors },
            Preprocessing = new Preprocessing(Normalization.ImageNet, null),
            TrainerSettings = new TrainerOptions().ToJson(), State = new TrainingState(),
            Weights = Checkpoint.SerializeWeights(model),
        };
        var onnx = OnnxExport.Build(checkpoint);
        Assert.Contains(onnx.Graph.Node, n => n.OpType == "GridSample");
        using var session = new InferenceSession(onnx.ToByteArray());
        foreach (var (h, w) in new[] { (32, 32), (36, 44) })
        {
            var x = randn(new long[] { 1, 3, h, w }, generator: new Generator(8));
            Tensor expected;
            using (no_grad()) expected = model.Logits(x);
            var input = new DenseTensor(x.data<float>().ToArray(), new[] { 1, 3, h, w });
            using var outputs = session.Run(new[] { NamedOnnxValue.CreateFromTensor(OnnxExport.Input, input) });
            var actual = tensor(outputs.Single(r => r.Name == OnnxExport.Output).AsTensor<float>().ToArray(),
                expected.shape);
            double error = (actual - expected).abs().max().item<float>();
            Assert.True(error <= 1e-4, $"{h}x{w}: max |ONNX Runtime - TorchSharp| = {error:E2}");
        }
    }
}
