using Segmentation.Models.Layers;
using Sequential = TorchSharp.Modules.Sequential;
using static TorchSharp.torch;

namespace Segmentation.Models.Encoders;

/// <summary>Two 3x3 convolutions, each followed by normalisation and ReLU (the U-Net paper's level block).</summary>
internal sealed class DoubleConv : nn.Module<Tensor, Tensor>
{
    private readonly Sequential block;

    /// <summary>Creates the block; state-dict keys <c>block.conv1</c>, <c>block.norm1</c>, <c>block.conv2</c>,
    /// <c>block.norm2</c>.</summary>
    public DoubleConv(long inChannels, long outChannels, NormLayer norm) : base(nameof(DoubleConv))
    {
        bool bias = norm == NormLayer.None;
        var layers = new List<(string, nn.Module<Tensor, Tensor>)>();
        void Level(int i, long cin)
        {
            layers.Add(($"conv{i}", new Convolution(cin, outChannels, 3, padding: 1, bias: bias)));
            if (NormLayers.Create(norm, outChannels) is { } n) layers.Add(($"norm{i}", n));
            layers.Add(($"relu{i}", Activation.Relu()));
        }
        Level(1, inChannels);
        Level(2, outChannels);
        block = nn.Sequential(layers);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor input) => block.forward(input);
}
