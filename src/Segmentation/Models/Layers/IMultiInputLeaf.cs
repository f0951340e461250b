using Segmentation.Models.Export;
using static TorchSharp.torch;

namespace Segmentation.Models.Layers;

/// <summary>
/// A leaf of several inputs (<see cref="Attention"/>: queries, keys, values; <see cref="GridSample"/>: a map and a
/// grid): what <see cref="Layer"/> is for one input. The model sets its precision, <see cref="LayerCheck"/> checks it
/// against float64 and routes it, <see cref="ModelSummary"/> writes its row, and it records its own ONNX nodes.
/// </summary>
internal interface IMultiInputLeaf : ICheckedComputation
{
    /// <summary>The type it computes in (<see cref="Precision"/>; a leaf that stays float32 ignores it).</summary>
    ScalarType ComputeType { get; set; }

    /// <summary>Which way of computing it uses (0: libtorch's kernel).</summary>
    int Route { get; set; }

    /// <summary>Called with the inputs and the output after each pass while set.</summary>
    Action<nn.Module, Tensor[], Tensor>? Observer { get; set; }

    /// <summary>The summary row for one pass.</summary>
    LayerSummary Summarise(string path, Tensor[] inputs, Tensor output);
}

/// <summary>
/// The plumbing every leaf of several inputs shares (<see cref="IMultiInputLeaf"/>): its compute type, route and
/// observer, and the recording of a pass (the observer, then its ONNX nodes while a model is being exported). A
/// subclass says what it computes, how it is checked and exported, and whether it follows the model's precision.
/// </summary>
internal abstract class MultiInputLeaf : nn.Module, IMultiInputLeaf
{
    protected MultiInputLeaf(string name) : base(name) { }

    /// <summary>Whether it computes in the model's precision (the default: float32 whatever the model's).</summary>
    protected virtual bool FollowsModelPrecision => false;

    /// <summary>The type it computes in.</summary>
    internal ScalarType ComputeType { get; set; } = ScalarType.Float32;

    /// <summary>Which way of computing it uses (0: libtorch's kernel).</summary>
    internal int Route { get; set; }

    /// <summary>Called with the inputs and the output after each pass while set.</summary>
    internal Action<nn.Module, Tensor[], Tensor>? Observer { get; set; }

    ScalarType IMultiInputLeaf.ComputeType
    {
        get => FollowsModelPrecision ? ComputeType : ScalarType.Float32;
        set => ComputeType = value;
    }

    int IMultiInputLeaf.Route { get => Route; set => Route = value; }

    Action<nn.Module, Tensor[], Tensor>? IMultiInputLeaf.Observer { get => Observer; set => Observer = value; }

    /// <inheritdoc cref="IMultiInputLeaf.Summarise"/>
    public abstract LayerSummary Summarise(string path, Tensor[] inputs, Tensor output);

    /// <summary>Hands a pass to the observer and, while a model is being exported, records its nodes: <paramref
    /// name="export"/> gets the graph, the inputs' names and the leaf's path. Returns <paramref
    /// name="output"/>.</summary>
    protected Tensor Record(Tensor[] inputs, Tensor output, Func<OnnxGraph, string[], string, string> export)
    {
        Observer?.Invoke(this, inputs, output);
        OnnxTrace.Current?.MultiInputLeaf(this, inputs, output, export);
        return output;
    }

    /// <inheritdoc />
    public abstract IReadOnlyList<Tensor> Parameters { get; }

    /// <inheritdoc />
    public abstract Tensor Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> parameters,
        bool training);

    bool ICheckedComputation.FollowsPrecision => FollowsModelPrecision;
}
