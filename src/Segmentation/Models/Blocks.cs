using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Segmentation.Models.Export;

namespace Segmentation.Models;

/// <summary>Two 3x3 convolutions, each followed by normalisation and ReLU (the U-Net paper's level block).</summary>
internal sealed class DoubleConv : nn.Module<Tensor, Tensor>, IOnnxExportable
{
    private readonly Sequential block;

    /// <summary>Creates the block.</summary>
    public DoubleConv(long inChannels, long outChannels, NormLayer norm) : base(nameof(DoubleConv))
    {
        bool bias = norm == NormLayer.None;
        block = nn.Sequential(
            ("conv1", new Convolution(inChannels, outChannels, 3, padding: 1, bias: bias)),
            ("norm1", Norm(outChannels, norm)),
            ("relu1", nn.ReLU(inplace: true)),
            ("conv2", new Convolution(outChannels, outChannels, 3, padding: 1, bias: bias)),
            ("norm2", Norm(outChannels, norm)),
            ("relu2", nn.ReLU(inplace: true)));
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor input) => block.forward(input);

    /// <inheritdoc />
    public string ExportOnnx(OnnxGraph g, string input, string path) => g.Module(block, input, path + ".block");

    internal static nn.Module<Tensor, Tensor> Norm(long channels, NormLayer norm) => norm switch
    {
        NormLayer.Batch => nn.BatchNorm2d(channels),
        NormLayer.Group => new GroupNorm(Groups(channels), channels),
        _ => nn.Identity(),
    };

    /// <summary>Up to 32 groups that divide the channels evenly.</summary>
    internal static long Groups(long channels)
    {
        for (long g = Math.Min(32, channels); g > 1; g--)
            if (channels % g == 0) return g;
        return 1;
    }
}

/// <summary>Contracting step: 2x2 max-pool (halves the size), optional dropout, then a <see cref="DoubleConv"/> that doubles the channels.</summary>
internal sealed class EncoderBlock : nn.Module<Tensor, Tensor>, IOnnxExportable
{
    private readonly MaxPool2d pool;
    private readonly nn.Module<Tensor, Tensor> dropout;
    private readonly DoubleConv conv;

    /// <summary>Creates the block.</summary>
    public EncoderBlock(long inChannels, long outChannels, NormLayer norm, double dropout = 0) : base(nameof(EncoderBlock))
    {
        pool = nn.MaxPool2d(2);
        this.dropout = dropout > 0 ? nn.Dropout2d(dropout) : nn.Identity();
        conv = new DoubleConv(inChannels, outChannels, norm);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor input) => conv.forward(dropout.forward(pool.forward(input)));

    /// <inheritdoc />
    public string ExportOnnx(OnnxGraph g, string input, string path) => conv.ExportOnnx(g, g.MaxPool(input, 2, 2, 0), path + ".conv");
}

/// <summary>
/// Expanding step: upsample x2 (halving the channels), pad to the skip's size so odd sizes work, concatenate the
/// skip, then a <see cref="DoubleConv"/>.
/// </summary>
internal sealed class DecoderBlock : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> up;
    private readonly DoubleConv conv;

    /// <summary>Creates the block: <paramref name="inChannels"/> from below, <paramref name="skipChannels"/> from the skip.</summary>
    public DecoderBlock(long inChannels, long skipChannels, long outChannels, UpsamplingMode mode, NormLayer norm) : base(nameof(DecoderBlock))
    {
        long upChannels = inChannels / 2;
        up = mode == UpsamplingMode.Transposed
            ? new Convolution(inChannels, upChannels, 2, stride: 2, transposed: true)
            : nn.Sequential(
                ("upsample", nn.Upsample(scale_factor: new[] { 2.0, 2.0 }, mode: UpsampleMode.Bilinear, align_corners: true)),
                ("reduce", new Convolution(inChannels, upChannels, 1)));
        conv = new DoubleConv(skipChannels + upChannels, outChannels, norm);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor input, Tensor skip)
    {
        var x = up.forward(input);
        long dy = skip.shape[2] - x.shape[2], dx = skip.shape[3] - x.shape[3];
        if (dy != 0 || dx != 0)
            x = nn.functional.pad(x, new[] { dx / 2, dx - dx / 2, dy / 2, dy - dy / 2 });
        return conv.forward(cat(new[] { skip, x }, 1));
    }

    /// <summary>The same in ONNX: the upsampled map is aligned to the skip by a pad computed from both shapes.</summary>
    public string ExportOnnx(OnnxGraph g, string input, string skip, string path)
    {
        string x = up is Sequential s
            ? s.named_children().Aggregate(input, (v, c) => c.module is Upsample ? g.Upsample2(v, bilinear: true) : g.Module(c.module, v, $"{path}.up.{c.name}"))
            : g.Module(up, input, path + ".up");
        return conv.ExportOnnx(g, g.Concat(skip, g.AlignTo(x, skip)), path + ".conv");
    }
}

/// <summary>
/// Group normalisation (Wu and He 2018) with its affine weight 1 and bias 0 at the start, as PyTorch initialises it.
/// TorchSharp 0.107's <c>nn.GroupNorm</c> leaves both uninitialised (whatever the allocator returned: 1e25, NaN), so
/// this one is ours; <c>nn.functional.group_norm</c> computes it. State-dict keys <c>weight</c> and <c>bias</c>, as there.
/// </summary>
internal sealed class GroupNorm : nn.Module<Tensor, Tensor>, IOnnxExportable
{
#pragma warning disable IDE1006 // state-dict names
    private Parameter weight;
    private Parameter bias;
#pragma warning restore IDE1006

    /// <summary>Groups the channels are split into.</summary>
    public long Groups { get; }
    /// <summary>Added to the variance.</summary>
    public double Epsilon { get; }

    /// <summary>Creates the layer; <paramref name="channels"/> must be a multiple of <paramref name="groups"/>.</summary>
    public GroupNorm(long groups, long channels, double epsilon = 1e-5) : base(nameof(GroupNorm))
    {
        if (groups < 1 || channels % groups != 0) throw new ArgumentException($"GroupNorm: {channels} channels cannot be split into {groups} equal groups.");
        Groups = groups; Epsilon = epsilon;
        weight = new Parameter(ones(channels));
        bias = new Parameter(zeros(channels));
        RegisterComponents();
    }

    /// <summary>The per-channel scale.</summary>
    public Parameter Weight => weight;
    /// <summary>The per-channel shift.</summary>
    public Parameter Bias => bias;

    /// <summary>In float32 whatever the input's type (as autocast does), and returned in the input's type.</summary>
    public override Tensor forward(Tensor input)
    {
        if (input.dtype == weight.dtype) return nn.functional.group_norm(input, Groups, weight, bias, Epsilon);
        using var scope = NewDisposeScope();
        return nn.functional.group_norm(input.to(weight.dtype), Groups, weight, bias, Epsilon).to(input.dtype).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public string ExportOnnx(OnnxGraph g, string input, string path) => g.GroupNorm(input, path, Groups, Epsilon, weight, bias);
}
