using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Sequential = TorchSharp.Modules.Sequential;
using static TorchSharp.torch;

namespace Segmentation.Models.Decoders;

/// <summary>Options of the U-Net paper's decoder (registered as <c>unet</c>).</summary>
public sealed record UNetDecoderOptions : IPartOptions
{
    /// <summary>How each block upsamples.</summary>
    public UpsamplingMode Upsampling { get; init; } = UpsamplingMode.Transposed;
    /// <summary>The normalisation after each convolution.</summary>
    public NormLayer Norm { get; init; } = NormLayer.Batch;

    /// <inheritdoc />
    public void Validate()
    {
        if (!Enum.IsDefined(Upsampling))
            throw new OptionsException($"U-Net decoder Upsampling {Upsampling} is not one of: "
                + $"{string.Join(", ", Enum.GetNames<UpsamplingMode>())}.");
        if (!Enum.IsDefined(Norm))
            throw new OptionsException($"U-Net decoder Norm {Norm} is not one of: "
                + $"{string.Join(", ", Enum.GetNames<NormLayer>())}.");
    }
}

/// <summary>
/// The U-Net paper's expanding path: each block upsamples (2x2 transposed convolution, or bilinear + 1x1), halving
/// the channels, concatenates the skip of the same stride and applies a <see cref="DoubleConv"/> to the skip's
/// channel count. With the default options this is the canonical U-Net's decoder. Keys <c>blocks.{i}.*</c>.
/// </summary>
internal sealed class UNetDecoder : Decoder
{
    private readonly TorchSharp.Modules.ModuleList<DecoderBlock> blocks;
    private readonly long outChannels;

    /// <summary>Builds one block per stage below the first.</summary>
    public UNetDecoder(IReadOnlyList<EncoderStage> stages, UNetDecoderOptions o) : base(nameof(UNetDecoder))
    {
        if (stages[0].Stride != 1)
            throw new OptionsException("The U-Net decoder needs an encoder whose first stage is at full resolution "
                + "(the unet encoder).");
        int n = stages.Count - 1;
        blocks = nn.ModuleList(Enumerable.Range(0, n)
            .Select(i => new DecoderBlock(stages[n - i].Channels, stages[n - 1 - i].Channels,
                stages[n - 1 - i].Channels, o.Upsampling, o.Norm))
            .ToArray());
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
}

/// <summary>
/// Expanding step: upsample x2 (halving the channels), pad to the skip's size so odd sizes work, concatenate the
/// skip, then a <see cref="DoubleConv"/>.
/// </summary>
internal sealed class DecoderBlock : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> up;
    private readonly DoubleConv conv;

    /// <summary>Creates the block: <paramref name="inChannels"/> from below, <paramref name="skipChannels"/> from the
    /// skip.</summary>
    public DecoderBlock(long inChannels, long skipChannels, long outChannels, UpsamplingMode mode, NormLayer norm)
        : base(nameof(DecoderBlock))
    {
        long upChannels = inChannels / 2;
        up = mode == UpsamplingMode.Transposed
            ? new Convolution(inChannels, upChannels, 2, stride: 2, transposed: true)
            : nn.Sequential(("upsample", new Upsample(bilinear: true)),
            ("reduce", new Convolution(inChannels, upChannels, 1)));
        conv = new DoubleConv(skipChannels + upChannels, outChannels, norm);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor input, Tensor skip) =>
        conv.forward(LayerOps.Concat(skip, LayerOps.AlignTo(up.forward(input), skip)));
}
