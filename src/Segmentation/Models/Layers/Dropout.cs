using Segmentation.Models.Export;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Models.Layers;

/// <summary>Dropout while training (whole channels when <see cref="Channels"/>, as <c>Dropout2d</c>); the identity in
/// eval mode and in exports.</summary>
public sealed class Dropout : Layer
{
    /// <summary>Probability of zeroing an element (or a channel).</summary>
    public double Probability { get; }
    /// <summary>Drop whole channels of N x C x H x W (<c>Dropout2d</c>).</summary>
    public bool Channels { get; }

    /// <summary>Creates the layer.</summary>
    public Dropout(double probability, bool channels = false) : base(channels ? "Dropout2d" : "Dropout")
    {
        if (double.IsNaN(probability) || probability < 0 || probability >= 1)
            throw new ArgumentOutOfRangeException(nameof(probability),
                $"Dropout probability is {probability}; it must be in [0, 1).");
        Probability = probability; Channels = channels;
    }

    /// <inheritdoc />
    protected override Tensor Compute(Tensor input)
    {
        if (!training || Probability == 0) return input.alias();
        return Channels ? F.dropout2d(input, Probability, training) : F.dropout(input, Probability, training);
    }

    /// <inheritdoc />
    internal override string ExportOnnx(OnnxGraph g, string input, string path) => input;
}
