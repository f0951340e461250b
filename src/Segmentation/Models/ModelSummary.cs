using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>One layer of a <see cref="ModelSummary"/>.</summary>
/// <param name="Name">State-dict prefix of the layer.</param>
/// <param name="Kind">Layer type.</param>
/// <param name="OutputShape">C x H x W of the layer's output for one image.</param>
/// <param name="Parameters">Trainable parameters.</param>
/// <param name="MultiplyAccumulates">Multiply-accumulates for one image.</param>
internal sealed record LayerSummary(string Name, string Kind, long[] OutputShape, long Parameters, long MultiplyAccumulates);

/// <summary>
/// Layer table, parameter count and multiply-accumulates of a U-Net for an input size, read off the model itself: it is
/// built and run once on a blank image of that size, recording what each convolution sees (so there is one description
/// of each architecture, the code that builds it).
/// </summary>
internal sealed record ModelSummary(UNetOptions Options, int Height, int Width, IReadOnlyList<LayerSummary> Layers)
{
    /// <summary>Total trainable parameters (equals <see cref="UNet.ParameterCount"/>).</summary>
    public long Parameters => Layers.Sum(l => l.Parameters);

    /// <summary>Total multiply-accumulates per image (convolutions only; normalisation, pooling and activations are not counted).</summary>
    public long MultiplyAccumulates => Layers.Sum(l => l.MultiplyAccumulates);

    /// <summary>Convolution and normalisation outputs per image: what a training step keeps for the backward pass.</summary>
    public long ActivationElements => Layers.Sum(l => l.OutputShape.Aggregate(1L, (a, b) => a * b));

    /// <summary>Computes the table for an input of <paramref name="height"/> x <paramref name="width"/> (one forward pass at that size on the CPU).</summary>
    public static ModelSummary For(UNetOptions o, int height, int width)
    {
        o.Validate();
        using var model = new UNet(o with { Seed = 0 });
        return For(model, height, width);
    }

    /// <summary>
    /// The table of <paramref name="model"/> itself: one forward pass in eval mode without gradients or its
    /// convolution check, on the model's device; its mode and check setting are put back, and no statistic changes.
    /// </summary>
    public static ModelSummary For(UNet model, int height, int width)
    {
        var o = model.Options;
        if (height < o.MinimumInputSize || width < o.MinimumInputSize)
            throw new OptionsException($"Input {width}x{height} is too small for this U-Net: the minimum is {o.MinimumInputSize}x{o.MinimumInputSize}.");
        bool wasTraining = model.training, verify = model.VerifyConvolutions;
        var seen = new Dictionary<Convolution, (long[] Output, long Macs)>();
        var convolutions = model.modules().OfType<Convolution>().ToList();
        foreach (var c in convolutions) c.Observer = (layer, x) => seen[layer] = Observed(layer, x);
        try
        {
            model.VerifyConvolutions = false;
            model.eval();
            using var scope = NewDisposeScope();
            using var grad = no_grad();
            model.forward(zeros(new long[] { 1, o.InChannels, height, width }, device: convolutions[0].Weight.device));
        }
        finally
        {
            foreach (var c in convolutions) c.Observer = null;
            model.VerifyConvolutions = verify;
            if (wasTraining) model.train();
        }
        return new ModelSummary(o, height, width, Rows(model, seen));
    }

    /// <summary>
    /// Activation elements per image of <paramref name="model"/> at <paramref name="height"/> x <paramref name="width"/>,
    /// from one small traced pass scaled by the pixel count (cheap at any size; off by rounding at odd sizes only).
    /// </summary>
    public static double EstimateActivationElements(UNet model, int height, int width)
    {
        int probe = Math.Max(64, model.Options.MinimumInputSize);
        return For(model, probe, probe).ActivationElements * ((double)height * width / ((double)probe * probe));
    }

    private static (long[] Output, long Macs) Observed(Convolution c, Tensor x)
    {
        long inH = x.shape[2], inW = x.shape[3];
        long Out(long e) => c.Transposed ? (e - 1) * c.Stride - 2 * c.Padding + c.Kernel : (e + 2 * c.Padding - c.Kernel) / c.Stride + 1;
        long outH = Out(inH), outW = Out(inW);
        long perPosition = c.InChannels * c.OutChannels * c.Kernel * c.Kernel;
        return (new[] { c.OutChannels, outH, outW }, perPosition * (c.Transposed ? inH * inW : outH * outW));
    }

    /// <summary>Convolutions and normalisations in module order; a normalisation has the shape of the convolution before it.</summary>
    private static List<LayerSummary> Rows(UNet model, Dictionary<Convolution, (long[] Output, long Macs)> seen)
    {
        var rows = new List<LayerSummary>();
        long[] last = Array.Empty<long>();
        foreach (var (name, module) in DepthFirst(model, ""))
        {
            long parameters = module.parameters(recurse: false).Sum(p => p.numel());
            if (module is Convolution c && seen.TryGetValue(c, out var s))
            {
                last = s.Output;
                rows.Add(new LayerSummary(name, c.Transposed ? "ConvTranspose2d" : "Conv2d", s.Output, parameters, s.Macs));
            }
            else if (module is BatchNorm2d || module is GroupNorm)
                rows.Add(new LayerSummary(name, module is GroupNorm ? "GroupNorm" : "BatchNorm2d", last, parameters, 0));
        }
        return rows;
    }

    /// <summary>Every submodule, each followed by its own submodules (TorchSharp's <c>named_modules</c> lists a level at a time).</summary>
    private static IEnumerable<(string Name, nn.Module Module)> DepthFirst(nn.Module module, string prefix)
    {
        foreach (var (name, child) in module.named_children())
        {
            yield return (prefix + name, child);
            foreach (var inner in DepthFirst(child, prefix + name + ".")) yield return inner;
        }
    }
}
