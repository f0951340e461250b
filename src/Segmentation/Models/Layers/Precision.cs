using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>
/// The arithmetic a model computes in. Master weights, optimiser state and checkpoints are float32 whatever the
/// precision; under <see cref="BFloat16"/> and <see cref="Float16"/> the convolutions (and the matrix products of
/// their im2col route) run in that type, normalisation accumulates its statistics in float32, and the logits come
/// out as float32, so softmax, the losses and the metrics are float32 too (what PyTorch's autocast does for the same
/// layers).
/// </summary>
public enum Precision
{
    /// <summary>float32 throughout.</summary>
    Float32,
    /// <summary>bfloat16 convolutions: float32's range, 8 bits of mantissa; needs no loss scaling.</summary>
    BFloat16,
    /// <summary>float16 convolutions: 11 bits of mantissa, a narrow range; trained with dynamic loss scaling
    /// (<c>LossScaler</c>).</summary>
    Float16,
    /// <summary>
    /// Training only: the trainer picks before the first step (<c>AutoPrecision</c>): bfloat16 where the hardware
    /// computes it natively and a quick side-by-side shows this model's step faster, float32 otherwise. A model never
    /// computes in "auto"; checkpoints record what was picked.
    /// </summary>
    Auto,
}

/// <summary>Names and types of <see cref="Precision"/>.</summary>
public static class Precisions
{
    /// <summary>The tensor type the convolutions compute in.</summary>
    public static ScalarType ComputeType(this Precision p) => p switch
    {
        Precision.Auto => throw new OptionsException("Precision auto is resolved by the trainer before training; a "
            + "model computes in fp32, bf16 or fp16."),
        Precision.BFloat16 => ScalarType.BFloat16,
        Precision.Float16 => ScalarType.Float16,
        _ => ScalarType.Float32,
    };

    /// <summary>The short name used on the command line and in reports: fp32, bf16, fp16.</summary>
    public static string ShortName(this Precision p) => p switch
    {
        Precision.BFloat16 => "bf16",
        Precision.Float16 => "fp16",
        Precision.Auto => "auto",
        _ => "fp32",
    };

    /// <summary>Parses auto, fp32, bf16 or fp16 (also float32, bfloat16, float16); anything else is an <see
    /// cref="OptionsException"/>.</summary>
    public static Precision Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "fp32" or "float32" or "f32" => Precision.Float32,
        "bf16" or "bfloat16" => Precision.BFloat16,
        "fp16" or "float16" or "half" or "f16" => Precision.Float16,
        "auto" => Precision.Auto,
        _ => throw new OptionsException($"Precision '{text}' is not one of: auto, fp32, bf16, fp16."),
    };
}
