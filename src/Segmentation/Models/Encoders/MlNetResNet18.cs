using Google.Protobuf;
using Onnx;
using Segmentation.Data;
using static TorchSharp.torch;

namespace Segmentation.Models.Encoders;

/// <summary>
/// ML.NET's ImageNet-trained ResNet-18 (NuGet <c>Microsoft.ML.DnnImageFeaturizer.ResNet18</c> 0.23.1, MIT): a CNTK 2.6
/// export to ONNX (<c>tools/DnnImageModels/ResNet18Onnx/ResNet18.onnx</c>) that is torchvision's ResNet with basic
/// blocks 2-2-2-3 (one more 512-channel block than ResNet-18) and CNTK's "same" padding, which for even sizes samples
/// exactly the pixels torchvision's symmetric padding does. <see cref="ReadWeights"/> turns its 22 convolutions and
/// batch norms into a torchvision-named state dict for the <c>mlnet-resnet18</c> encoder, with its input
/// convention (BGR, 0-255, minus a per-channel mean: <c>ResNetPreprocess.onnx</c>) folded into <c>conv1</c> and
/// <c>bn1</c>, so the encoder takes images normalised the way the trainer normalises them.
/// </summary>
public static class MlNetResNet18
{
    /// <summary>The NuGet package that ships the file.</summary>
    public const string Package = "Microsoft.ML.DnnImageFeaturizer.ResNet18";

    /// <summary>The package version read and tested.</summary>
    public const string Version = "0.23.1";

    /// <summary>The file inside the package.</summary>
    public const string FileInPackage = "tools/DnnImageModels/ResNet18Onnx/ResNet18.onnx";

    /// <summary>The network's input: BGR order, 0-255, minus these per-channel means (<c>ResNetPreprocess.onnx</c>'s
    /// mean image averaged per channel, B G R).</summary>
    public static IReadOnlyList<float> MeanBgr { get; } = new[] { 103.06262f, 115.902885f, 123.15163f };

    /// <summary>
    /// Where NuGet keeps the file once a project that asks for the package (the CLI, the tests) was restored:
    /// <c>$NUGET_PACKAGES</c> or <c>~/.nuget/packages</c>; null when it is not there.
    /// </summary>
    public static string? FindInNuGetCache()
    {
        var roots = new[] { Environment.GetEnvironmentVariable("NUGET_PACKAGES"),
            Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages") };
        return roots.Where(r => !string.IsNullOrEmpty(r))
            .Select(r => Path.Combine(r!, Package.ToLowerInvariant(), Version, FileInPackage))
            .FirstOrDefault(File.Exists);
    }

    /// <summary>
    /// Reads the ONNX file into a torchvision-named state dict (<c>conv1.weight</c>, <c>bn1.*</c>,
    /// <c>layer1.0.conv1.weight</c>, ..., <c>layer4.2.bn2.*</c>, <c>layerN.0.downsample.{0,1}.*</c>) for an encoder
    /// taking <paramref name="inChannels"/> channels normalised by <paramref name="normalization"/>.
    /// </summary>
    public static Dictionary<string, Tensor> ReadWeights(string path, int inChannels, Normalization normalization)
    {
        if (!File.Exists(path))
            throw new SegmentationException($"{path}: no such file (expected {Package} {Version}'s {FileInPackage}).");
        if (normalization.Mean.Length != inChannels)
            throw new OptionsException($"Normalisation has {normalization.Mean.Length} channels; the encoder takes "
                + $"{inChannels}.");
        ModelProto model;
        try
        {
            using var stream = File.OpenRead(path);
            model = ModelProto.Parser.ParseFrom(stream);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new SegmentationException($"{path}: not an ONNX model ({e.Message}).", e);
        }
        var weights = ResNetStateDict(path, model.Graph);
        FoldInput(weights, inChannels, normalization);
        return weights;
    }

    /// <summary>Names the graph's Conv and BatchNormalization nodes as torchvision would, from the graph's
    /// structure.</summary>
    private static Dictionary<string, Tensor> ResNetStateDict(string path, GraphProto graph)
    {
        var initializers = graph.Initializer.ToDictionary(t => t.Name);
        var norms = graph.Node.Where(n => n.OpType == "BatchNormalization").ToDictionary(n => n.Input[0]);
        var convs = graph.Node.Where(n => n.OpType == "Conv").ToList();
        if (convs.Count == 0 || Kernel(convs[0]) != 7)
            throw new SegmentationException($"{path}: not a ResNet graph (its first convolution is not the 7x7 stem).");
        var result = new Dictionary<string, Tensor>();
        void Add(NodeProto conv, string convName, string normName)
        {
            result[convName + ".weight"] = Read(path, initializers, conv.Input[1]);
            if (!norms.TryGetValue(conv.Output[0], out var bn))
                throw new SegmentationException($"{path}: convolution {conv.Name} ({conv.Output[0]}) is not followed "
                    + $"by a batch norm, as a ResNet's are.");
            string[] fields = { "weight", "bias", "running_mean", "running_var" };
            for (int i = 0; i < 4; i++) result[$"{normName}.{fields[i]}"] = Read(path, initializers, bn.Input[i + 1]);
        }
        Add(convs[0], "conv1", "bn1");
        // A block's conv2 reads Relu(BatchNorm(its conv1)); every other 3x3 convolution starts a block.
        var producer = graph.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);
        NodeProto? Up(string output, string op) => producer.TryGetValue(output, out var n) && n.OpType == op ? n : null;
        var blocks = new int[4];
        var blockOf = new Dictionary<string, string>();      // a block's input -> its name
        var firstConvOf = new Dictionary<NodeProto, string>(); // a block's conv1 -> its name
        foreach (var conv in convs.Skip(1).Where(c => Kernel(c) == 3))
        {
            var before = Up(conv.Input[0], "Relu") is { } relu && Up(relu.Input[0], "BatchNormalization") is { } bn
                ? Up(bn.Input[0], "Conv") : null;
            if (before is not null && firstConvOf.TryGetValue(before, out var open))
            {
                Add(conv, open + ".conv2", open + ".bn2");
                continue;
            }
            long planes = initializers[conv.Input[1]].Dims[0];
            int layer = planes switch { 64 => 0, 128 => 1, 256 => 2, 512 => 3,
                _ => throw new SegmentationException($"{path}: a 3x3 convolution with {planes} outputs; a ResNet's "
                    + $"have 64, 128, 256 or 512.") };
            string name = $"layer{layer + 1}.{blocks[layer]++}";
            blockOf[conv.Input[0]] = name;
            firstConvOf[conv] = name;
            Add(conv, name + ".conv1", name + ".bn1");
        }
        foreach (var conv in convs.Where(c => Kernel(c) == 1))
        {
            if (!blockOf.TryGetValue(conv.Input[0], out var name))
                throw new SegmentationException($"{path}: a 1x1 convolution ({conv.Name}) that is no block's "
                    + $"shortcut.");
            Add(conv, name + ".downsample.0", name + ".downsample.1");
        }
        if (!blocks.SequenceEqual(ResNetEncoder.Layout(ResNetEncoder.MlNet).Blocks))
            throw new SegmentationException($"{path}: a ResNet with blocks {string.Join("-", blocks)}; ML.NET's "
                + $"ResNet18.onnx has 2-2-2-3.");
        return result;
    }

