using System.Collections.Concurrent;
using static TorchSharp.torch;

namespace Segmentation.Models.Layers;

/// <summary>How one layer other than a convolution fared: its largest relative error against float64 on each route
/// tried.</summary>
/// <param name="Layer">State-dict name.</param>
/// <param name="Kind">Layer type (LayerNorm, Linear, Attention, ...).</param>
/// <param name="Shape">The input shape checked.</param>
/// <param name="Route">The route taken (0: libtorch's kernel).</param>
/// <param name="Errors">The error of each route tried, in order.</param>
/// <param name="Tolerance">The largest error accepted.</param>
internal sealed record LayerCheckResult(string Layer, string Kind, string Shape, int Route,
    IReadOnlyList<double> Errors, double Tolerance);

/// <summary>
/// Trust no kernel, beyond convolutions: every other leaf that has numerics (batch, group and layer norm, linear,
/// attention) is run at the shapes it really sees, in its own type on its own device, against the same computation
/// spelled out in basic operations in float64 on the CPU, from the same inputs and parameters, forward and, for
/// training, backward. A layer takes the first route
/// that is right (libtorch's kernel, else the computation spelled out in basic operations). Results are cached per
/// process by kind, shapes, type, route, thread count and device.
/// </summary>
internal static class LayerCheck
{
    /// <summary>Tokens or positions checked per map side or sequence at most (the kernels' blocking repeats; the cost
    /// does not).</summary>
    private const int MaxExtent = 32, MaxTokens = 256;

    private static readonly ConcurrentDictionary<string, double> Cache = new();

    /// <summary>Checks and routes every checkable leaf of <paramref name="model"/> for inputs of <paramref
    /// name="inputShape"/>.</summary>
    public static IReadOnlyList<LayerCheckResult> Configure(nn.Module model, long[] inputShape, bool training,
        Device device)
    {
        var names = LayerObservation.Names(model);
        var layers = names.Keys.OfType<Layer>().Where(l => l.Checkable is not null).ToList();
        var leaves = names.Keys.OfType<IMultiInputLeaf>().ToList(); // attention, grid sampling
        if (layers.Count + leaves.Count == 0) return Array.Empty<LayerCheckResult>();
        var seen = new List<(nn.Module Module, ICheckedComputation Computation, long[][] Shapes, ScalarType Type)>();
        void Observe(nn.Module m, ICheckedComputation c, Tensor[] inputs, ScalarType compute)
        {
            if (seen.Any(s => ReferenceEquals(s.Module, m))) return;
            var type = c.FollowsPrecision ? compute : inputs[0].dtype;
            seen.Add((m, c, inputs.Select(Shrink).ToArray(), type));
        }
        LayerObservation.Run(model, layers, (l, x, _) => Observe(l, l.Checkable!, new[] { x }, l.ComputeType),
            inputShape, device, training,
            leaves, (m, inputs, _) => { var leaf = (IMultiInputLeaf)m; Observe(m, leaf, inputs, leaf.ComputeType); });
        var results = new List<LayerCheckResult>();
        foreach (var (module, computation, shapes, type) in seen)
        {
            var errors = new List<double>();
            double tolerance = ConvolutionCheck.ToleranceFor(type, device);
            int route = 0;
            for (; route < computation.RouteCount; route++)
            {
                errors.Add(Check(module.GetType().Name, computation, shapes, type, route, training, device));
                if (errors[^1] <= tolerance) break;
            }
            if (route == computation.RouteCount)
                throw new SegmentationException($"No route computes {names[module]} ({module.GetType().Name} at "
                    + $"{Describe(shapes)}) correctly on "
                    + $"{device}: errors {string.Join(", ", errors.Select(e => e.ToString("g2")))} against float64. "
                    + $"Run 'segment doctor'.");
            if (module is Layer l) l.Route = route; else ((IMultiInputLeaf)module).Route = route;
            results.Add(new LayerCheckResult(names[module], module.GetType().Name, Describe(shapes), route, errors,
                tolerance));
        }
        KernelVerdicts.Flush();
        return results;
    }

    /// <summary>Forgets this process's results (tests: as a new process would start).</summary>
    internal static void Forget() => Cache.Clear();

    private static string Describe(long[][] shapes) => string.Join(" ", shapes.Select(s => string.Join("x", s)));

