using Onnx;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Tests.Models;

/// <summary>
/// Runs where ML.NET's ResNet18.onnx is in the NuGet cache: wherever the tests were built from source (the test project's
/// PackageDownload puts it there, and a failed download fails the restore), so in CI; skipped in the GPU bundle, which
/// carries no NuGet cache.
/// </summary>
public sealed class MlNetFactAttribute : FactAttribute
{
    public MlNetFactAttribute()
    {
        if (MlNetResNet18.FindInNuGetCache() is null) Skip = $"{MlNetResNet18.Package} {MlNetResNet18.Version} is not in this machine's NuGet cache";
    }
}

/// <summary>
/// ML.NET's ResNet18.onnx as an encoder: its weights land on torchvision's names, and the encoder computes what the
/// ONNX graph computes (run here node by node in float64, CNTK's asymmetric padding and all).
/// </summary>
public class MlNetResNet18Tests
{
    /// <summary>The test project downloads the package (PackageDownload), so the file is there wherever the tests build.</summary>
    private static string OnnxFile => MlNetResNet18.FindInNuGetCache()
        ?? throw new InvalidOperationException($"{MlNetResNet18.Package} {MlNetResNet18.Version} is not in the NuGet cache; the test project's PackageDownload should have put it there.");

    /// <summary>Runs the graph's nodes up to the last ReLU (the stride-32 features) in float64.</summary>
    private static Tensor RunGraph(GraphProto graph, Tensor input)
    {
        var values = new Dictionary<string, Tensor> { [graph.Input[0].Name] = input };
        foreach (var t in graph.Initializer)
        {
            var data = t.FloatData.ToArray(); // CNTK wrote float_data, not raw_data
            if (data.Length == 0)
            {
                data = new float[t.RawData.Length / 4];
                Buffer.BlockCopy(t.RawData.ToByteArray(), 0, data, 0, data.Length * 4);
            }
            values[t.Name] = tensor(data, t.Dims.ToArray()).to(ScalarType.Float64);
        }
        long[] Ints(NodeProto n, string name) => n.Attribute.Single(a => a.Name == name).Ints.ToArray();
        Tensor last = input;
        foreach (var n in graph.Node)
        {
            var x = values[n.Input[0]];
            Tensor y;
            switch (n.OpType)
            {
                case "Conv":
                {
                    var p = Ints(n, "pads"); // top, left, bottom, right
                    y = F.conv2d(F.pad(x, new[] { p[1], p[3], p[0], p[2] }), values[n.Input[1]], strides: Ints(n, "strides"));
                    break;
                }
                case "MaxPool":
                {
                    var p = Ints(n, "pads");
                    y = F.max_pool2d(F.pad(x, new[] { p[1], p[3], p[0], p[2] }, value: double.NegativeInfinity), Ints(n, "kernel_shape"), Ints(n, "strides"));
                    break;
                }
                case "BatchNormalization":
                    y = F.batch_norm(x, values[n.Input[3]], values[n.Input[4]], values[n.Input[1]], values[n.Input[2]], false, 0, n.Attribute.Single(a => a.Name == "epsilon").F);
                    break;
                case "Relu": y = F.relu(x); last = y; break;
                case "Add": y = x + values[n.Input[1]]; break;
                case "AveragePool": continue;
                default: throw new InvalidOperationException($"unexpected op {n.OpType}");
            }
            values[n.Output[0]] = y;
        }
        return last;
    }

    private static GraphProto Graph()
    {
        using var stream = File.OpenRead(OnnxFile);
        return ModelProto.Parser.ParseFrom(stream).Graph;
    }

