using static TorchSharp.torch;

namespace Segmentation.Models.Parts;

/// <summary>
/// The part from the feature maps to the model's named outputs (<see cref="ModelOutputs"/>), each declared in
/// <see cref="Outputs"/> with its rank and meaning: class logits per pixel for the built-in heads; per-query class and
/// mask logits, regressions and auxiliary outputs for others. Its forward pass gets every map of the encoder and of
/// the decoder and the model's input (<see cref="HeadInput"/>); a head whose decoder works at a lower resolution
/// resizes its logits to the input with <see cref="Layers.LayerOps.ResizeLike"/>. Register it with
/// <see cref="ModelRegistry.AddHead{TOptions}(string, Func{HeadContext, TOptions, Head}, string)"/>.
/// </summary>
public abstract class Head : nn.Module<HeadInput, ModelOutputs>
{
    /// <summary>Creates the module.</summary>
    protected Head(string name) : base(name) { }

    /// <summary>What <c>forward</c> returns, each output by name, rank and meaning (by default the class logits
    /// per pixel, <see cref="ModelOutput.PixelLogits"/>). The model holds every pass to it.</summary>
    public virtual IReadOnlyList<ModelOutput> Outputs => ModelOutput.PixelLogitsOnly;

    /// <summary>
    /// The modules the model registers for this head, by state-dict prefix: by default the head itself as <c>head</c>.
    /// A head that must keep another library's keys registers its layers directly (the U-Net paper's head is
    /// <c>head.weight</c>, smp's <c>segmentation_head.0.weight</c>).
    /// </summary>
    public virtual IEnumerable<(string Name, nn.Module Module)> StateDictModules()
        => new[] { ("head", (nn.Module)this) };
}
