using Segmentation.Models.Export;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Models.Layers;

/// <summary>Upsampling by 2 as a layer: bilinear with aligned corners (the U-Net paper's alternative to the
/// up-convolution) or nearest.</summary>
public sealed class Upsample : Layer
{
    /// <summary>Bilinear with aligned corners; otherwise nearest (PyTorch's floor rule).</summary>
    public bool Bilinear { get; }

    /// <summary>Creates the layer.</summary>
    public Upsample(bool bilinear) : base("Upsample") => Bilinear = bilinear;

    /// <inheritdoc />
    protected override Tensor Compute(Tensor input) => Bilinear
        ? F.interpolate(input, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Bilinear, align_corners: true)
        : F.interpolate(input, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest);

    /// <inheritdoc />
    internal override string ExportOnnx(OnnxGraph g, string input, string path) => g.Upsample2(input, Bilinear);
}
