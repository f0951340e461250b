using Segmentation.Models.Export;
using static TorchSharp.torch;

namespace Segmentation.Models.Layers;

/// <summary>
/// An operation between layers with no parameters but arithmetic of its own (a resize, a sampling): one class holds
/// what it computes (route 0, libtorch's kernel; route 1, the same spelled out in basic operations), the inputs its
/// float64 check runs on, and its ONNX node, so that a new op is one file. <see cref="Run"/> computes it and, while a
/// model is being exported, records its node (<see cref="OnnxTrace"/>). Registered ops (<see cref="Ops.Add"/>) are
/// held by the conformance test to float64 on every route and to ONNX Runtime on the same inputs
/// (<c>OpConformanceTests</c>); a layer with parameters is a <see cref="Layer"/> instead, checked at the shapes it
/// meets.
/// </summary>
public abstract class Op
{
    /// <summary>Creates the op; <paramref name="name"/> is its name in errors and checks.</summary>
    protected Op(string name) => Name = name;

    /// <summary>The op's name.</summary>
    public string Name { get; }

    /// <summary>Routes there are: 0 is libtorch's kernel, 1 the computation spelled out.</summary>
    internal virtual int RouteCount => 2;

    /// <summary>The op along <paramref name="route"/>, in the inputs' type.</summary>
    internal abstract Tensor Compute(int route, IReadOnlyList<Tensor> inputs);

    /// <summary>Adds the op's node(s) to an ONNX graph for the named inputs; returns the output's name.</summary>
    internal abstract string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs);

    /// <summary>Inputs to check it on (float64, CPU): the shapes that exercise its arithmetic.</summary>
    internal abstract IReadOnlyList<Tensor[]> CheckInputs();

    /// <summary>The largest error accepted in float32, relative to the float64 result's largest magnitude.</summary>
    internal virtual double Tolerance => 1e-5;

    /// <summary>Computes the op (route 0) and records its node while a model is being exported.</summary>
    public Tensor Run(params Tensor[] inputs)
    {
        var trace = OnnxTrace.Current;
        var names = trace is null ? null : inputs.Select(x => trace.NameOf(x, Name)).ToArray();
        var y = Compute(0, inputs);
        // an op that leaves its input as it is at this size (a pad with nothing to pad) still records its node, for
        // the sizes where it does not: its output must be a tensor of its own, or the input would be renamed to it
        if (trace is not null && inputs.Any(x => ReferenceEquals(x, y))) y = y.alias();
        if (trace is not null) trace.Op(y, g => ExportOnnx(g, names!));
        return y;
    }
}

/// <summary>The registered ops (<see cref="Op"/>): what the conformance test checks.</summary>
public static class Ops
{
    private static readonly object Gate = new();
    private static readonly List<Op> Registered = new();

    /// <summary>Registers <paramref name="op"/> (once per name).</summary>
    public static void Add(Op op)
    {
        lock (Gate)
        {
            if (Registered.Any(o => o.Name == op.Name))
                throw new OptionsException($"An op named '{op.Name}' is registered already.");
            Registered.Add(op);
        }
    }

    /// <summary>The registered ops, in order (the model registry registers the built-in parts' first).</summary>
    public static IReadOnlyList<Op> All
    {
        get
        {
            _ = ModelRegistry.ArchitectureNames(); // the built-in parts register their ops with themselves
            lock (Gate) return Registered.ToList();
        }
    }
}
