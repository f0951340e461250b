using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using static TorchSharp.torch;

namespace Segmentation.Models.Heads;

/// <summary>Options of the resize head (none).</summary>
internal sealed record ResizeHeadOptions;

/// <summary>
/// The head of a decoder that classifies at a lower resolution (SegFormer's, at stride 4): its logits resized
/// bilinearly to the input's height and width, as every model here gives them. No parameters, so no keys.
/// </summary>
internal sealed class ResizeHead : Head
{
    public ResizeHead() : base(nameof(ResizeHead)) { }

    /// <inheritdoc />
    public override IEnumerable<(string Name, nn.Module Module)> StateDictModules()
        => Array.Empty<(string, nn.Module)>();

    /// <inheritdoc />
    public override ModelOutputs forward(HeadInput x) => new(LayerOps.ResizeLike(x.Decoded, x.Input));
}
