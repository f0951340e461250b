using Segmentation.Models.Export;
using static TorchSharp.torch;

namespace Segmentation.Models.Layers;

/// <summary>
/// Stochastic depth (Huang et al. 2016): while training, each sample's residual branch is dropped with probability
/// <see cref="Probability"/> and the kept ones scaled by 1 / (1 - p); the identity in eval mode and in exports.
/// </summary>
public sealed class DropPath : Layer
{
    /// <summary>Probability of dropping a sample's branch.</summary>
    public double Probability { get; }

    /// <summary>Creates the layer.</summary>
    public DropPath(double probability) : base(nameof(DropPath))
    {
        if (double.IsNaN(probability) || probability < 0 || probability >= 1)
            throw new ArgumentOutOfRangeException(nameof(probability),
                $"DropPath probability is {probability}; it must be in [0, 1).");
        Probability = probability;
    }

    /// <inheritdoc />
    protected override Tensor Compute(Tensor input)
    {
        if (!training || Probability == 0) return input.alias();
        using var scope = NewDisposeScope();
        double keep = 1 - Probability;
        var shape = new long[input.dim()];
        Array.Fill(shape, 1L);
        shape[0] = input.shape[0];
        var mask = (rand(shape, input.dtype, input.device) + keep).floor_();
        return (input / keep * mask).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    internal override string ExportOnnx(OnnxGraph g, string input, string path) => input;
}
