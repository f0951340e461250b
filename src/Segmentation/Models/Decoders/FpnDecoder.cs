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

    /// <summary>Registers the decoder, its head and the <c>fpn</c> architecture (any encoder with four maps).</summary>
    internal static void Register()
    {
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

    /// <summary>
    /// <paramref name="x"/> resized to the height and width of <paramref name="like"/>: by nearest neighbour
    /// (PyTorch's floor rule) or bilinearly with aligned corners, as smp's <c>F.interpolate(scale_factor=2)</c> calls
    /// are; recorded for the ONNX export as a <c>Resize</c> to sizes read from both shapes when the graph runs.
    /// </summary>
    internal static Tensor ResizeTo(Tensor x, Tensor like, bool nearest)
    {
        var size = new[] { like.shape[2], like.shape[3] };
        var y = nearest ? F.interpolate(x, size, mode: InterpolationMode.Nearest)
            : F.interpolate(x, size, mode: InterpolationMode.Bilinear, align_corners: true);
        OnnxTrace.Current?.Op(y, g =>
        {
            string Slice(string v, long start, long end) => g.Node("Slice",
                new[] { g.Node("Shape", new[] { v }), g.Int64s("start", start), g.Int64s("end", end) });
            var source = g.Trace.NameOf(x, "FpnDecoder.ResizeTo");
            var sizes = g.Node("Concat", new[] { Slice(source, 0, 2),
                Slice(g.Trace.NameOf(like, "FpnDecoder.ResizeTo"), 2, 4) }, OnnxGraph.Int("axis", 0));
            return nearest
                ? g.Node("Resize", new[] { source, "", "", sizes }, OnnxGraph.String("mode", "nearest"),
                    OnnxGraph.String("coordinate_transformation_mode", "asymmetric"),
                    OnnxGraph.String("nearest_mode", "floor"))
                : g.Node("Resize", new[] { source, "", "", sizes }, OnnxGraph.String("mode", "linear"),
                    OnnxGraph.String("coordinate_transformation_mode", "align_corners"));
        });
        return y;
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
        LayerOps.Add(FpnDecoder.ResizeTo(x, skip, nearest: true), skip_conv.forward(skip));
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
            if (i < upsamples) x = FpnDecoder.ResizeTo(x, finer[i], nearest: false);
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
        new(FpnDecoder.ResizeTo(head.forward(x.Decoded), x.Input, nearest: false));
}