    /// <summary>At most two samples; map sides and sequence lengths capped, keeping their parity.</summary>
    private static long[] Shrink(Tensor x)
    {
        var shape = x.shape.ToArray();
        shape[0] = Math.Min(shape[0], 2);
        static long Cap(long extent, long cap) => extent <= cap ? extent : cap - ((cap - extent) & 1);
        if (shape.Length == 4) { shape[2] = Cap(shape[2], MaxExtent); shape[3] = Cap(shape[3], MaxExtent); }
        else if (shape.Length == 3) shape[1] = Cap(shape[1], MaxTokens);
        return shape;
    }

    private static double Check(string kind, ICheckedComputation c, long[][] shapes, ScalarType type, int route,
        bool training, Device device)
    {
        var parameterShapes = string.Join(";", c.Parameters.Select(p => string.Join("x", p.shape)));
        var key = $"{kind}|{c.Hyperparameters}|{parameterShapes}|{Describe(shapes)}|{type}|{route}|{training}"
            + $"|{get_num_threads()}|{device}";
        return Cache.GetOrAdd(key, _ =>
        {
            if (KernelVerdicts.Layer(key, device) is { } known) return known;
            double measured = Measure(c, shapes, type, route, training, device);
            KernelVerdicts.Keep(key, device, measured);
            return measured;
        });
    }

    /// <summary>Layers measured in this process (tests: a second process reads verdicts from disk instead).</summary>
    internal static int Measurements;

    private static double Measure(ICheckedComputation c, long[][] shapes, ScalarType type, int route, bool training,
        Device device)
    {
        Interlocked.Increment(ref Measurements);
        using var scope = NewDisposeScope();
        using var junk = device.type == TorchSharp.DeviceType.CPU ? NativeRuntime.JunkFill() : null;
        var g = new Generator(0x5EED);
        var inputs = shapes.Select(s => randn(s, float64, generator: g).to(type).to(float64)).ToArray();
        var parameters = c.Parameters.Select(p => (c.FollowsPrecision ? p.detach().to(type) : p.detach()).to(float64)
            .cpu()).ToArray();
        // The reference: the computation spelled out in basic operations, in float64 on the CPU (no fused kernel).
        var reference = Run(c, c.RouteCount - 1, inputs, parameters, training, ScalarType.Float64);
        var got = Run(c, route, inputs.Select(x => x.to(type).to(device)).ToArray(),
            parameters.Select(p => p.to(c.FollowsPrecision ? type : ScalarType.Float32).to(device)).ToArray(),
                training, type);
        double worst = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            if (!got[i].isfinite().all().item<bool>()) return double.PositiveInfinity;
            double scale = Math.Max(reference[i].abs().max().item<double>(), 1e-30);
            worst = Math.Max(worst, (got[i].to(float64) - reference[i]).abs().max().item<double>() / scale);
        }
        return worst;
    }

    /// <summary>Output, and for training the gradients of a fixed random weighting of it with respect to inputs and
    /// parameters.</summary>
    private static Tensor[] Run(ICheckedComputation c, int route, Tensor[] inputs, Tensor[] parameters, bool training,
        ScalarType type)
    {
        using var grad = training ? enable_grad() : no_grad();
        var xs = inputs.Select(x => x.detach().requires_grad_(training)).ToArray();
        var ps = parameters.Select(p => p.detach().requires_grad_(training)).ToArray();
        bool cast = !c.FollowsPrecision && type != ScalarType.Float32 && type != ScalarType.Float64;
        var y = c.Apply(route, cast ? xs.Select(x => x.to(ScalarType.Float32)).ToArray() : xs, ps, training);
        if (cast) y = y.to(type);
        if (!training) return new[] { y.detach().cpu() };
        using var weighting = randn(y.shape, float64, generator: new Generator(0xD1CE)).to(y.dtype).to(y.device);
        y.backward(new[] { weighting });
        // an input read only for its shape (a learned query's batch size) has no gradient: zeros on both sides
        static Tensor Gradient(Tensor t) => t.grad?.cpu() ?? zeros(t.shape, t.dtype);
        return new[] { y.detach().cpu() }.Concat(xs.Select(Gradient)).Concat(ps.Select(Gradient)).ToArray();
    }
}
