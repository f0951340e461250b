using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Sequential = TorchSharp.Modules.Sequential;
using static TorchSharp.torch;

namespace Segmentation.Models.Heads;

/// <summary>Options of the convolution heads (registered as <c>conv</c> and <c>smp-conv</c>).</summary>
public sealed record ConvHeadOptions : IPartOptions
{
    /// <summary>Square kernel size (odd): 1 for the U-Net paper's head, 3 for smp's.</summary>
    public int Kernel { get; init; } = 1;

    /// <inheritdoc />
    public void Validate()
    {
        if (Kernel < 1 || Kernel % 2 == 0)
            throw new OptionsException($"Head Kernel is {Kernel}; it must be an odd number of at least 1.");
    }
}

/// <summary>Options of segmentation_models.pytorch's head (registered as <c>smp-conv</c>): a 3x3 convolution by
/// default.</summary>
internal sealed record SmpConvHeadOptions : IPartOptions
{
    /// <summary>Square kernel size (odd).</summary>
    public int Kernel { get; init; } = 3;

    /// <inheritdoc />
    public void Validate() => new ConvHeadOptions { Kernel = Kernel }.Validate();
}

/// <summary>
/// One convolution from the decoder's map to class logits. The U-Net paper's head (<c>conv</c>: keys
/// <c>head.weight</c>,
/// <c>head.bias</c>) or segmentation_models.pytorch's (<c>smp-conv</c>: keys <c>segmentation_head.0.*</c>).
/// </summary>
internal sealed class ConvHead : Head
{
    private readonly nn.Module<Tensor, Tensor> conv;
    private readonly bool smp;

    /// <summary>Creates the head.</summary>
    public ConvHead(long inChannels, int classes, ConvHeadOptions o, bool smp) : base(nameof(ConvHead))
    {
        this.smp = smp;
        var layer = new Convolution(inChannels, classes, o.Kernel, padding: o.Kernel / 2);
        conv = smp ? nn.Sequential(("0", layer)) : layer;
        RegisterComponents();
    }

    /// <inheritdoc />
    public override IEnumerable<(string Name, nn.Module Module)> StateDictModules() =>
        new[] { (smp ? "segmentation_head" : "head", (nn.Module)conv) };

    /// <inheritdoc />
    public override ModelOutputs forward(HeadInput x) => new(conv.forward(x.Decoded));

}
