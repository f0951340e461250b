using Segmentation.Models.Layers;
using static TorchSharp.torch;

namespace Segmentation.Models.Export;

/// <summary>
/// Records a model's ONNX graph by running its <c>forward</c> once: while a trace is current (on this thread), every
/// <see cref="Layer"/>, <see cref="Attention"/> and <see cref="LayerOps"/> call adds its nodes and names its output, so
/// the
/// graph is what the code computes, written once. A tensor that reaches a layer or an op without a name was made by an
/// operation the trace cannot see, and the export fails naming the layer, instead of writing a wrong graph.
/// </summary>
internal sealed class OnnxTrace : IDisposable
{
    [ThreadStatic] private static OnnxTrace? current;
    private readonly OnnxTrace? outer;
    private readonly Dictionary<Tensor, string> names = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<nn.Module, string> paths = new(ReferenceEqualityComparer.Instance);

    /// <summary>The trace being recorded on this thread, if any.</summary>
    public static OnnxTrace? Current => current;

    /// <summary>The graph recorded so far.</summary>
    public OnnxGraph Graph { get; }

    /// <summary>Starts recording the modules of <paramref name="model"/> (their names are their state-dict
    /// prefixes).</summary>
    public OnnxTrace(nn.Module model)
    {
        foreach (var (name, module) in model.named_modules()) paths.TryAdd(module, name);
        Graph = new OnnxGraph(this);
        outer = current;
        current = this;
    }

    /// <summary>Gives <paramref name="tensor"/> the graph value <paramref name="name"/>.</summary>
    public void Bind(Tensor tensor, string name) => names[tensor] = name;

    /// <summary>The graph value of <paramref name="tensor"/>; <paramref name="user"/> names who needs it, for the
    /// error.</summary>
    public string NameOf(Tensor tensor, string user) => names.TryGetValue(tensor, out var name) ? name
        : throw new NotSupportedException($"ONNX export: {user} received a tensor made by an operation the exporter "
        + $"cannot see; "
            + "compute it with a Segmentation.Models.Layers layer or a LayerOps method.");

    /// <summary>Records a layer's node(s).</summary>
    public void Leaf(Layer layer, Tensor input, Tensor output)
    {
        var path = PathOf(layer);
        Bind(output, layer.ExportOnnx(Graph, NameOf(input, path), path));
    }

    /// <summary>Records an attention layer's nodes.</summary>
    public void Attention(Attention layer, Tensor query, Tensor key, Tensor value, Tensor? mask, Tensor output)
    {
        var path = PathOf(layer);
        Bind(output, Graph.Attention(NameOf(query, path), NameOf(key, path), NameOf(value, path), query.shape[^1],
            mask is null ? null : NameOf(mask, path)));
    }

    /// <summary>Records a grid sampling's node.</summary>
    public void GridSample(GridSample layer, Tensor input, Tensor grid, Tensor output)
    {
        var path = PathOf(layer);
        Bind(output, Graph.GridSample(NameOf(input, path), NameOf(grid, path)));
    }

    /// <summary>Records the nodes of a leaf of several inputs that exports itself: <paramref name="export"/> gets the
    /// graph, its inputs' names and its state-dict path, and returns its output's name.</summary>
    public void MultiInputLeaf(nn.Module layer, Tensor[] inputs, Tensor output,
        Func<OnnxGraph, string[], string, string> export)
    {
        var path = PathOf(layer);
        Bind(output, export(Graph, inputs.Select(x => NameOf(x, path)).ToArray(), path));
    }

    /// <summary>Records an operation's node(s), made by <paramref name="node"/> from the graph.</summary>
    public void Op(Tensor output, Func<OnnxGraph, string> node) => Bind(output, node(Graph));

    private string PathOf(nn.Module module) => paths.TryGetValue(module, out var p) ? p
        : throw new NotSupportedException($"ONNX export: a {module.GetType().Name} that is not a registered submodule "
        + $"of the model ran in its forward pass.");

    /// <inheritdoc />
    public void Dispose() => current = outer;
}
