using static TorchSharp.torch;

namespace Segmentation.Models.Parts;

/// <summary>
/// The part from an encoder's feature maps (the input first, as <see cref="Encoder"/> returns them) to one feature map
/// for the head. Register it with <see cref="ModelRegistry.AddDecoder"/>.
/// </summary>
public abstract class Decoder : nn.Module<Tensor[], Tensor>
{
    /// <summary>Creates the module.</summary>
    protected Decoder(string name) : base(name) { }

    /// <summary>Channels of the output (the head's input).</summary>
    public abstract long OutChannels { get; }

    /// <summary>The stride of the output (1: the input's size; SegFormer's and the FPN's: 4).</summary>
    public virtual int OutStride => 1;

    /// <summary>
    /// The maps <see cref="Decode"/> gives, named and strided: by default the one <c>forward</c> computes,
    /// <c>decoded</c>. A decoder with several outputs (a pixel decoder's multi-scale maps beside its mask features)
    /// declares them here, the one most heads classify first, and overrides <see cref="Decode"/>.
    /// </summary>
    public virtual IReadOnlyList<FeatureMap> Maps => maps ??= new[] { new FeatureMap("decoded", (int)OutChannels,
        OutStride) };

    private FeatureMap[]? maps;

    /// <summary>The maps of <see cref="Maps"/> for the encoder's maps (the input first): by default
    /// <c>forward</c>'s one.</summary>
    public virtual Tensor[] Decode(Tensor[] features) => new[] { forward(features) };

    /// <summary>The modules the model registers for this decoder, by state-dict prefix: by default itself as
    /// <c>decoder</c>.</summary>
    public virtual IEnumerable<(string Name, nn.Module Module)> StateDictModules()
        => new[] { ("decoder", (nn.Module)this) };
}