    [MlNetFact]
    public void The_weights_land_on_torchvision_names_and_the_encoder_computes_the_onnx_graph()
    {
        using var scope = NewDisposeScope();
        // Normalisation that is exactly the network's input scale (255 x - mean, RGB order here): nothing to fold but
        // the channel order, so the encoder must match the graph everywhere, borders included.
        var mean = MlNetResNet18.MeanBgr.Reverse().ToArray();
        var exact = new Normalization(mean.Select(m => m / 255f).ToArray(), new[] { 1 / 255f, 1 / 255f, 1 / 255f });
        using var model = new SegmentationModel(ModelDescription.For("mlnet-resnet18", classes: 2, inChannels: 3) with { Seed = 1 });
        Assert.Equal(22 * 5, model.LoadEncoderWeights(OnnxFile, exact)); // 22 convolutions, each with a batch norm of 4 tensors
        model.eval();

        var generator = new TorchSharp.torch.Generator(7);
        var images = randint(0, 256, new long[] { 2, 3, 96, 128 }, generator: generator).to(ScalarType.Byte);
        using var grad = no_grad();
        var ours = model.Encoder.forward(exact.Apply(images))[^1].to(ScalarType.Float64);
        var z = images.to(ScalarType.Float64).flip(1) - tensor(MlNetResNet18.MeanBgr.Select(m => (double)m).ToArray(), ScalarType.Float64).view(1, 3, 1, 1);
        var reference = RunGraph(Graph(), z);
        Assert.Equal(reference.shape, ours.shape);
        double error = (ours - reference).abs().max().item<double>() / reference.abs().max().item<double>();
        Assert.True(error < 1e-4, $"encoder vs ONNX graph: max error {error:E2} of the largest feature");
    }

    [MlNetFact]
    public void Under_the_trainers_ImageNet_normalisation_the_folded_first_layer_gives_the_same_features()
    {
        using var scope = NewDisposeScope();
        using var model = new SegmentationModel(ModelDescription.For("mlnet-resnet18", classes: 2, inChannels: 3) with { Seed = 1 });
        model.LoadEncoderWeights(OnnxFile);
        model.eval();
        var images = randint(0, 256, new long[] { 1, 3, 64, 64 }, generator: new TorchSharp.torch.Generator(3)).to(ScalarType.Byte);
        using var grad = no_grad();
        var ours = model.Encoder.forward(Normalization.ImageNet.Apply(images))[1].to(ScalarType.Float64); // after conv1, bn1, ReLU
        var z = images.to(ScalarType.Float64).flip(1) - tensor(MlNetResNet18.MeanBgr.Select(m => (double)m).ToArray(), ScalarType.Float64).view(1, 3, 1, 1);
        var graph = Graph();
        var stem = graph.Node.TakeWhile(n => n.OpType != "MaxPool").ToList();
        var g = new GraphProto();
        g.Input.Add(graph.Input[0]);
        g.Initializer.AddRange(graph.Initializer.Where(t => stem.Any(n => n.Input.Contains(t.Name))));
        g.Node.AddRange(stem);
        var reference = RunGraph(g, z);
        // Away from the zero-padded border (3 pixels of a 7x7 stride-2 stem) the fold is exact.
        var inner = (Tensor t) => t[.., .., 2..^2, 2..^2];
        double error = (inner(ours) - inner(reference)).abs().max().item<double>() / reference.abs().max().item<double>();
        Assert.True(error < 1e-4, $"folded stem vs ONNX stem: max error {error:E2} of the largest activation");
    }

    [MlNetFact]
    public void Gray_images_get_the_summed_filters_and_other_encoders_refuse_the_file()
    {
        using var gray = new SegmentationModel(ModelDescription.For("mlnet-resnet18", classes: 2, inChannels: 1) with { Seed = 1 });
        gray.LoadEncoderWeights(OnnxFile);
        Assert.Equal(new long[] { 64, 1, 7, 7 }, gray.Encoder.state_dict()["conv1.weight"].shape);

        using var resnet18 = new SegmentationModel(ModelDescription.For("resnet18", classes: 2, inChannels: 3) with { Seed = 1 });
        var e = Assert.Throws<OptionsException>(() => resnet18.LoadEncoderWeights(OnnxFile));
        Assert.Contains("mlnet-resnet18", e.Message);
    }
}
