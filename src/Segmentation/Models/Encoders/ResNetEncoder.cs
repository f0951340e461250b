using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using Segmentation.Models.Export;

namespace Segmentation.Models.Encoders;

/// <summary>
/// torchvision's ResNet-18, -34 and -50 without the classifier, as segmentation_models.pytorch uses them: stages at
/// strides 2 (after <c>conv1</c>, <c>bn1</c>, ReLU), 4 (<c>maxpool</c>, <c>layer1</c>), 8, 16 and 32 (<c>layer2</c> to
/// <c>layer4</c>). Module names are torchvision's (<c>conv1</c>, <c>bn1</c>, <c>layer1.0.conv1</c>, ...,
/// <c>layer2.0.downsample.0</c>), so a torchvision <c>state_dict</c> (less <c>fc.*</c>) loads by name. Any input
/// channel count: <c>conv1</c> takes that many; <see cref="AdaptFirstConvolution"/> fits pretrained RGB weights to it.
/// Initialised as torchvision initialises it (Kaiming normal, fan-out, for convolutions; batch norm 1 and 0).
/// </summary>
internal sealed class ResNetEncoder : Encoder
{
#pragma warning disable IDE1006 // torchvision's names
    private readonly Convolution conv1;
    private readonly BatchNorm2d bn1;
    private readonly MaxPool2d maxpool;
    private readonly Sequential layer1, layer2, layer3, layer4;
#pragma warning restore IDE1006
    private readonly EncoderStage[] stages;
    private readonly int inChannels;

    /// <summary>Blocks per layer and whether they are bottlenecks, for each depth.</summary>
    public static (int[] Blocks, bool Bottleneck) Layout(EncoderKind kind) => kind switch
    {
        EncoderKind.ResNet18 => (new[] { 2, 2, 2, 2 }, false),
        EncoderKind.ResNet34 => (new[] { 3, 4, 6, 3 }, false),
        EncoderKind.ResNet50 => (new[] { 3, 4, 6, 3 }, true),
        EncoderKind.MlNetResNet18 => (new[] { 2, 2, 2, 3 }, false),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), $"{kind} is not a ResNet."),
    };

    /// <summary>Creates a randomly initialised ResNet encoder taking <paramref name="inChannels"/> channels.</summary>
    public ResNetEncoder(EncoderKind kind, int inChannels) : base(kind.ToString())
    {
        var (counts, bottleneck) = Layout(kind);
        int expansion = bottleneck ? 4 : 1;
        this.inChannels = inChannels;
        conv1 = new Convolution(inChannels, 64, 7, stride: 2, padding: 3, bias: false);
        bn1 = nn.BatchNorm2d(64);
        maxpool = nn.MaxPool2d(3, 2, 1);
        long inplanes = 64;
        Sequential Layer(int planes, int blocks, int stride)
        {
            var list = new List<(string, nn.Module<Tensor, Tensor>)>();
            for (int b = 0; b < blocks; b++)
            {
                int s = b == 0 ? stride : 1;
                list.Add(($"{b}", bottleneck ? new Bottleneck(inplanes, planes, s) : new BasicBlock(inplanes, planes, s)));
                inplanes = planes * expansion;
            }
            return nn.Sequential(list);
        }
        layer1 = Layer(64, counts[0], 1);
        layer2 = Layer(128, counts[1], 2);
        layer3 = Layer(256, counts[2], 2);
        layer4 = Layer(512, counts[3], 2);
        stages = new[] { new EncoderStage(64, 2), new EncoderStage(64 * expansion, 4), new EncoderStage(128 * expansion, 8), new EncoderStage(256 * expansion, 16), new EncoderStage(512 * expansion, 32) };
        RegisterComponents();
        using (no_grad())
            foreach (var c in modules().OfType<Convolution>())
                nn.init.kaiming_normal_(c.Weight, mode: nn.init.FanInOut.FanOut, nonlinearity: nn.init.NonlinearityType.ReLU);
    }

    /// <inheritdoc />
    public override IReadOnlyList<EncoderStage> Stages => stages;

    /// <inheritdoc />
    public override int InChannels => inChannels;

    /// <inheritdoc />
    public override Tensor[] forward(Tensor input)
    {
        var f1 = F.relu(bn1.forward(conv1.forward(input)), inplace: true);
        var f2 = layer1.forward(maxpool.forward(f1));
        var f3 = layer2.forward(f2);
        var f4 = layer3.forward(f3);
        return new[] { input, f1, f2, f3, f4, layer4.forward(f4) };
    }

    /// <inheritdoc />
    internal override string[] ExportOnnx(OnnxGraph g, string input, string path)
    {
        var f1 = g.Relu(g.BatchNorm(bn1, conv1.ExportOnnx(g, input, path + ".conv1"), path + ".bn1"));
        var f2 = g.Module(layer1, g.MaxPool(f1, 3, 2, 1), path + ".layer1");
        var f3 = g.Module(layer2, f2, path + ".layer2");
        var f4 = g.Module(layer3, f3, path + ".layer3");
        return new[] { input, f1, f2, f3, f4, g.Module(layer4, f4, path + ".layer4") };
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
        if (have != 3) throw new ArgumentException($"Only RGB (3-channel) first convolutions are adapted; this one has {have} input channels.");
        using var scope = NewDisposeScope();
        if (inChannels == 1) return weight.sum(1, keepdim: true).MoveToOuterDisposeScope();
        var index = tensor(Enumerable.Range(0, inChannels).Select(i => (long)(i % 3)).ToArray());
        return (weight.index_select(1, index) * (3.0 / inChannels)).MoveToOuterDisposeScope();
    }
}