    private static long Kernel(NodeProto conv)
        => conv.Attribute.FirstOrDefault(a => a.Name == "kernel_shape")?.Ints.FirstOrDefault() ?? 0;

    private static Tensor Read(string path, Dictionary<string, TensorProto> initializers, string name)
    {
        if (!initializers.TryGetValue(name, out var t))
            throw new SegmentationException($"{path}: the graph uses {name}, which is no initializer.");
        if (t.DataType != (int)TensorProto.Types.DataType.Float)
            throw new SegmentationException($"{path}: {name} holds ONNX type {t.DataType}; float (1) expected.");
        long count = t.Dims.Aggregate(1L, (a, d) => a * d);
        float[] values = t.RawData.Length > 0 ? new float[t.RawData.Length / 4] : t.FloatData.ToArray();
        if (t.RawData.Length > 0) Buffer.BlockCopy(t.RawData.ToByteArray(), 0, values, 0, t.RawData.Length
            - t.RawData.Length % 4);
        if (values.Length != count)
            throw new SegmentationException($"{path}: {name} has {values.Length} values for shape "
                + $"[{string.Join(", ", t.Dims)}].");
        return tensor(values, t.Dims.ToArray());
    }

    /// <summary>
    /// Folds the network's input convention into <c>conv1</c> and <c>bn1.running_mean</c>. The network wants
    /// z = 255 x[BGR] - mean for an RGB image x in [0, 1]; the encoder gets n = (x - mu) / sigma per channel. Since
    /// conv1
    /// has no bias, conv1(z) = conv1'(n) + b with conv1' scaled per channel and b a constant per filter (exact away
    /// from
    /// the zero-padded border), and batch norm subtracts its running mean, so b goes there. 1 or 4 channels adapt the
    /// RGB filters first (<see cref="ResNetEncoder.AdaptFirstConvolution"/>), in terms of x.
    /// </summary>
    private static void FoldInput(Dictionary<string, Tensor> weights, int inChannels, Normalization normalization)
    {
        using var scope = NewDisposeScope();
        var w = weights["conv1.weight"].to(ScalarType.Float64);                  // out x 3 (BGR) x 7 x 7
        var rgb = w.flip(1) * 255.0;                                              // in terms of x (RGB, 0-1)
        var mean = tensor(MeanBgr.Select(m => (double)m).ToArray(), ScalarType.Float64).view(1, 3, 1, 1);
        var offset = -(w * mean).sum(new long[] { 1, 2, 3 });                     // conv1(z) = rgb * x + offset
        var adapted = ResNetEncoder.AdaptFirstConvolution(rgb, inChannels);      // out x C x 7 x 7
        var mu = tensor(normalization.Mean.Select(v => (double)v).ToArray(), ScalarType.Float64).view(1, inChannels, 1,
            1);
        var sigma = tensor(normalization.Std.Select(v => (double)v).ToArray(), ScalarType.Float64).view(1, inChannels,
            1, 1);
        offset = offset + (adapted * mu).sum(new long[] { 1, 2, 3 });            // x = sigma n + mu
        weights["conv1.weight"] = (adapted * sigma).to(ScalarType.Float32).MoveToOuterDisposeScope();
        weights["bn1.running_mean"] = (weights["bn1.running_mean"].to(ScalarType.Float64) - offset)
            .to(ScalarType.Float32).MoveToOuterDisposeScope();
    }
}
