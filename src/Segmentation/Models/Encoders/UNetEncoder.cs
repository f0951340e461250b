using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Sequential = TorchSharp.Modules.Sequential;
using static TorchSharp.torch;

namespace Segmentation.Models.Encoders;

/// <summary>Options of the U-Net paper's encoder (registered as <c>unet</c>).</summary>
public sealed record UNetEncoderOptions : IPartOptions
{
    /// <summary>Channels of the first level; each level below doubles them.</summary>
    public int BaseChannels { get; init; } = 64;
    /// <summary>Number of 2x2 down-samplings (levels below the first).</summary>
    public int Depth { get; init; } = 4;
    /// <summary>The normalisation after each convolution.</summary>
    public NormLayer Norm { get; init; } = NormLayer.Batch;
    /// <summary>Dropout2d probability applied to the input of the bottleneck; 0 turns it off.</summary>
    public double Dropout { get; init; }

    /// <inheritdoc />
    public void Validate()
    {
        if (BaseChannels < 1)
            throw new OptionsException($"U-Net encoder BaseChannels is {BaseChannels}; it must be at least 1.");
        if (Depth < 1 || Depth > 8)
            throw new OptionsException($"U-Net encoder Depth is {Depth}; it must be between 1 and 8.");
        if ((long)BaseChannels << Depth > 65536)
            throw new OptionsException($"U-Net encoder BaseChannels {BaseChannels} at Depth {Depth} gives "
                + $"{(long)BaseChannels << Depth} "
                + "bottleneck channels; the limit is 65536.");
        if (Norm == NormLayer.Group && BaseChannels < 2)
            throw new OptionsException("U-Net group normalisation needs BaseChannels of at least 2.");
        if (double.IsNaN(Dropout) || Dropout < 0 || Dropout >= 1)
            throw new OptionsException($"U-Net encoder Dropout is {Dropout}; it must be in [0, 1).");
        if (!Enum.IsDefined(Norm))
            throw new OptionsException($"U-Net encoder Norm {Norm} is not one of: "
                + $"{string.Join(", ", Enum.GetNames<NormLayer>())}.");
    }
}

/// <summary>
/// The U-Net paper's contracting path: a <see cref="DoubleConv"/> stem at full resolution, then <c>depth</c>
/// <see cref="EncoderBlock"/>s that halve the size and double the channels. Stages: base channels at stride 1, twice
/// that at stride 2, and so on. State-dict keys <c>stem.*</c>, <c>blocks.{i}.*</c>.
/// </summary>
internal sealed class UNetEncoder : Encoder
{
    private readonly DoubleConv stem;
    private readonly TorchSharp.Modules.ModuleList<EncoderBlock> blocks;
    private readonly EncoderStage[] stages;
    private readonly int inChannels;

    /// <summary>Creates the encoder; dropout applies to the input of the deepest block.</summary>
    public UNetEncoder(int inChannels, UNetEncoderOptions o) : base(nameof(UNetEncoder))
    {
        this.inChannels = inChannels;
        stages = Enumerable.Range(0, o.Depth + 1).Select(i => new EncoderStage(o.BaseChannels << i, 1 << i)).ToArray();
        stem = new DoubleConv(inChannels, o.BaseChannels, o.Norm);
        blocks = nn.ModuleList(Enumerable.Range(1, o.Depth)
            .Select(i => new EncoderBlock(stages[i - 1].Channels, stages[i].Channels, o.Norm, i == o.Depth ? o.Dropout
                : 0)).ToArray());
        RegisterComponents();
    }

    /// <inheritdoc />
    public override IReadOnlyList<EncoderStage> Stages => stages;

    /// <inheritdoc />
    public override int InChannels => inChannels;

    /// <inheritdoc />
    public override Tensor[] forward(Tensor input)
    {
        var features = new Tensor[stages.Length + 1];
        features[0] = input;
        var x = features[1] = stem.forward(input);
        for (int i = 0; i < blocks.Count; i++) x = features[i + 2] = blocks[i].forward(x);
        return features;
    }
}

/// <summary>Contracting step: 2x2 max-pool (halves the size), optional dropout, then a <see cref="DoubleConv"/> that
/// doubles the channels.</summary>
internal sealed class EncoderBlock : nn.Module<Tensor, Tensor>
{
    private readonly MaxPool pool;
    private readonly Layers.Dropout dropout;
    private readonly DoubleConv conv;

    /// <summary>Creates the block.</summary>
    public EncoderBlock(long inChannels, long outChannels, NormLayer norm, double dropout = 0)
        : base(nameof(EncoderBlock))
    {
        pool = new MaxPool(2);
        this.dropout = new Layers.Dropout(dropout, channels: true);
        conv = new DoubleConv(inChannels, outChannels, norm);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor input) => conv.forward(dropout.forward(pool.forward(input)));
}
