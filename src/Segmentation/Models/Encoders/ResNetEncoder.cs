using Segmentation.Data;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Sequential = TorchSharp.Modules.Sequential;
using static TorchSharp.torch;

namespace Segmentation.Models.Encoders;

/// <summary>Options of the ResNet encoders (none: the registered name picks the layout).</summary>
internal sealed record ResNetEncoderOptions;

/// <summary>An encoder that can start from pretrained weights in a file.</summary>
public interface IPretrainedEncoder
{
    /// <summary>
    /// Loads weights from <paramref name="path"/> for images normalised by <paramref name="inputNormalization"/>;
    /// returns how many tensors were loaded. Errors name the file and what did not fit.
    /// </summary>
    int LoadWeights(string path, Normalization inputNormalization);
}

/// <summary>
/// torchvision's ResNet-18, -34 and -50 without the classifier, as segmentation_models.pytorch uses them: stages at
/// strides 2 (after <c>conv1</c>, <c>bn1</c>, ReLU), 4 (<c>maxpool</c>, <c>layer1</c>), 8, 16 and 32 (<c>layer2</c> to
/// <c>layer4</c>). Module names are torchvision's (<c>conv1</c>, <c>bn1</c>, <c>layer1.0.conv1</c>, ...,
/// <c>layer2.0.downsample.0</c>), so a torchvision <c>state_dict</c> (less <c>fc.*</c>) loads by name. Any input
/// channel count: <c>conv1</c> takes that many; <see cref="AdaptFirstConvolution"/> fits pretrained RGB weights to it.
/// Initialised as torchvision initialises it (Kaiming normal, fan-out, for convolutions; batch norm 1 and 0).
/// </summary>
internal sealed class ResNetEncoder : Encoder, IPretrainedEncoder
{
#pragma warning disable IDE1006 // torchvision's names
    private readonly Convolution conv1;
    private readonly BatchNorm bn1;
    private readonly MaxPool maxpool;
    private readonly Sequential layer1, layer2, layer3, layer4;
#pragma warning restore IDE1006
    private readonly EncoderStage[] stages;
    private readonly int inChannels;

    /// <summary>The registered name of the ML.NET ImageNet ResNet-18 layout.</summary>
    public const string MlNet = "mlnet-resnet18";

    /// <summary>The ResNet layouts: registered name, blocks per layer, bottleneck blocks.</summary>
    public static readonly IReadOnlyList<(string Name, int[] Blocks, bool Bottleneck)> Layouts = new[]
    {
        ("resnet18", new[] { 2, 2, 2, 2 }, false),
        ("resnet34", new[] { 3, 4, 6, 3 }, false),
        ("resnet50", new[] { 3, 4, 6, 3 }, true),
        (MlNet, new[] { 2, 2, 2, 3 }, false),
    };

    /// <summary>Blocks per layer and whether they are bottlenecks, for a registered name.</summary>
    public static (int[] Blocks, bool Bottleneck) Layout(string name)
    {
        var layout = Layouts.FirstOrDefault(l => l.Name == name);
        return layout.Blocks is null ? throw new ArgumentOutOfRangeException(nameof(name), $"{name} is not a ResNet.")
            : (layout.Blocks, layout.Bottleneck);
    }

    /// <summary>The registered name (resnet18, resnet34, resnet50, mlnet-resnet18).</summary>
    public string Kind { get; }

