using Segmentation.Models.Export;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Sequential = TorchSharp.Modules.Sequential;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Models.Decoders;

/// <summary>Options of segmentation_models.pytorch's FPN decoder (registered as <c>fpn</c>), smp's defaults.</summary>
public sealed record FpnDecoderOptions : IPartOptions
{
    /// <summary>Channels of the feature pyramid (smp's <c>decoder_pyramid_channels</c>).</summary>
    public int PyramidChannels { get; init; } = 256;
    /// <summary>Channels of the segmentation blocks and of the merged map (smp's
    /// <c>decoder_segmentation_channels</c>); a multiple of 32, the group norm's groups.</summary>
    public int SegmentationChannels { get; init; } = 128;
    /// <summary>Channel dropout on the merged map while training (smp's <c>decoder_dropout</c>).</summary>
    public double Dropout { get; init; } = 0.2;

    /// <inheritdoc />
    public void Validate()
    {
        if (PyramidChannels is < 1 or > 65536)
            throw new OptionsException($"FPN PyramidChannels {PyramidChannels} must be 1 to 65536.");
        if (SegmentationChannels is < 32 or > 65536 || SegmentationChannels % 32 != 0)
            throw new OptionsException($"FPN SegmentationChannels {SegmentationChannels} must be a multiple of 32 "
                + "(the group norm's 32 groups) up to 65536.");
        if (double.IsNaN(Dropout) || Dropout is < 0 or >= 1)
            throw new OptionsException($"FPN Dropout {Dropout} must be in [0, 1).");
    }
}

/// <summary>Options of the FPN head (none: a 1x1 convolution, smp's).</summary>
internal sealed record FpnHeadOptions;

/// <summary>
/// segmentation_models.pytorch's FPN decoder (Kirillov et al.'s panoptic FPN, smp's <c>FPNDecoder</c> with merge by
/// addition): the encoder's four deepest maps c2..c5 become a pyramid p5..p2 (<c>p5</c>: 1x1 convolution; <c>p4</c>..
/// <c>p2</c>: the coarser level upsampled by nearest neighbour plus a 1x1 <c>skip_conv</c> of the skip), each level
/// goes through a segmentation block (<c>seg_blocks.i.block.j.block</c>: 3x3 convolution, group norm of 32, ReLU,
/// then bilinear upsampling with aligned corners, until it reaches p2's size), the four are added and dropped out by
/// channel. The output has <see cref="FpnDecoderOptions.SegmentationChannels"/> channels at c2's stride (4 for the
/// ResNets); the <c>fpn-conv</c> head classifies it and upsamples to the input. Keys are smp's
/// (<c>decoder.p5.weight</c>, <c>decoder.p4.skip_conv.weight</c>, <c>decoder.seg_blocks.0.block.0.block.1.weight</c>,
/// <c>segmentation_head.0.weight</c>), initialised as smp initialises them. Where smp doubles a map's size, this
/// resizes it to the next level's size, which is the same on inputs divisible by 32 and lets any size through.
/// </summary>
internal sealed class FpnDecoder : Decoder
{
#pragma warning disable IDE1006 // smp's names
    private readonly Convolution p5;
    private readonly FpnBlock p4, p3, p2;
    private readonly TorchSharp.Modules.ModuleList<FpnSegmentationBlock> seg_blocks;
    private readonly Dropout dropout;
#pragma warning restore IDE1006
    private readonly long outChannels;
    private readonly int outStride;

    /// <summary>Registers its resize op, the decoder, its head and the <c>fpn</c> architecture (any encoder with four
    /// maps).</summary>
    internal static void Register()
    {
        Ops.Add(ResizeToOp.Nearest);
        Ops.Add(ResizeToOp.BilinearAligned);
        ModelRegistry.AddDecoder<FpnDecoderOptions>("fpn", (c, o) => new FpnDecoder(c.Encoder.Stages, o),
            "segmentation_models.pytorch's FPN decoder: a 256-wide pyramid on the encoder's four deepest maps, "
                + "128-wide segmentation blocks merged by addition, dropout 0.2 (smp's keys).");
        ModelRegistry.AddHead<FpnHeadOptions>("fpn-conv", (c, _) => new FpnHead(c.InChannels, c.Classes),
            "smp's FPN head: a 1x1 convolution to class logits, upsampled bilinearly (aligned corners) to the input, "
                + "keys segmentation_head.0.*.");
        ModelRegistry.AddArchitecture("fpn",
            "FPN (segmentation_models.pytorch's): encoder -> feature pyramid -> merged segmentation map at stride 4 "
                + "-> 1x1 convolution, logits upsampled to the input.",
            _ => new ModelPart("fpn"), _ => new ModelPart("fpn-conv"));
    }

