using Segmentation.Models.Export;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Models.Layers;

/// <summary>2-D max pooling (floor mode), as a layer.</summary>
public sealed class MaxPool : Layer
{
    /// <summary>Square window.</summary>
    public int Kernel { get; }
    /// <summary>Stride.</summary>
    public int Stride { get; }
    /// <summary>Padding (with minus infinity).</summary>
    public int Padding { get; }

    /// <summary>Creates the layer; the stride defaults to the kernel.</summary>
    public MaxPool(int kernel, int? stride = null, int padding = 0) : base("MaxPool2d")
    {
        if (kernel < 1 || stride is < 1 || padding < 0 || padding * 2 > kernel)
            throw new ArgumentOutOfRangeException(nameof(kernel),
                $"MaxPool kernel {kernel}, stride {stride}, padding {padding} are out of range.");
        Kernel = kernel; Stride = stride ?? kernel; Padding = padding;
    }

    /// <inheritdoc />
    protected override Tensor Compute(Tensor input) =>
        F.max_pool2d(input, new long[] { Kernel, Kernel }, new long[] { Stride, Stride },
            new long[] { Padding, Padding });

    /// <inheritdoc />
    internal override string ExportOnnx(OnnxGraph g, string input, string path) => g.MaxPool(input, Kernel, Stride,
        Padding);
}
