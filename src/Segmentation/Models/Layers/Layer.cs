using Segmentation.Models.Export;
using static TorchSharp.torch;

namespace Segmentation.Models.Layers;

/// <summary>
/// A leaf layer: the unit that carries what cuts across every model. Each leaf knows the type it computes in
/// (<see cref="Precision"/>), how to check itself against float64 (<see cref="LayerCheck"/>), its line in
/// <see cref="ModelSummary"/> and its ONNX node. A block built only from leaves and <see cref="LayerOps"/> gets all
/// four
/// without writing any of them: its <c>forward</c> is the one description of what it computes, and the ONNX exporter
/// records the graph by running it (<see cref="OnnxTrace"/>).
/// </summary>
/// <remarks>
/// Subclasses implement <see cref="Compute"/>; <see cref="forward"/> wraps it (observation, tracing) and is sealed so
/// that no leaf can skip them.
/// </remarks>
public abstract class Layer : nn.Module<Tensor, Tensor>
{
    /// <summary>Creates the layer; <paramref name="name"/> is its type's name in summaries (<c>Conv2d</c>,
    /// <c>Linear</c>).</summary>
    protected Layer(string name) : base(name) { }

    /// <summary>
    /// The type the layer computes in: float32 unless a model's <see cref="Precision"/> says otherwise. Layers whose
    /// arithmetic stays float32 under mixed precision (normalisation) ignore it.
    /// </summary>
    internal ScalarType ComputeType { get; set; } = ScalarType.Float32;

    /// <summary>Which of the layer's ways of computing it uses (0: libtorch's own kernel; others: checked
    /// fallbacks).</summary>
    internal int Route { get; set; }

    /// <summary>Called with input and output after each forward pass while set (the summary and the checks use
    /// it).</summary>
    internal Action<Layer, Tensor, Tensor>? Observer { get; set; }

    /// <summary>The layer's result for <paramref name="input"/>; what every subclass says once.</summary>
    protected abstract Tensor Compute(Tensor input);

    /// <inheritdoc />
    public sealed override Tensor forward(Tensor input)
    {
        var output = Compute(input);
        Observer?.Invoke(this, input, output);
        OnnxTrace.Current?.Leaf(this, input, output);
        return output;
    }

    /// <summary>Adds this layer's eval-mode computation on <paramref name="input"/> to an ONNX graph; returns the
    /// output's name.</summary>
    /// <param name="g">The graph.</param>
    /// <param name="input">The input value's name.</param>
    /// <param name="path">The layer's state-dict prefix (initializers are named after the state-dict keys).</param>
    internal abstract string ExportOnnx(OnnxGraph g, string input, string path);

    /// <summary>The summary row for one observed pass (null: the layer has no row, as activations and
    /// pooling).</summary>
    internal virtual LayerSummary? Summarise(string path, Tensor input, Tensor output) => null;

    /// <summary>The numerics this layer offers to <see cref="LayerCheck"/> (null: nothing to check, as for
    /// ReLU).</summary>
    internal virtual ICheckedComputation? Checkable => null;

    /// <summary>The number of trainable values this layer holds itself.</summary>
    private protected long OwnParameters() => parameters(recurse: false).Sum(p => p.numel());

    /// <summary>The summary row of a layer without multiply-accumulates (a norm): its output shape and
    /// parameters.</summary>
    private protected LayerSummary ShapeRow(string path, string kind, Tensor output)
        => new(path, kind, output.shape[1..], OwnParameters(), 0);
}

/// <summary>
/// What a leaf gives <see cref="LayerCheck"/>: its computation with the parameters passed in, so that the check can
/// run it in float64 on the CPU as the reference and in the layer's own type and route on its device.
/// </summary>
internal interface ICheckedComputation
{
    /// <summary>The routes there are, in order of preference (index 0 is libtorch's own kernel; 1 spelled
    /// out).</summary>
    int RouteCount => 2;

    /// <summary>The parameters, in the order <see cref="Apply"/> takes them.</summary>
    IReadOnlyList<Tensor> Parameters { get; }

    /// <summary>
    /// Whether the layer computes in the model's precision (linear, attention), so the check runs in that type; norms
    /// stay float32 whatever it is.
    /// </summary>
    bool FollowsPrecision => false;

    /// <summary>What else decides the kernel besides the shapes (GroupNorm's groups): part of the check's cache
    /// key.</summary>
    string Hyperparameters => "";

    /// <summary>The layer's computation along <paramref name="route"/>, in the type of the inputs.</summary>
    Tensor Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> parameters, bool training);
}