    /// <summary>Creates a randomly initialised ResNet encoder taking <paramref name="inChannels"/> channels.</summary>
    public ResNetEncoder(string kind, int inChannels) : base(kind)
    {
        var (counts, bottleneck) = Layout(kind);
        Kind = kind;
        int expansion = bottleneck ? 4 : 1;
        this.inChannels = inChannels;
        conv1 = new Convolution(inChannels, 64, 7, stride: 2, padding: 3, bias: false);
        bn1 = new BatchNorm(64);
        maxpool = new MaxPool(3, 2, 1);
        long inplanes = 64;
        Sequential Layer(int planes, int blocks, int stride)
        {
            var list = new List<(string, nn.Module<Tensor, Tensor>)>();
            for (int b = 0; b < blocks; b++)
            {
                int s = b == 0 ? stride : 1;
                list.Add(($"{b}", bottleneck ? new Bottleneck(inplanes, planes, s) : new BasicBlock(inplanes, planes,
                    s)));
                inplanes = planes * expansion;
            }
            return nn.Sequential(list);
        }
        layer1 = Layer(64, counts[0], 1);
        layer2 = Layer(128, counts[1], 2);
        layer3 = Layer(256, counts[2], 2);
        layer4 = Layer(512, counts[3], 2);
        stages = new[] { new EncoderStage(64, 2), new EncoderStage(64 * expansion, 4),
            new EncoderStage(128 * expansion, 8), new EncoderStage(256 * expansion, 16),
                new EncoderStage(512 * expansion, 32) };
        RegisterComponents();
        using (no_grad())
            foreach (var c in modules().OfType<Convolution>())
                nn.init.kaiming_normal_(c.Weight, mode: nn.init.FanInOut.FanOut,
                    nonlinearity: nn.init.NonlinearityType.ReLU);
    }

    /// <inheritdoc />
    public override IReadOnlyList<EncoderStage> Stages => stages;

    /// <inheritdoc />
    public override int InChannels => inChannels;

    /// <inheritdoc />
    public override Tensor[] forward(Tensor input)
    {
        var f1 = LayerOps.Relu(bn1.forward(conv1.forward(input)), inPlace: true);
        var f2 = layer1.forward(maxpool.forward(f1));
        var f3 = layer2.forward(f2);
        var f4 = layer3.forward(f3);
        return new[] { input, f1, f2, f3, f4, layer4.forward(f4) };
    }

    /// <summary>
    /// A torchvision-layout state dict (<c>.pth</c> or <c>.safetensors</c>; the classifier <c>fc.*</c> is left out, and
    /// keys may carry an <c>encoder.</c> prefix, as smp's do), its RGB first convolution fitted to this encoder's input
    /// channels (<see cref="AdaptFirstConvolution"/>); or, for <c>mlnet-resnet18</c>, ML.NET's <c>ResNet18.onnx</c>
    /// (<see cref="MlNetResNet18"/>), whose input convention is folded into the first layer for images normalised by
    /// <paramref name="inputNormalization"/>.
    /// </summary>
    public int LoadWeights(string path, Normalization inputNormalization)
    {
        using var scope = NewDisposeScope();
        bool onnx = path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase);
        if (onnx != (Kind == MlNet))
            throw new OptionsException(onnx
                ? $"{path}: ONNX encoder weights are read for the {MlNet} encoder (ML.NET's ResNet18.onnx) only; this "
                + $"model's encoder is {Kind}."
                : $"{path}: the {MlNet} encoder takes ML.NET's ResNet18.onnx ({MlNetResNet18.Package} "
                + $"{MlNetResNet18.Version}), "
                    + "not a .pth or .safetensors file.");
        static bool Tracked(string key) => key.EndsWith("num_batches_tracked", StringComparison.Ordinal);
        if (onnx)
        {
            var weights = MlNetResNet18.ReadWeights(path, inChannels, inputNormalization);
            StateDicts.Load(this, weights, $"{path} ({Kind} encoder weights)", Tracked);
            return weights.Count;
        }
        var source = TorchvisionWeights(path, "fc.", "conv1.weight", inChannels);
        StateDicts.Load(this, source, $"{path} ({Kind} encoder weights)", Tracked);
        return source.Count;
    }

    /// <summary>
    /// A torchvision model's state dict as an encoder's weights: the classifier's keys (under <paramref
    /// name="classifier"/>) left out, smp's <c>encoder.</c> prefix dropped, and an RGB first convolution (<paramref
    /// name="firstConvolution"/>) fitted to <paramref name="inChannels"/> (<see cref="AdaptFirstConvolution"/>).
    /// </summary>
    internal static Dictionary<string, Tensor> TorchvisionWeights(string path, string classifier,
        string firstConvolution, int inChannels)
    {
        var source = StateDicts.ReadFile(path)
            .Where(kv => !kv.Key.StartsWith(classifier, StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key.StartsWith("encoder.", StringComparison.Ordinal) ? kv.Key["encoder.".Length..]
                : kv.Key, kv => kv.Value);
        if (source.TryGetValue(firstConvolution, out var first) && first.shape.Length == 4
            && first.shape[1] != inChannels)
            source[firstConvolution] = AdaptFirstConvolution(first, inChannels);
        return source;
    }

    /// <summary>
    /// Fits a pretrained first convolution (out x 3 x 7 x 7) to <paramref name="inChannels"/> input channels as
    /// segmentation_models.pytorch does: 1 channel gets the sum over the RGB filters (a gray image is R = G = B, so it
    /// gets exactly the RGB response), other counts repeat the RGB filters cyclically and scale them by 3 / channels,
    /// which keeps the response's size (exactly the RGB response for equal channels when the count is a multiple of 3).
    /// </summary>
    public static Tensor AdaptFirstConvolution(Tensor weight, int inChannels)
    {
        long have = weight.shape[1];
        if (have == inChannels) return weight.clone();
        if (have != 3)
            throw new ArgumentException($"Only RGB (3-channel) first convolutions are adapted; this one has {have} "
                + $"input channels.");
        using var scope = NewDisposeScope();
        if (inChannels == 1) return weight.sum(1, keepdim: true).MoveToOuterDisposeScope();
        var index = tensor(Enumerable.Range(0, inChannels).Select(i => (long)(i % 3)).ToArray());
        return (weight.index_select(1, index) * (3.0 / inChannels)).MoveToOuterDisposeScope();
    }
}

