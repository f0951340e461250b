using static TorchSharp.torch;

namespace Segmentation.Models.Parts;

/// <summary>
/// The part that turns an image into feature maps of growing stride (smp's encoder seam).
/// <see cref="nn.Module{T, TResult}.forward"/> returns the input itself first (stride 1, as smp's encoders do), then
/// one
/// map per entry of <see cref="Stages"/>; a decoder builds itself from <see cref="Stages"/>. Build it from
/// <see cref="Layers.Layer"/>s and <see cref="Layers.LayerOps"/>, and register it with <see
/// cref="ModelRegistry.AddEncoder"/>.
/// </summary>
public abstract class Encoder : nn.Module<Tensor, Tensor[]>
{
    /// <summary>Creates the module.</summary>
    protected Encoder(string name) : base(name) { }

    /// <summary>The feature maps after the input, in order of growing stride.</summary>
    public abstract IReadOnlyList<EncoderStage> Stages { get; }

    /// <summary>Image channels the encoder takes.</summary>
    public abstract int InChannels { get; }

    /// <summary>The largest stride.</summary>
    public int OutputStride => Stages[^1].Stride;

    /// <summary>The smallest height and width it takes (its largest stride unless it says otherwise).</summary>
    public virtual int MinimumInputSize => OutputStride;
}
