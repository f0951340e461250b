using Segmentation.Models.Layers;
using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>One layer of a <see cref="ModelSummary"/>.</summary>
/// <param name="Name">State-dict prefix of the layer.</param>
/// <param name="Kind">Layer type.</param>
/// <param name="OutputShape">C x H x W of the layer's output for one image.</param>
/// <param name="Parameters">Trainable parameters.</param>
/// <param name="MultiplyAccumulates">Multiply-accumulates for one image.</param>
internal sealed record LayerSummary(string Name, string Kind, long[] OutputShape, long Parameters,
    long MultiplyAccumulates);

/// <summary>
/// Layer table, parameter count and multiply-accumulates of a model for an input size, read off the model itself: it
/// is built and run once on a blank image of that size, and each leaf layer (<see cref="Layer"/>,
/// <see cref="Attention"/>) writes its own row from what it saw, so there is one description of each architecture,
/// the code that builds it.
/// </summary>
internal sealed record ModelSummary(ModelDescription Description, int Height, int Width,
    IReadOnlyList<LayerSummary> Layers)
{
    /// <summary>Total trainable parameters (equals <see cref="SegmentationModel.ParameterCount"/> when every parameter
    /// sits in a leaf).</summary>
    public long Parameters => Layers.Sum(l => l.Parameters);

    /// <summary>Total multiply-accumulates per image (convolutions, linear layers and attention; not norms, pooling or
    /// activations).</summary>
    public long MultiplyAccumulates => Layers.Sum(l => l.MultiplyAccumulates);

    /// <summary>Leaf outputs per image: what a training step keeps for the backward pass.</summary>
    public long ActivationElements => Layers.Sum(l => l.OutputShape.Aggregate(1L, (a, b) => a * b));

    /// <summary>Computes the table for an input of <paramref name="height"/> x <paramref name="width"/> (one forward
    /// pass at that size on the CPU).</summary>
    public static ModelSummary For(ModelDescription d, int height, int width)
    {
        using var model = new SegmentationModel(d with { Seed = 0 });
        return For(model, height, width);
    }

    /// <summary>
    /// The table of <paramref name="model"/> itself: one forward pass in eval mode without gradients or its layer
    /// check, on the model's device; its mode and check setting are put back, and no statistic changes.
    /// </summary>
    public static ModelSummary For(SegmentationModel model, int height, int width)
    {
        int min = model.MinimumInputSize;
        if (height < min || width < min)
            throw new OptionsException($"Input {width}x{height} is too small for this model: the minimum is "
                + $"{min}x{min}.");
        var names = LayerObservation.Names(model);
        var rows = new Dictionary<nn.Module, LayerSummary>(ReferenceEqualityComparer.Instance);
        LayerObservation.Run(model, names.Keys.OfType<Layer>(),
            (layer, x, y) => { if (layer.Summarise(names[layer], x, y) is { } row) rows.TryAdd(layer, row); },
            new long[] { 1, model.Description.InChannels, height, width }, model.Device, gradients: false,
            names.Keys.OfType<IMultiInputLeaf>(), (a, inputs, y) => rows.TryAdd(a,
                ((IMultiInputLeaf)a).Summarise(names[a], inputs, y)));
        var ordered = DepthFirst(model, "").Where(m => rows.ContainsKey(m.Module)).Select(m => rows[m.Module]).ToList();
        return new ModelSummary(model.Description, height, width, ordered);
    }

    /// <summary>
    /// Activation elements per image of <paramref name="model"/> at <paramref name="height"/> x <paramref
    /// name="width"/>,
    /// from one small traced pass scaled by the pixel count (cheap at any size; off by rounding at odd sizes only).
    /// </summary>
    public static double EstimateActivationElements(SegmentationModel model, int height, int width)
    {
        int probe = Math.Max(64, model.MinimumInputSize);
        return For(model, probe, probe).ActivationElements * ((double)height * width / ((double)probe * probe));
    }

    /// <summary>Multiply-accumulates per image at <paramref name="height"/> x <paramref name="width"/>, estimated the
    /// same way.</summary>
    public static double EstimateMultiplyAccumulates(SegmentationModel model, int height, int width)
    {
        int probe = Math.Max(64, model.MinimumInputSize);
        return For(model, probe, probe).MultiplyAccumulates * ((double)height * width / ((double)probe * probe));
    }

    /// <summary>Every submodule, each followed by its own submodules (TorchSharp's <c>named_modules</c> lists a level
    /// at a time).</summary>
    private static IEnumerable<(string Name, nn.Module Module)> DepthFirst(nn.Module module, string prefix)
    {
        foreach (var (name, child) in module.named_children())
        {
            yield return (prefix + name, child);
            foreach (var inner in DepthFirst(child, prefix + name + ".")) yield return inner;
        }
    }
}