    /// <summary>Builds the decoder on the encoder's four deepest maps.</summary>
    public FpnDecoder(IReadOnlyList<EncoderStage> stages, FpnDecoderOptions o) : base("FPNDecoder")
    {
        if (stages.Count < 4)
            throw new OptionsException($"The FPN decoder takes the encoder's four deepest feature maps; this encoder "
                + $"has {stages.Count}.");
        long c2 = stages[^4].Channels, c3 = stages[^3].Channels, c4 = stages[^2].Channels, c5 = stages[^1].Channels;
        p5 = new Convolution(c5, o.PyramidChannels, 1);
        p4 = new FpnBlock(o.PyramidChannels, c4);
        p3 = new FpnBlock(o.PyramidChannels, c3);
        p2 = new FpnBlock(o.PyramidChannels, c2);
        seg_blocks = nn.ModuleList(new[] { 3, 2, 1, 0 }.Select(up =>
            new FpnSegmentationBlock(o.PyramidChannels, o.SegmentationChannels, up)).ToArray());
        dropout = new Dropout(o.Dropout, channels: true);
        outChannels = o.SegmentationChannels;
        outStride = stages[^4].Stride;
        RegisterComponents();
        using var _ = no_grad();
        foreach (var conv in modules().OfType<Convolution>()) // smp's initialize_decoder
        {
            nn.init.kaiming_uniform_(conv.Weight, mode: nn.init.FanInOut.FanIn,
                nonlinearity: nn.init.NonlinearityType.ReLU);
            conv.Bias?.zero_();
        }
    }

    /// <inheritdoc />
    public override long OutChannels => outChannels;

    /// <inheritdoc />
    public override int OutStride => outStride;

    /// <inheritdoc />
    public override Tensor forward(Tensor[] features)
    {
        var (c2, c3, c4, c5) = (features[^4], features[^3], features[^2], features[^1]);
        var l5 = p5.forward(c5);
        var l4 = p4.forward(l5, c4);
        var l3 = p3.forward(l4, c3);
        var l2 = p2.forward(l3, c2);
        var levels = new[] { l5, l4, l3, l2 };
        var merged = seg_blocks[0].forward(l5, levels[1..]);
        for (int i = 1; i < 4; i++) merged = LayerOps.Add(merged, seg_blocks[i].forward(levels[i], levels[(i + 1)..]));
        return dropout.forward(merged);
    }
}

/// <summary>
/// <c>x</c> resized to the height and width of <c>like</c> (the op's two inputs): by nearest neighbour (PyTorch's
/// floor rule, its float32 scale) or bilinearly with aligned corners, as smp's <c>F.interpolate(scale_factor=2)</c>
/// calls are where the sizes double. Route 1 spells it out with gathers (nearest: the same indices; bilinear: the two
/// neighbours on each axis and their weights); the ONNX node is a <c>Resize</c> to sizes read from both shapes when
/// the graph runs.
/// </summary>
internal sealed class ResizeToOp : Op
{
    /// <summary>Nearest neighbour (smp's pyramid).</summary>
    public static ResizeToOp Nearest { get; } = new(nearest: true);
    /// <summary>Bilinear with aligned corners (smp's segmentation blocks and head).</summary>
    public static ResizeToOp BilinearAligned { get; } = new(nearest: false);

    private readonly bool nearest;

    private ResizeToOp(bool nearest) : base(nearest ? "ResizeToNearest" : "ResizeToBilinearAligned")
        => this.nearest = nearest;

    /// <inheritdoc />
    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs)
    {
        var (x, like) = (inputs[0], inputs[1]);
        var size = new[] { like.shape[2], like.shape[3] };
        if (route == 0)
            return nearest ? F.interpolate(x, size, mode: InterpolationMode.Nearest)
                : F.interpolate(x, size, mode: InterpolationMode.Bilinear, align_corners: true);
        using var scope = NewDisposeScope();
        var y = nearest ? Pick(Pick(x, 2, size[0]), 3, size[1]) : Lerp(Lerp(x, 2, size[0]), 3, size[1]);
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>PyTorch's nearest source of each output index: floor(index x (in / out)), the scale in
    /// float32.</summary>
    private static Tensor Pick(Tensor x, int dim, long outSize)
    {
        long n = x.shape[dim];
        float scale = (float)n / outSize;
        var index = new long[outSize];
        for (long i = 0; i < outSize; i++) index[i] = Math.Min((long)MathF.Floor(i * scale), n - 1);
        return x.index_select(dim, tensor(index, device: x.device));
    }

    /// <summary>Linear interpolation along one axis with aligned corners: source i (in - 1) / (out - 1).</summary>
    private static Tensor Lerp(Tensor x, int dim, long outSize)
    {
        long n = x.shape[dim];
        double scale = outSize > 1 ? (n - 1) / (double)(outSize - 1) : 0;
        var src = arange(outSize, ScalarType.Float64) * scale;
        var i0 = src.floor().clamp(max: n - 1).to(ScalarType.Int64);
        var i1 = (i0 + 1).clamp(max: n - 1);
        var shape = new long[] { 1, 1, 1, 1 };
        shape[dim] = outSize;
        var w = (src - i0.to(ScalarType.Float64)).to(x.dtype).to(x.device).reshape(shape);
        return x.index_select(dim, i0.to(x.device)) * (1 - w) + x.index_select(dim, i1.to(x.device)) * w;
    }

    /// <inheritdoc />
    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs)
    {
        var sizes = g.SizesLike(inputs[0], inputs[1]);
        return nearest
            ? g.Node("Resize", new[] { inputs[0], "", "", sizes }, OnnxGraph.String("mode", "nearest"),
                OnnxGraph.String("coordinate_transformation_mode", "asymmetric"),
                OnnxGraph.String("nearest_mode", "floor"))
            : g.Node("Resize", new[] { inputs[0], "", "", sizes }, OnnxGraph.String("mode", "linear"),
                OnnxGraph.String("coordinate_transformation_mode", "align_corners"));
    }

    /// <summary>Doubling (the pyramid of an input divisible by 32), the odd sizes of other inputs, and a
    /// shrink.</summary>
    internal override IReadOnlyList<Tensor[]> CheckInputs()
    {
        var g = new Generator(11);
        Tensor[] Case(long c, long h, long w, long oh, long ow) => new[]
        {
            randn(new long[] { 2, c, h, w }, ScalarType.Float64, generator: g),
            zeros(new long[] { 1, 1, oh, ow }, ScalarType.Float64),
        };
        return new[] { Case(3, 4, 6, 8, 12), Case(2, 3, 5, 5, 9), Case(2, 9, 18, 18, 35), Case(1, 7, 7, 4, 5) };
    }
}

