using static TorchSharp.torch;

namespace Segmentation.Models.Parts;

/// <summary>
/// The part that turns an image into feature maps of growing stride (smp's encoder seam). Its forward pass returns the
/// input itself first (stride 1, as smp's encoders do), then one map per entry of <see cref="Stages"/>; a decoder
/// builds itself from <see cref="Stages"/>. Build it from <see cref="Layers.Layer"/>s and
/// <see cref="Layers.LayerOps"/>, and register it with <c>ModelRegistry.AddEncoder</c>.
/// </summary>
public abstract class Encoder : nn.Module<Tensor, Tensor[]>
{
    /// <summary>Creates the module.</summary>
    protected Encoder(string name) : base(name) { }

    /// <summary>The feature maps after the input, in order of growing stride.</summary>
    public abstract IReadOnlyList<EncoderStage> Stages { get; }

    /// <summary>Image channels the encoder takes.</summary>
    public abstract int InChannels { get; }

    /// <summary>
    /// The maps <c>forward</c> returns, named and strided: the input (<c>input</c>, stride 1), then each stage (its
    /// <see cref="EncoderStage.Name"/>, or <c>stage1</c>, <c>stage2</c>, ...).
    /// </summary>
    public IReadOnlyList<FeatureMap> Maps => maps ??= new[] { new FeatureMap("input", InChannels, 1) }
        .Concat(Stages.Select((s, i) => new FeatureMap(s.Name ?? $"stage{i + 1}", s.Channels, s.Stride))).ToArray();

    private FeatureMap[]? maps;

    /// <summary>The largest stride.</summary>
    public int OutputStride => Stages[^1].Stride;

    /// <summary>The smallest height and width it takes (its largest stride unless it says otherwise).</summary>
    public virtual int MinimumInputSize => OutputStride;

    /// <summary>
    /// The modules the model registers for this encoder, by state-dict prefix: by default the encoder itself as
    /// <c>encoder</c>. An encoder that keeps another library's keys (Hugging Face's <c>segformer.encoder.*</c>) returns
    /// a
    /// container that holds it under those names.
    /// </summary>
    public virtual IEnumerable<(string Name, nn.Module Module)> StateDictModules()
        => new[] { ("encoder", (nn.Module)this) };
}
