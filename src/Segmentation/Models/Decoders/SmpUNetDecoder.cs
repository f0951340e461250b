using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Sequential = TorchSharp.Modules.Sequential;
using static TorchSharp.torch;

namespace Segmentation.Models.Decoders;

/// <summary>Options of segmentation_models.pytorch's U-Net decoder (registered as <c>smp-unet</c>).</summary>
public sealed record SmpUNetDecoderOptions : IPartOptions
{
    /// <summary>Output channels of the decoder blocks, one per halving of the encoder's deepest stride (smp's 256, 128,
    /// 64, 32, 16).</summary>
    public int[] Channels { get; init; } = { 256, 128, 64, 32, 16 };
    /// <summary>The normalisation after each convolution.</summary>
    public NormLayer Norm { get; init; } = NormLayer.Batch;
    /// <summary>Channels of a full-resolution skip: two 3x3 convolution + normalisation + ReLU on the input image
    /// (<c>stem.*</c>), concatenated at the last block where the encoder has no stride-1 map. 0 (smp's): none, and the
    /// last block sees only the stride-2 features upsampled.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition =
        System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingDefault)]
    public int FullResolutionChannels { get; init; }

    /// <inheritdoc />
    public void Validate()
    {
        if (Channels.Length == 0 || Channels.Any(c => c < 1 || c > 65536))
            throw new OptionsException($"smp U-Net decoder Channels [{string.Join(", ", Channels)}] must be counts "
                + $"from 1 to 65536, one per decoder block.");
        if (FullResolutionChannels is < 0 or > 65536)
            throw new OptionsException($"smp U-Net decoder FullResolutionChannels {FullResolutionChannels} must be 0 "
                + "(none) to 65536.");
        if (!Enum.IsDefined(Norm))
            throw new OptionsException($"smp U-Net decoder Norm {Norm} is not one of: "
                + $"{string.Join(", ", Enum.GetNames<NormLayer>())}.");
    }
}

/// <summary>
/// segmentation_models.pytorch's U-Net decoder: each block upsamples by nearest neighbour, concatenates the skip of
/// that stride (if the encoder has one), then two 3x3 convolution + normalisation + ReLU (<c>conv1.0</c>,
/// <c>conv1.1</c>, ...: smp's names), ending at full resolution with the last block's channels. With
/// <see cref="SmpUNetDecoderOptions.FullResolutionChannels"/>, a small stem on the input is the last block's skip (the
/// paper's U-Net has one at every stride; smp's ResNet U-Net has none at stride 1, where thin structures are drawn).
/// </summary>
internal sealed class SmpUNetDecoder : Decoder
{
    private readonly TorchSharp.Modules.ModuleList<SmpDecoderBlock> blocks;
    private readonly Sequential? stem;
    private readonly int[] skipIndex;
    private readonly long outChannels;

    /// <summary>One block per halving of the encoder's deepest stride.</summary>
    public SmpUNetDecoder(IReadOnlyList<EncoderStage> stages, int inChannels, SmpUNetDecoderOptions o)
        : base("SmpDecoder")
    {
        int n = (int)Math.Round(Math.Log2(stages[^1].Stride));
        if (o.Channels.Length != n)
            throw new OptionsException($"The encoder's deepest stride is {stages[^1].Stride}, so the decoder has {n} "
                + $"blocks, "
                + $"but {o.Channels.Length} decoder channel counts were given.");
        var list = new List<SmpDecoderBlock>();
        skipIndex = new int[n];
        long channels = stages[^1].Channels;
        for (int i = 0; i < n; i++)
        {
            int stride = stages[^1].Stride >> (i + 1);
            int stage = stages.ToList().FindIndex(s => s.Stride == stride);
            skipIndex[i] = stage < 0 ? -1 : stage + 1; // features[0] is the input
            long skip = stage >= 0 ? stages[stage].Channels : i == n - 1 ? o.FullResolutionChannels : 0; // stride 1
            list.Add(new SmpDecoderBlock(channels, skip, o.Channels[i], o.Norm));
            channels = o.Channels[i];
        }
        blocks = nn.ModuleList(list.ToArray());
        if (o.FullResolutionChannels > 0 && skipIndex[^1] < 0)
            stem = nn.Sequential(("0", SmpDecoderBlock.ConvNormRelu(inChannels, o.FullResolutionChannels, o.Norm)),
                ("1", SmpDecoderBlock.ConvNormRelu(o.FullResolutionChannels, o.FullResolutionChannels, o.Norm)));
        outChannels = o.Channels[^1];
        RegisterComponents();
    }

    /// <inheritdoc />
    public override long OutChannels => outChannels;

    /// <inheritdoc />
    public override Tensor forward(Tensor[] features)
    {
        var x = features[^1];
        for (int i = 0; i < blocks.Count; i++)
            x = blocks[i].forward(x, skipIndex[i] >= 0 ? features[skipIndex[i]]
                : i == blocks.Count - 1 ? stem?.forward(features[0]) : null, features[0]);
        return x;
    }
}

/// <summary>One block of <see cref="SmpUNetDecoder"/>.</summary>
internal sealed class SmpDecoderBlock : nn.Module<Tensor, Tensor?, Tensor, Tensor>
{
    private readonly Upsample up = new(bilinear: false);
    private readonly Sequential conv1, conv2;

    /// <summary>Creates the block.</summary>
    public SmpDecoderBlock(long inChannels, long skipChannels, long outChannels, NormLayer norm)
        : base(nameof(SmpDecoderBlock))
    {
        conv1 = ConvNormRelu(inChannels + skipChannels, outChannels, norm);
        conv2 = ConvNormRelu(outChannels, outChannels, norm);
        RegisterComponents();
    }

    /// <summary>3x3 convolution (no bias under a normalisation), normalisation, ReLU: smp's Conv2dReLU.</summary>
    internal static Sequential ConvNormRelu(long cin, long cout, NormLayer norm)
    {
        var layers = new List<(string, nn.Module<Tensor,
            Tensor>)> { ("0", new Convolution(cin, cout, 3, padding: 1, bias: norm == NormLayer.None)) };
        if (NormLayers.Create(norm, cout) is { } n) layers.Add(("1", n));
        layers.Add(("2", Activation.Relu()));
        return nn.Sequential(layers);
    }

    /// <summary>Upsample, align to the skip (or, for the last block, to <paramref name="input"/>), concatenate,
    /// convolve.</summary>
    public override Tensor forward(Tensor x, Tensor? skip, Tensor input)
    {
        x = up.forward(x);
        x = skip is null ? LayerOps.AlignTo(x, input) : LayerOps.Concat(LayerOps.AlignTo(x, skip), skip);
        return conv2.forward(conv1.forward(x));
    }
}
