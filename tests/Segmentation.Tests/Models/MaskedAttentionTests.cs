using Microsoft.ML.OnnxRuntime;
using Onnx;
using Segmentation.Models.Export;
using Segmentation.Models.Layers;
using static TorchSharp.torch;
using DenseFloats = Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>;
using DenseBools = Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<bool>;

namespace Segmentation.Tests.Models;

/// <summary>Attention with a mask (Mask2Former's masked attention): a blocked key is as if it were not there, the two
/// routes agree in float64 with the mask, and ONNX Runtime computes the exported nodes alike.</summary>
public class MaskedAttentionTests
{
    private static Tensor Apply(int route, params Tensor[] inputs) =>
        ((ICheckedComputation)new Attention()).Apply(route, inputs, Array.Empty<Tensor>(), false);

    [Fact]
    public void A_blocked_key_is_as_if_it_were_not_there()
    {
        var g = new Generator(3);
        var q = randn(new long[] { 2, 2, 5, 8 }, generator: g);
        var k = randn(new long[] { 2, 2, 6, 8 }, generator: g);
        var v = randn(new long[] { 2, 2, 6, 8 }, generator: g);
        var blocked = zeros(new long[] { 2, 1, 1, 6 }, ScalarType.Bool);
        blocked[.., .., .., 4] = tensor(true); // every query of every head: key 4 is not to be seen
        var bias = LayerOps.AttentionBias(blocked);
        Assert.Equal(float.NegativeInfinity, bias[0, 0, 0, 4].item<float>());
        Assert.Equal(0f, bias[0, 0, 0, 3].item<float>());
        using var attention = new Attention();
        var keep = tensor(new long[] { 0, 1, 2, 3, 5 });
        var without = attention.forward(q, k.index_select(2, keep), v.index_select(2, keep));
        for (int route = 0; route < 2; route++)
        {
            attention.Route = route;
            double error = (attention.forward(q, k, v, bias) - without).abs().max().item<float>();
            Assert.True(error < 1e-5, $"route {route}: {error:E2} from attention without the blocked key");
        }
        var e = Assert.Throws<ArgumentException>(() => LayerOps.AttentionBias(bias));
        Assert.Contains("boolean mask", e.Message);
        var shape = Assert.Throws<ArgumentException>(() => attention.forward(q, k, v, zeros(6)));
        Assert.Contains("N x heads x L x S", shape.Message);
    }

    [Fact]
    public void Libtorchs_kernel_and_the_explicit_route_agree_in_float64_with_a_mask_values_and_gradients()
    {
        var g = new Generator(29);
        var inputs = new[]
        {
            randn(new long[] { 2, 3, 7, 4 }, float64, generator: g), randn(new long[] { 2, 3, 9, 4 }, float64, generator: g),
            randn(new long[] { 2, 3, 9, 4 }, float64, generator: g),
            randn(new long[] { 2, 1, 7, 9 }, float64, generator: g).masked_fill(rand(new long[] { 2, 1, 7, 9 }, float64, generator: g) < 0.3, double.NegativeInfinity),
        };
        inputs[3][.., .., .., 0] = tensor(0.0); // no query sees no key
        var weighting = randn(new long[] { 2, 3, 7, 4 }, float64, generator: g);
        var results = new List<Tensor[]>();
        for (int route = 0; route < 2; route++)
        {
            var xs = inputs.Select(x => x.detach().requires_grad_(true)).ToArray();
            Apply(route, xs).backward(new[] { weighting });
            results.Add(new[] { Apply(route, inputs) }.Concat(xs.Take(3).Select(x => x.grad!)).ToArray());
        }
        for (int i = 0; i < results[0].Length; i++)
        {
            double error = (results[0][i] - results[1][i]).abs().max().item<double>();
            Assert.True(error < 1e-10, $"output/gradient {i}: routes differ by {error:E2}");
        }
    }

    [Fact]
    public void Onnx_runtime_computes_the_exported_bias_and_masked_attention_alike()
    {
        var g = new Generator(41);
        var q = randn(new long[] { 1, 2, 5, 4 }, generator: g);
        var k = randn(new long[] { 1, 2, 6, 4 }, generator: g);
        var v = randn(new long[] { 1, 2, 6, 4 }, generator: g);
        var blocked = rand(new long[] { 1, 1, 5, 6 }, generator: g) < 0.4;
        blocked[.., .., .., 0] = tensor(false);
        Tensor expected;
        using (var attention = new Attention()) expected = attention.forward(q, k, v, LayerOps.AttentionBias(blocked));

        var graph = new OnnxGraph(null!);
        var output = graph.Attention("q", "k", "v", 4, graph.AttentionBias("blocked"));
        graph.Rename(output, "y");
        foreach (var (name, type) in new[] { ("q", 1), ("k", 1), ("v", 1), ("blocked", 9) }) // float, bool
            graph.Graph.Input.Add(new ValueInfoProto { Name = name, Type = new TypeProto { TensorType =
                new TypeProto.Types.Tensor { ElemType = type } } });
        graph.Graph.Output.Add(new ValueInfoProto { Name = "y", Type = new TypeProto { TensorType =
            new TypeProto.Types.Tensor { ElemType = 1 } } });
        graph.Graph.Name = "masked_attention";
        var model = new ModelProto { IrVersion = 8, Graph = graph.Graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Segmentation.Inference.OnnxExport.Opset });
        using var session = new InferenceSession(Google.Protobuf.MessageExtensions.ToByteArray(model));
        NamedOnnxValue Floats(string name, Tensor t) => NamedOnnxValue.CreateFromTensor(name,
            new DenseFloats(t.data<float>().ToArray(), t.shape.Select(d => (int)d).ToArray()));
        using var results = session.Run(new[]
        {
            Floats("q", q), Floats("k", k), Floats("v", v),
            NamedOnnxValue.CreateFromTensor("blocked", new DenseBools(blocked.data<bool>().ToArray(), new[] { 1, 1, 5, 6 })),
        });
        var actual = tensor(results.Single().AsTensor<float>().ToArray(), expected.shape);
        double error = (actual - expected).abs().max().item<float>();
        Assert.True(error <= 1e-5, $"max |ONNX Runtime - TorchSharp| = {error:E2}");
    }
}
