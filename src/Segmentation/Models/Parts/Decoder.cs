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

    /// <summary>The modules the model registers for this decoder, by state-dict prefix: by default itself as
    /// <c>decoder</c>.</summary>
    public virtual IEnumerable<(string Name, nn.Module Module)> StateDictModules()
        => new[] { ("decoder", (nn.Module)this) };
}