/// <summary>smp's <c>FPNBlock</c>: the coarser level upsampled by nearest neighbour plus a 1x1 convolution of the
/// skip.</summary>
internal sealed class FpnBlock : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006 // smp's names
    private readonly Convolution skip_conv;
#pragma warning restore IDE1006

    public FpnBlock(long pyramidChannels, long skipChannels) : base("FPNBlock")
    {
        skip_conv = new Convolution(skipChannels, pyramidChannels, 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor skip) =>
        LayerOps.Add(ResizeToOp.Nearest.Run(x, skip), skip_conv.forward(skip));
}

/// <summary>smp's <c>SegmentationBlock</c>: one <c>Conv3x3GNReLU</c> per upsampling (one when there is none), each
/// followed by bilinear upsampling to the next finer pyramid level.</summary>
internal sealed class FpnSegmentationBlock : nn.Module<Tensor, Tensor[], Tensor>
{
    private readonly Sequential block;
    private readonly int upsamples;

    public FpnSegmentationBlock(long inChannels, long outChannels, int upsamples) : base("SegmentationBlock")
    {
        this.upsamples = upsamples;
        var blocks = new List<(string, nn.Module<Tensor, Tensor>)>();
        for (int i = 0; i < Math.Max(1, upsamples); i++)
        {
            var conv = new Convolution(i == 0 ? inChannels : outChannels, outChannels, 3, padding: 1, bias: false);
            var convGnRelu = nn.Sequential(("0", conv), ("1", new GroupNorm(32, outChannels)),
                ("2", Activation.Relu()));
            blocks.Add((i.ToString(System.Globalization.CultureInfo.InvariantCulture),
                nn.Sequential(("block", convGnRelu))));
        }
        block = nn.Sequential(blocks);
        RegisterComponents();
    }

    /// <summary>Convolves <paramref name="x"/>, upsampling it to each of <paramref name="finer"/> in turn.</summary>
    public override Tensor forward(Tensor x, Tensor[] finer)
    {
        var convs = block.children().Cast<Sequential>().ToList();
        for (int i = 0; i < convs.Count; i++)
        {
            x = convs[i].forward(x);
            if (i < upsamples) x = ResizeToOp.BilinearAligned.Run(x, finer[i]);
        }
        return x;
    }
}

/// <summary>smp's <c>SegmentationHead</c> for FPN: a 1x1 convolution (<c>segmentation_head.0</c>, Xavier-uniform,
/// bias 0), then bilinear upsampling with aligned corners to the input (smp's
/// <c>UpsamplingBilinear2d(4)</c>).</summary>
internal sealed class FpnHead : Head
{
    private readonly Sequential head;

    public FpnHead(long inChannels, int classes) : base("FPNHead")
    {
        var conv = new Convolution(inChannels, classes, 1);
        using (no_grad())
        {
            nn.init.xavier_uniform_(conv.Weight);
            conv.Bias!.zero_();
        }
        head = nn.Sequential(("0", conv));
        RegisterComponents();
    }

    /// <inheritdoc />
    public override IEnumerable<(string Name, nn.Module Module)> StateDictModules() =>
        new[] { ("segmentation_head", (nn.Module)head) };

    /// <inheritdoc />
    public override ModelOutputs forward(HeadInput x) =>
        new(ResizeToOp.BilinearAligned.Run(head.forward(x.Decoded), x.Input));
}
