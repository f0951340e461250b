using static TorchSharp.torch;

namespace Segmentation.Models.Parts;

/// <summary>
/// The part from the decoder's feature map to the model's named outputs (<see cref="ModelOutputs"/>): class logits for
/// semantic segmentation; later, instance maps beside them. Its forward pass gets the decoder's map and the model's
/// input (a head whose decoder works at a lower resolution resizes its logits to the input with
/// <see cref="Layers.LayerOps.ResizeLike"/>). Register it with <see cref="ModelRegistry.AddHead"/>.
/// </summary>
public abstract class Head : nn.Module<Tensor, Tensor, ModelOutputs>
{
    /// <summary>Creates the module.</summary>
    protected Head(string name) : base(name) { }

    /// <summary>
    /// The modules the model registers for this head, by state-dict prefix: by default the head itself as <c>head</c>.
    /// A head that must keep another library's keys registers its layers directly (the U-Net paper's head is
    /// <c>head.weight</c>, smp's <c>segmentation_head.0.weight</c>).
    /// </summary>
    public virtual IEnumerable<(string Name, nn.Module Module)> StateDictModules()
        => new[] { ("head", (nn.Module)this) };
}