/// <summary>torchvision's ResNet basic block: two 3x3 convolutions and a shortcut (1x1 convolution when the shape changes).</summary>
internal sealed class BasicBlock : nn.Module<Tensor, Tensor>, IOnnxExportable
{
#pragma warning disable IDE1006 // torchvision's names
    private readonly Convolution conv1, conv2;
    private readonly BatchNorm2d bn1, bn2;
    private readonly Sequential? downsample;
#pragma warning restore IDE1006

    /// <summary>Creates the block.</summary>
    public BasicBlock(long inplanes, long planes, int stride) : base(nameof(BasicBlock))
    {
        conv1 = new Convolution(inplanes, planes, 3, stride, 1, bias: false);
        bn1 = nn.BatchNorm2d(planes);
        conv2 = new Convolution(planes, planes, 3, 1, 1, bias: false);
        bn2 = nn.BatchNorm2d(planes);
        downsample = stride != 1 || inplanes != planes ? Shortcut(inplanes, planes, stride) : null;
        RegisterComponents();
    }

    internal static Sequential Shortcut(long inplanes, long outplanes, int stride) =>
        nn.Sequential(("0", new Convolution(inplanes, outplanes, 1, stride, 0, bias: false)), ("1", nn.BatchNorm2d(outplanes)));

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        var y = bn2.forward(conv2.forward(F.relu(bn1.forward(conv1.forward(x)), inplace: true)));
        return F.relu(y.add_(downsample?.forward(x) ?? x), inplace: true);
    }

    /// <inheritdoc />
    public string ExportOnnx(OnnxGraph g, string x, string path)
    {
        var y = g.Relu(g.BatchNorm(bn1, conv1.ExportOnnx(g, x, path + ".conv1"), path + ".bn1"));
        y = g.BatchNorm(bn2, conv2.ExportOnnx(g, y, path + ".conv2"), path + ".bn2");
        return g.Relu(g.Add(y, downsample is null ? x : g.Module(downsample, x, path + ".downsample")));
    }
}

/// <summary>torchvision's ResNet bottleneck (v1.5: the stride on the 3x3): 1x1 down, 3x3, 1x1 up to 4x the width.</summary>
internal sealed class Bottleneck : nn.Module<Tensor, Tensor>, IOnnxExportable
{
#pragma warning disable IDE1006 // torchvision's names
    private readonly Convolution conv1, conv2, conv3;
    private readonly BatchNorm2d bn1, bn2, bn3;
    private readonly Sequential? downsample;
#pragma warning restore IDE1006

    /// <summary>Creates the block.</summary>
    public Bottleneck(long inplanes, long planes, int stride) : base(nameof(Bottleneck))
    {
        conv1 = new Convolution(inplanes, planes, 1, 1, 0, bias: false);
        bn1 = nn.BatchNorm2d(planes);
        conv2 = new Convolution(planes, planes, 3, stride, 1, bias: false);
        bn2 = nn.BatchNorm2d(planes);
        conv3 = new Convolution(planes, planes * 4, 1, 1, 0, bias: false);
        bn3 = nn.BatchNorm2d(planes * 4);
        downsample = stride != 1 || inplanes != planes * 4 ? BasicBlock.Shortcut(inplanes, planes * 4, stride) : null;
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        var y = F.relu(bn1.forward(conv1.forward(x)), inplace: true);
        y = F.relu(bn2.forward(conv2.forward(y)), inplace: true);
        y = bn3.forward(conv3.forward(y));
        return F.relu(y.add_(downsample?.forward(x) ?? x), inplace: true);
    }

    /// <inheritdoc />
    public string ExportOnnx(OnnxGraph g, string x, string path)
    {
        var y = g.Relu(g.BatchNorm(bn1, conv1.ExportOnnx(g, x, path + ".conv1"), path + ".bn1"));
        y = g.Relu(g.BatchNorm(bn2, conv2.ExportOnnx(g, y, path + ".conv2"), path + ".bn2"));
        y = g.BatchNorm(bn3, conv3.ExportOnnx(g, y, path + ".conv3"), path + ".bn3");
        return g.Relu(g.Add(y, downsample is null ? x : g.Module(downsample, x, path + ".downsample")));
    }
}
