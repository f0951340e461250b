using System.Text.Json.Serialization;
using Segmentation.Models.Encoders;

namespace Segmentation.Models;

/// <summary>How the expanding path doubles the resolution.</summary>
public enum UpsamplingMode
{
    /// <summary>2x2 transposed convolution with stride 2 (the U-Net paper's up-convolution).</summary>
    Transposed,
    /// <summary>Bilinear upsampling followed by a 1x1 convolution that halves the channels.</summary>
    Bilinear,
}

/// <summary>Normalisation after each 3x3 convolution.</summary>
public enum NormLayer
{
    /// <summary>BatchNorm2d.</summary>
    Batch,
    /// <summary>GroupNorm with up to 32 groups (for small batches).</summary>
    Group,
    /// <summary>No normalisation; the convolutions get a bias instead.</summary>
    None,
}

/// <summary>The shape of a <see cref="UNet"/>. The defaults are the canonical U-Net (31,037,698 parameters for 3 inputs and 2 classes).</summary>
public sealed record UNetOptions
{
    /// <summary>Input channels: 1 for gray, 3 for RGB, or more.</summary>
    public int InChannels { get; init; } = 3;

    /// <summary>Output classes (channels of the logits).</summary>
    public int Classes { get; init; } = 2;

    /// <summary>Channels of the first level; each level below doubles them.</summary>
    public int BaseChannels { get; init; } = 64;

    /// <summary>Number of 2x2 down-samplings (levels below the first).</summary>
    public int Depth { get; init; } = 4;

    /// <summary>How the expanding path upsamples.</summary>
    public UpsamplingMode Upsampling { get; init; } = UpsamplingMode.Transposed;

    /// <summary>The normalisation layer after each convolution (the input's normalisation is preprocessing, stored in the checkpoint).</summary>
    public NormLayer Norm { get; init; } = NormLayer.Batch;

    /// <summary>What files written before 0.3 call <see cref="Norm"/>; read, never written.</summary>
    [JsonInclude, JsonPropertyName("Normalization")]
    private NormLayer? LegacyNormalization { init { if (value is { } v) Norm = v; } }

    /// <summary>Dropout2d probability applied to the input of the bottleneck; 0 turns it off.</summary>
    public double Dropout { get; init; }

    /// <summary>
    /// Seed of the initial weights: the same seed gives the same weights, whatever ran before in the process (the
    /// global generator is left as it was). Null draws them from the global generator (<c>torch.random.manual_seed</c>).
    /// </summary>
    public int? Seed { get; init; } = 0;

    /// <summary>
    /// The encoder. <see cref="EncoderKind.UNet"/> (the default) is the paper's, shaped by <see cref="BaseChannels"/>,
    /// <see cref="Depth"/>, <see cref="Upsampling"/> and <see cref="Dropout"/>; a ResNet gets segmentation_models.pytorch's
    /// decoder (<see cref="DecoderChannels"/>), and those four options do not apply to it.
    /// </summary>
    public EncoderKind Encoder { get; init; } = EncoderKind.UNet;

    /// <summary>ResNet encoders: output channels of the five decoder blocks (null: smp's 256, 128, 64, 32, 16).</summary>
    public int[]? DecoderChannels { get; init; }

    /// <summary>The smallest height and width the model accepts: 2^Depth (32 for ResNet encoders).</summary>
    public int MinimumInputSize => Encoder == EncoderKind.UNet ? 1 << Depth : 32;

    /// <summary>Throws <see cref="OptionsException"/> naming the first value outside its range.</summary>
    public void Validate()
    {
        if (InChannels < 1) throw new OptionsException($"UNet InChannels is {InChannels}; it must be at least 1.");
        if (Classes < 1) throw new OptionsException($"UNet Classes is {Classes}; it must be at least 1 (2 for a binary task).");
        if (BaseChannels < 1) throw new OptionsException($"UNet BaseChannels is {BaseChannels}; it must be at least 1.");
        if (Depth < 1 || Depth > 8) throw new OptionsException($"UNet Depth is {Depth}; it must be between 1 and 8.");
        if ((long)BaseChannels << Depth > 65536) throw new OptionsException($"UNet BaseChannels {BaseChannels} at Depth {Depth} gives {(long)BaseChannels << Depth} bottleneck channels; the limit is 65536.");
        if (Norm == NormLayer.Group && BaseChannels < 2) throw new OptionsException("UNet group normalisation needs BaseChannels of at least 2.");
        if (double.IsNaN(Dropout) || Dropout < 0 || Dropout >= 1) throw new OptionsException($"UNet Dropout is {Dropout}; it must be in [0, 1).");
        if (!Enum.IsDefined(Encoder)) throw new OptionsException($"UNet Encoder {Encoder} is not one of: {string.Join(", ", Enum.GetNames<EncoderKind>())}.");
        if (DecoderChannels is { } dc && (Encoder == EncoderKind.UNet || dc.Length != 5 || dc.Any(c => c < 1 || c > 65536)))
            throw new OptionsException(Encoder == EncoderKind.UNet
                ? "UNet DecoderChannels apply to ResNet encoders; the U-Net encoder's decoder mirrors it (BaseChannels, Depth)."
                : $"UNet DecoderChannels [{string.Join(", ", dc)}] must be 5 counts from 1 to 65536 (one per decoder block).");
        if (!Enum.IsDefined(Upsampling)) throw new OptionsException($"UNet Upsampling {Upsampling} is not one of: {string.Join(", ", Enum.GetNames<UpsamplingMode>())}.");
        if (!Enum.IsDefined(Norm)) throw new OptionsException($"UNet Norm {Norm} is not one of: {string.Join(", ", Enum.GetNames<NormLayer>())}.");
    }
}