/// <summary>torchvision's ResNet basic block: two 3x3 convolutions and a shortcut (1x1 convolution when the shape
/// changes).</summary>
internal sealed class BasicBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // torchvision's names
    private readonly Convolution conv1, conv2;
    private readonly BatchNorm bn1, bn2;
    private readonly Sequential? downsample;
#pragma warning restore IDE1006

    /// <summary>Creates the block.</summary>
    public BasicBlock(long inplanes, long planes, int stride) : base(nameof(BasicBlock))
    {
        conv1 = new Convolution(inplanes, planes, 3, stride, 1, bias: false);
        bn1 = new BatchNorm(planes);
        conv2 = new Convolution(planes, planes, 3, 1, 1, bias: false);
        bn2 = new BatchNorm(planes);
        downsample = stride != 1 || inplanes != planes ? Shortcut(inplanes, planes, stride) : null;
        RegisterComponents();
    }

    internal static Sequential Shortcut(long inplanes, long outplanes, int stride) =>
        nn.Sequential(("0", new Convolution(inplanes, outplanes, 1, stride, 0, bias: false)),
            ("1", new BatchNorm(outplanes)));

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        var y = bn2.forward(conv2.forward(LayerOps.Relu(bn1.forward(conv1.forward(x)), inPlace: true)));
        return LayerOps.Relu(LayerOps.Add(y, downsample?.forward(x) ?? x, inPlace: true), inPlace: true);
    }
}

/// <summary>torchvision's ResNet bottleneck (v1.5: the stride on the 3x3): 1x1 down, 3x3, 1x1 up to 4x the
/// width.</summary>
internal sealed class Bottleneck : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // torchvision's names
    private readonly Convolution conv1, conv2, conv3;
    private readonly BatchNorm bn1, bn2, bn3;
    private readonly Sequential? downsample;
#pragma warning restore IDE1006

    /// <summary>Creates the block.</summary>
    public Bottleneck(long inplanes, long planes, int stride) : base(nameof(Bottleneck))
    {
        conv1 = new Convolution(inplanes, planes, 1, 1, 0, bias: false);
        bn1 = new BatchNorm(planes);
        conv2 = new Convolution(planes, planes, 3, stride, 1, bias: false);
        bn2 = new BatchNorm(planes);
        conv3 = new Convolution(planes, planes * 4, 1, 1, 0, bias: false);
        bn3 = new BatchNorm(planes * 4);
        downsample = stride != 1 || inplanes != planes * 4 ? BasicBlock.Shortcut(inplanes, planes * 4, stride) : null;
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        var y = LayerOps.Relu(bn1.forward(conv1.forward(x)), inPlace: true);
        y = LayerOps.Relu(bn2.forward(conv2.forward(y)), inPlace: true);
        y = bn3.forward(conv3.forward(y));
        return LayerOps.Relu(LayerOps.Add(y, downsample?.forward(x) ?? x, inPlace: true), inPlace: true);
    }
}
