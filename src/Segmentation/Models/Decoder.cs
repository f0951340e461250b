using Segmentation.Models.Encoders;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using Segmentation.Models.Export;

namespace Segmentation.Models;

/// <summary>
/// The expanding half of a U-Net: from an encoder's feature maps (the input first, as <see cref="Encoder"/> returns
/// them) to a full-resolution feature map for the head. Both kinds compute their channel lists once from
/// <see cref="Encoder.Stages"/> and build identical blocks in a loop (<c>blocks.{i}</c>); each block doubles the
/// resolution, and takes the encoder map of that stride as its skip where there is one.
/// </summary>
internal abstract class Decoder : nn.Module<Tensor[], Tensor>
{
    /// <summary>Creates the module.</summary>
    protected Decoder(string name) : base(name) { }

    /// <summary>Channels of the output (the head's input).</summary>
    public abstract long OutChannels { get; }

    /// <summary>Adds the decoder to an ONNX graph: the encoder's feature names in, the last map's name out.</summary>
    public abstract string ExportOnnx(OnnxGraph g, string[] features, string path);

    /// <summary>Pads (or crops, for negative differences) <paramref name="x"/> to the height and width of <paramref name="like"/>, centred.</summary>
    internal static Tensor Align(Tensor x, Tensor like)
    {
        long dy = like.shape[2] - x.shape[2], dx = like.shape[3] - x.shape[3];
        return dy == 0 && dx == 0 ? x : F.pad(x, new[] { dx / 2, dx - dx / 2, dy / 2, dy - dy / 2 });
    }
}

/// <summary>
/// The U-Net paper's expanding path: each block upsamples (2x2 transposed convolution, or bilinear + 1x1), halving
/// the channels, concatenates the skip of the same stride and applies a <see cref="DoubleConv"/> to the skip's
/// channel count. With the default options this is the canonical U-Net's decoder.
/// </summary>
internal sealed class UNetDecoder : Decoder
{
    private readonly ModuleList<DecoderBlock> blocks;
    private readonly long outChannels;

    /// <summary>Builds one block per stage below the first.</summary>
    public UNetDecoder(IReadOnlyList<EncoderStage> stages, UpsamplingMode mode, NormLayer norm) : base(nameof(UNetDecoder))
    {
        if (stages[0].Stride != 1) throw new ArgumentException("The U-Net decoder needs an encoder whose first stage is at full resolution.");
        int n = stages.Count - 1;
        blocks = nn.ModuleList(Enumerable.Range(0, n)
            .Select(i => new DecoderBlock(stages[n - i].Channels, stages[n - 1 - i].Channels, stages[n - 1 - i].Channels, mode, norm)).ToArray());
        outChannels = stages[0].Channels;
        RegisterComponents();
    }

    /// <inheritdoc />
    public override long OutChannels => outChannels;

    /// <inheritdoc />
    public override Tensor forward(Tensor[] features)
    {
        var x = features[^1];
        for (int i = 0; i < blocks.Count; i++) x = blocks[i].forward(x, features[features.Length - 2 - i]);
        return x;
    }

    public override string ExportOnnx(OnnxGraph g, string[] features, string path)
    {
        var x = features[^1];
        for (int i = 0; i < blocks.Count; i++) x = blocks[i].ExportOnnx(g, x, features[features.Length - 2 - i], $"{path}.blocks.{i}");
        return x;
    }
}

/// <summary>
/// segmentation_models.pytorch's U-Net decoder: each block upsamples by nearest neighbour, concatenates the skip of
/// that stride (if the encoder has one), then two 3x3 convolution + normalisation + ReLU (<c>conv1.0</c>,
/// <c>conv1.1</c>, ...: smp's names), ending at full resolution with <c>decoderChannels[^1]</c> channels.
/// </summary>
internal sealed class SmpDecoder : Decoder
{
    private readonly ModuleList<SmpDecoderBlock> blocks;
    private readonly int[] skipIndex;
    private readonly long outChannels;

