using TorchSharp.Modules;
using static TorchSharp.torch;
using Segmentation.Models.Export;

namespace Segmentation.Models.Encoders;

/// <summary>
/// The U-Net paper's contracting path: a <see cref="DoubleConv"/> stem at full resolution, then <c>depth</c>
/// <see cref="EncoderBlock"/>s that halve the size and double the channels. Stages: base channels at stride 1, twice
/// that at stride 2, and so on. State-dict keys <c>stem.*</c>, <c>blocks.{i}.*</c>.
/// </summary>
internal sealed class UNetEncoder : Encoder
{
    private readonly DoubleConv stem;
    private readonly ModuleList<EncoderBlock> blocks;
    private readonly EncoderStage[] stages;
    private readonly int inChannels;

    /// <summary>Creates the encoder; dropout applies to the input of the deepest block.</summary>
    public UNetEncoder(int inChannels, int baseChannels, int depth, NormLayer norm, double dropout) : base(nameof(UNetEncoder))
    {
        this.inChannels = inChannels;
        stages = Enumerable.Range(0, depth + 1).Select(i => new EncoderStage(baseChannels << i, 1 << i)).ToArray();
        stem = new DoubleConv(inChannels, baseChannels, norm);
        blocks = nn.ModuleList(Enumerable.Range(1, depth)
            .Select(i => new EncoderBlock(stages[i - 1].Channels, stages[i].Channels, norm, i == depth ? dropout : 0)).ToArray());
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

    /// <inheritdoc />
    internal override string[] ExportOnnx(OnnxGraph g, string input, string path)
    {
        var features = new string[stages.Length + 1];
        features[0] = input;
        var x = features[1] = stem.ExportOnnx(g, input, path + ".stem");
        for (int i = 0; i < blocks.Count; i++) x = features[i + 2] = blocks[i].ExportOnnx(g, x, $"{path}.blocks.{i}");
        return features;
    }
}
