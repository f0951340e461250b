using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using Segmentation.Models;
using Segmentation.Models.Export;
using Segmentation.Models.Layers;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace Segmentation.Tests.Models;

/// <summary>
/// Every registered op (<see cref="Ops"/>) on the inputs it names: each route in float32 against route 1 in float64
/// within its tolerance, and its ONNX node on ONNX Runtime against route 0. An op added to the registry is in this
/// test without a line here.
/// </summary>
public class OpConformanceTests
{
    public static IEnumerable<object[]> Names() => Ops.All.Select(o => new object[] { o.Name });

    [Fact]
    public void The_built_in_parts_register_their_ops()
    {
        Assert.Contains(Ops.All, o => o.Name == "ResizeToNearest");
        Assert.Contains(Ops.All, o => o.Name == "ResizeToBilinearAligned");
        Assert.Contains("registered already", Assert.Throws<OptionsException>(() => Ops.Add(Ops.All[0])).Message);
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void A_registered_op_agrees_with_float64_on_every_route_and_with_onnx_runtime(string name)
    {
        var op = Ops.All.Single(o => o.Name == name);
        foreach (var inputs in op.CheckInputs())
        {
            using var scope = NewDisposeScope();
            var reference = op.Compute(1, inputs);
            double scale = Math.Max(reference.abs().max().item<double>(), 1e-12);
            var single = inputs.Select(x => x.to(ScalarType.Float32)).ToArray();
            for (int route = 0; route < op.RouteCount; route++)
            {
                var y = op.Compute(route, single).to(ScalarType.Float64);
                Assert.Equal(reference.shape, y.shape);
                double error = (y - reference).abs().max().item<double>() / scale;
                Assert.True(error <= op.Tolerance, $"{name} route {route} on {Shapes(inputs)}: {error:E2}");
            }
            var expected = op.Compute(0, single);
            var onnx = OnnxRun(op, single, expected.dim());
            Assert.Equal(expected.shape, onnx.shape);
            double onnxError = (onnx - expected).abs().max().item<float>() / scale;
            Assert.True(onnxError <= op.Tolerance, $"{name} on ONNX Runtime, {Shapes(inputs)}: {onnxError:E2}");
        }
    }

    private static string Shapes(Tensor[] inputs) => string.Join(" and ", inputs.Select(x => string.Join("x",
        x.shape)));

    /// <summary>The op alone as an ONNX graph (recorded by running it), run on ONNX Runtime.</summary>
    private static Tensor OnnxRun(Op op, Tensor[] inputs, long outputRank)
    {
        GraphProto graph;
        using (var trace = new OnnxTrace(nn.Sequential()))
        {
            for (int i = 0; i < inputs.Length; i++) trace.Bind(inputs[i], $"x{i}");
            var y = op.Run(inputs);
            trace.Graph.Rename(trace.NameOf(y, "the test"), "y");
            graph = trace.Graph.Graph;
        }
        for (int i = 0; i < inputs.Length; i++) graph.Input.Add(Value($"x{i}", inputs[i].dim()));
        graph.Output.Add(Value("y", outputRank));
        var model = new ModelProto { IrVersion = 8, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        using var session = new InferenceSession(model.ToByteArray());
        var feeds = inputs.Select((x, i) => NamedOnnxValue.CreateFromTensor($"x{i}", new DenseTensor<float>(
            x.contiguous().data<float>().ToArray(), x.shape.Select(d => (int)d).ToArray()))).ToList();
        using var results = session.Run(feeds);
        var result = results.Single().AsTensor<float>();
        return tensor(result.ToArray(), result.Dimensions.ToArray().Select(d => (long)d).ToArray());
    }

    private static ValueInfoProto Value(string name, long rank)
    {
        var shape = new TensorShapeProto();
        for (int i = 0; i < rank; i++) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = $"{name}_{i}" });
        return new ValueInfoProto
        {
            Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor
                { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } },
        };
    }
}