    /// <summary>smp's default decoder channels.</summary>
    public static readonly int[] DefaultChannels = { 256, 128, 64, 32, 16 };

    /// <summary>One block per halving of the encoder's deepest stride.</summary>
    public SmpDecoder(IReadOnlyList<EncoderStage> stages, IReadOnlyList<int> decoderChannels, NormLayer norm) : base(nameof(SmpDecoder))
    {
        int n = (int)Math.Round(Math.Log2(stages[^1].Stride));
        if (decoderChannels.Count != n)
            throw new OptionsException($"The encoder's deepest stride is {stages[^1].Stride}, so the decoder has {n} blocks, but {decoderChannels.Count} decoder channel counts were given.");
        var list = new List<SmpDecoderBlock>();
        skipIndex = new int[n];
        long inChannels = stages[^1].Channels;
        for (int i = 0; i < n; i++)
        {
            int stride = stages[^1].Stride >> (i + 1);
            int stage = stages.ToList().FindIndex(s => s.Stride == stride);
            skipIndex[i] = stage < 0 ? -1 : stage + 1; // features[0] is the input
            list.Add(new SmpDecoderBlock(inChannels, stage < 0 ? 0 : stages[stage].Channels, decoderChannels[i], norm));
            inChannels = decoderChannels[i];
        }
        blocks = nn.ModuleList(list.ToArray());
        outChannels = decoderChannels[^1];
        RegisterComponents();
    }

    /// <inheritdoc />
    public override long OutChannels => outChannels;

    /// <inheritdoc />
    public override Tensor forward(Tensor[] features)
    {
        var x = features[^1];
        for (int i = 0; i < blocks.Count; i++)
            x = blocks[i].forward(x, skipIndex[i] < 0 ? null : features[skipIndex[i]], features[0]);
        return x;
    }

    public override string ExportOnnx(OnnxGraph g, string[] features, string path)
    {
        var x = features[^1];
        for (int i = 0; i < blocks.Count; i++)
            x = blocks[i].ExportOnnx(g, x, skipIndex[i] < 0 ? null : features[skipIndex[i]], features[0], $"{path}.blocks.{i}");
        return x;
    }
}

/// <summary>One block of <see cref="SmpDecoder"/>.</summary>
internal sealed class SmpDecoderBlock : nn.Module<Tensor, Tensor?, Tensor, Tensor>
{
    private readonly Sequential conv1, conv2;

    /// <summary>Creates the block.</summary>
    public SmpDecoderBlock(long inChannels, long skipChannels, long outChannels, NormLayer norm) : base(nameof(SmpDecoderBlock))
    {
        conv1 = ConvNormRelu(inChannels + skipChannels, outChannels, norm);
        conv2 = ConvNormRelu(outChannels, outChannels, norm);
        RegisterComponents();
    }

    private static Sequential ConvNormRelu(long cin, long cout, NormLayer norm) => nn.Sequential(
        ("0", new Convolution(cin, cout, 3, padding: 1, bias: norm == NormLayer.None)),
        ("1", DoubleConv.Norm(cout, norm)),
        ("2", nn.ReLU(inplace: true)));

    /// <summary>Upsample, align to the skip (or, for the last block, to <paramref name="input"/>), concatenate, convolve.</summary>
    public override Tensor forward(Tensor x, Tensor? skip, Tensor input)
    {
        x = F.interpolate(x, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest);
        x = skip is null ? Decoder.Align(x, input) : cat(new[] { Decoder.Align(x, skip), skip }, 1);
        return conv2.forward(conv1.forward(x));
    }

    public string ExportOnnx(OnnxGraph g, string x, string? skip, string input, string path)
    {
        x = g.Upsample2(x, bilinear: false);
        x = skip is null ? g.AlignTo(x, input) : g.Concat(g.AlignTo(x, skip), skip);
        return g.Module(conv2, g.Module(conv1, x, path + ".conv1"), path + ".conv2");
    }
}
