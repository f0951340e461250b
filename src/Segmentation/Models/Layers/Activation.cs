using Segmentation.Models.Export;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Models.Layers;

/// <summary>The element-wise functions an <see cref="Activation"/> applies.</summary>
public enum ActivationKind
{
    /// <summary>max(x, 0).</summary>
    Relu,
    /// <summary>The exact GELU, x Φ(x) (with erf, as PyTorch's default).</summary>
    Gelu,
    /// <summary>1 / (1 + e^-x).</summary>
    Sigmoid,
}

/// <summary>An element-wise activation as a layer (no parameters, no summary row, nothing to check).</summary>
public sealed class Activation : Layer
{
    /// <summary>The function.</summary>
    public ActivationKind Kind { get; }
    /// <summary>Overwrite the input (ReLU only; saves memory where the input is not needed again).</summary>
    public bool InPlace { get; }

    /// <summary>Creates the layer.</summary>
    public Activation(ActivationKind kind, bool inPlace = false) : base(kind.ToString())
    {
        Kind = kind;
        InPlace = inPlace && kind == ActivationKind.Relu;
    }

    /// <summary>A ReLU (in place by default, as the U-Net blocks use it).</summary>
    public static Activation Relu(bool inPlace = true) => new(ActivationKind.Relu, inPlace);

    /// <inheritdoc />
    protected override Tensor Compute(Tensor input) => Kind switch
    {
        ActivationKind.Gelu => F.gelu(input),
        ActivationKind.Sigmoid => input.sigmoid(),
        _ => F.relu(input, InPlace),
    };

    /// <inheritdoc />
    internal override string ExportOnnx(OnnxGraph g, string input, string path) => Kind switch
    {
        ActivationKind.Gelu => g.Gelu(input),
        ActivationKind.Sigmoid => g.Node("Sigmoid", new[] { input }),
        _ => g.Relu(input),
    };
}
