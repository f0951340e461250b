namespace Segmentation.Models.Decoders;

/// <summary>How the U-Net decoder doubles the resolution.</summary>
public enum UpsamplingMode
{
    /// <summary>2x2 transposed convolution with stride 2 (the U-Net paper's up-convolution).</summary>
    Transposed,
    /// <summary>Bilinear upsampling followed by a 1x1 convolution that halves the channels.</summary>
    Bilinear,
}
