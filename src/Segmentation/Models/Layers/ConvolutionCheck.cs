using System.Collections.Concurrent;
using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Models.Layers;

/// <summary>One convolution as a model really runs it: channels, kernel, the input it sees, and whether its input needs
/// a gradient.</summary>
/// <param name="Transposed">Transposed convolution.</param>
/// <param name="InChannels">Input channels.</param>
/// <param name="OutChannels">Output channels.</param>
/// <param name="Kernel">Square kernel size.</param>
/// <param name="Stride">Stride.</param>
/// <param name="Padding">Zero padding.</param>
/// <param name="Batch">Batch size checked (the real one, at most <see cref="ConvolutionCheck.MaxBatch"/>).</param>
/// <param name="Height">Input height checked (the real one, at most <see cref="ConvolutionCheck.MaxExtent"/>).</param>
/// <param name="Width">Input width checked (likewise).</param>
/// <param name="InputGradient">Training needs the gradient with respect to the input (every layer but the
/// first).</param>
/// <param name="Backward">Training: weight (and input) gradients are checked too; inference checks the output
/// only.</param>
/// <param name="DataType">The type the convolution computes in (float32, or bfloat16/float16 under mixed
/// precision).</param>
/// <param name="Groups">Channel groups.</param>
/// <param name="Dilation">Spacing between kernel taps.</param>
internal sealed record ConvolutionShape(bool Transposed, long InChannels, long OutChannels, int Kernel, int Stride,
    int Padding,
    long Batch, long Height, long Width, bool InputGradient, bool Backward, ScalarType DataType = ScalarType.Float32,
    int Groups = 1, int Dilation = 1)
{
    /// <summary>Stride, padding, transposition, groups and dilation.</summary>
    public ConvolutionGeometry Geometry => new(Stride, Padding, Transposed, Groups, Dilation);

    /// <summary>Output height or width for an input extent.</summary>
    public long OutputExtent(long input) => Geometry.OutputExtent(input, Kernel);

    /// <inheritdoc />
    public override string ToString()
    {
        string kind = $"{(Transposed ? "T" : "")}{Kernel}x{Kernel}{(Stride > 1 ? $"/s{Stride}" : "")}"
            + (Groups > 1 ? $"/g{Groups}" : "") + (Dilation > 1 ? $"/d{Dilation}" : "");
        string pass = Backward ? InputGradient ? " (fwd+bwd)" : " (fwd+dW)" : " (fwd)";
        string type = DataType == ScalarType.Float32 ? "" : $" {ConvolutionCheck.TypeName(DataType)}";
        return $"{kind} {InChannels}->{OutChannels} at {Batch}x{InChannels}x{Height}x{Width}{pass}{type}";
    }
}

/// <summary>How one route did on one shape: the largest error of each result relative to the float64 reference's
/// largest magnitude.</summary>
/// <param name="Route">The route tried.</param>
/// <param name="OutputError">Forward output.</param>
/// <param name="InputGradientError">Gradient with respect to the input (0 when not needed).</param>
/// <param name="WeightGradientError">Gradient with respect to the weight and bias (0 for inference).</param>
/// <param name="Finite">Every value of every result was finite.</param>
/// <param name="Tolerance">The largest error accepted for the type checked (<see
/// cref="ConvolutionCheck.ToleranceFor"/>).</param>
internal sealed record RouteResult(ConvolutionRoute Route, double OutputError, double InputGradientError,
    double WeightGradientError, bool Finite,
    double Tolerance = ConvolutionCheck.Tolerance)
{
    /// <summary>Within <see cref="Tolerance"/> everywhere, and finite.</summary>
    public bool Passed => Finite
        && Math.Max(OutputError, Math.Max(InputGradientError, WeightGradientError)) <= Tolerance;
}

/// <summary>The route chosen for one layer of a model, and the evidence.</summary>
/// <param name="Layer">State-dict name of the layer.</param>
/// <param name="Shapes">The shapes it was checked at.</param>
/// <param name="Route">The first route that passed at every shape.</param>
/// <param name="Tried">Every route tried at every shape, in order.</param>
internal sealed record LayerRoute(string Layer, IReadOnlyList<ConvolutionShape> Shapes, ConvolutionRoute Route,
    IReadOnlyList<(ConvolutionShape Shape, RouteResult Result)> Tried);

/// <summary>What <see cref="ConvolutionCheck.Configure"/> found for a model.</summary>
public sealed record ConvolutionReport
{
    internal ConvolutionReport(IReadOnlyList<LayerRoute> layers, double seconds, int threads, string device,
        long[] input, bool training)
        => (Layers, Seconds, Threads, Device, Input, Training) = (layers, seconds, threads, device, input, training);

    /// <summary>Each layer's shapes, the routes tried and the route taken (for the CLI's doctor).</summary>
    internal IReadOnlyList<LayerRoute> Layers { get; }
    /// <summary>The other leaves checked (norms, linear, attention): their errors and routes.</summary>
    internal IReadOnlyList<LayerCheckResult> OtherLayers { get; private init; } = Array.Empty<LayerCheckResult>();

    /// <summary>The same report with the other leaves' results.</summary>
    internal ConvolutionReport With(IReadOnlyList<LayerCheckResult> others, double seconds) =>
        new(Layers, seconds, Threads, Device, Input, Training) { OtherLayers = others };
    /// <summary>How long the check took.</summary>
    public double Seconds { get; }
    /// <summary>libtorch threads it ran with.</summary>
    public int Threads { get; }
    /// <summary>Device checked.</summary>
    public string Device { get; }
    /// <summary>The model input the shapes were observed for (N x C x H x W).</summary>
    public long[] Input { get; }
    /// <summary>Gradients were checked too.</summary>
    public bool Training { get; }
    /// <summary>Convolution layers checked.</summary>
    public int LayerCount => Layers.Count;
    /// <summary>Layers that do not take libtorch's direct kernel (padded or im2col instead), by name.</summary>
    public IReadOnlyList<string> Rerouted => Layers.Where(l => l.Route != ConvolutionRoute.Direct).Select(l => l.Layer)
        .ToList();

    /// <summary>
    /// One short line: how many layers were checked and how many do not take libtorch's kernel, split into those whose
    /// kernel was wrong and those whose kernel was not tried because it crashes on that shape. Which layers, and the
    /// errors of every route, are in <c>segment doctor</c>'s table.
    /// </summary>
    public string Summary()
    {
        var rerouted = Layers.Where(l => l.Route != ConvolutionRoute.Direct).ToList();
        int untried = rerouted.Count(l => !l.Tried.Any(t => t.Result.Route == ConvolutionRoute.Direct));
        int spelled = OtherLayers.Count(l => l.Route != 0);
        int wrong = rerouted.Count - untried + spelled;
        var outcome = wrong + untried == 0 ? "all right on libtorch's kernels"
            : string.Join(", ", new[] { wrong > 0 ? $"{wrong} rerouted where libtorch's kernel was wrong" : null,
                untried > 0 ? $"{untried} rerouted where it crashes, untried" : null }.Where(x => x is not null))
                + "; segment doctor lists them";
        return $"layer check, {(Training ? "training" : "inference")} input {string.Join("x", Input)} ({Device}, "
            + $"{Threads} thread(s), {Seconds:F2} s): {Layers.Count + OtherLayers.Count} layers against float64, "
            + outcome;
    }

}

/// <summary>
/// Trust no kernel: checks each convolution a model uses, at the shapes it really sees, against a float64 reference
/// (which libtorch computes without oneDNN), and routes each layer through the first of <see
/// cref="ConvolutionRoute.Direct"/>,
/// <see cref="ConvolutionRoute.Padded"/>, <see cref="ConvolutionRoute.Unfold"/> that is right. On the CPU the check
/// runs
/// with libtorch's allocator filling new memory with junk, so a kernel that reads memory it never wrote fails every
/// time instead of now and then. Verdicts are cached per process by shape, thread count and device.
/// </summary>
internal static class ConvolutionCheck
{
    /// <summary>
    /// Largest float32 error accepted, relative to the reference's largest magnitude: right kernels are at float32's
    /// rounding, broken ones off by a tenth or more (<c>segment doctor --sweep</c> shows both on a machine).
    /// </summary>
    public const double Tolerance = 2e-4;
    /// <summary>
    /// Largest bfloat16 error accepted. The reference is computed in float64 from the same bfloat16-rounded inputs, so
    /// what remains is the output's own rounding (2^-9 of a value) and the kernel's accumulation order, well under this
    /// for right kernels (<c>segment doctor --sweep --precision bf16</c> measures them); broken ones are off by 10 %
    /// to 100 %.
    /// </summary>
    public const double BFloat16Tolerance = 2e-2;
    /// <summary>Largest float16 error accepted (three more mantissa bits than bfloat16).</summary>
    public const double Float16Tolerance = 1e-2;

    /// <summary>
    /// Largest error accepted for float32 convolutions that cuDNN runs in TF32 (its default, and PyTorch's: inputs
    /// rounded to 10 bits of mantissa, so a float32 tolerance would reject every tensor-core kernel; broken kernels are
    /// off by 10 % to 100 %; the README's GPU section has the figures).
    /// </summary>
    public const double TF32Tolerance = 5e-3;

    /// <summary>The tolerance for a type the convolutions compute in, on a device (CUDA float32 is TF32 while cuDNN
    /// allows it).</summary>
    public static double ToleranceFor(ScalarType type, Device? device = null) => type switch
    {
        ScalarType.BFloat16 => BFloat16Tolerance,
        ScalarType.Float16 => Float16Tolerance,
        _ => device?.type == DeviceType.CUDA && backends.cudnn.allow_tf32 ? TF32Tolerance : Tolerance,
    };

    /// <summary>fp32, bf16 or fp16.</summary>
    internal static string TypeName(ScalarType type) => type switch
    {
        ScalarType.BFloat16 => "bf16",
        ScalarType.Float16 => "fp16",
        ScalarType.Float32 => "fp32",
        _ => type.ToString(),
    };
    /// <summary>Inputs larger than this are checked at this height and width (the kernels' blocking repeats; the cost
    /// does not).</summary>
    public const int MaxExtent = 32;
    /// <summary>Batches larger than this are checked at this size.</summary>
    public const int MaxBatch = 2;
    /// <summary>Work of one checked pass, at most (the extent shrinks for wide layers).</summary>
    public const double MaxMultiplyAccumulates = 40e6;
    private const int Trials = 2;

    private static readonly ConcurrentDictionary<(ConvolutionShape, ConvolutionRoute, int, string),
        RouteResult> Cache = new();

    /// <summary>
    /// Learns the shapes <paramref name="model"/>'s convolutions see for an input of <paramref name="inputShape"/> (one
    /// forward pass in eval mode, which changes no statistics), checks them and sets each layer's route. With
    /// <paramref name="training"/> the gradients are checked too. Layers keep the shapes of earlier calls, so a route
    /// stays right for all of them. Throws when no route is right (which would mean even a matrix product is wrong).
    /// </summary>
    public static ConvolutionReport Configure(nn.Module model, long[] inputShape, bool training)
    {
        NativeRuntime.EnsureInitialized();
        var clock = Stopwatch.StartNew();
        var layers = model.named_modules().Where(m => m.module is Convolution)
            .Select(m => (name: m.name, layer: (Convolution)m.module)).ToList();
        if (layers.Count == 0) return new ConvolutionReport(Array.Empty<LayerRoute>(), 0, get_num_threads(), "none",
            inputShape, training);
        var device = layers[0].layer.Weight.device;
        var (seen, order) = ObserveShapes(model, layers.Select(l => l.layer).ToList(), inputShape, device, training);

        var result = new List<LayerRoute>();
        foreach (var (name, layer) in layers.OrderBy(l => seen.TryGetValue(l.layer, out _) ? order.IndexOf(l.layer)
            : int.MaxValue))
        {
            if (!seen.TryGetValue(layer, out var shape)) continue; // not reached by this input
            var shapes = layer.CheckedShapes;
            if (!shapes.Contains(shape)) shapes.Add(shape);
            var (chosen, tried) = FirstRight(shapes, device, $"{name} ({shape})");
            layer.Route = chosen;
            result.Add(new LayerRoute(name, shapes.ToArray(), chosen, tried));
        }
        KernelVerdicts.Flush();
        return new ConvolutionReport(result, clock.Elapsed.TotalSeconds, get_num_threads(), device.ToString(),
            inputShape.ToArray(), training);
    }

    /// <summary>The first route that is right at <paramref name="shape"/> on <paramref name="device"/> (checked,
    /// cached).</summary>
    public static ConvolutionRoute Choose(ConvolutionShape shape, Device device)
    {
        NativeRuntime.EnsureInitialized();
        return FirstRight(new[] { shape }, device, shape.ToString()).Route;
    }

    /// <summary>
    /// Shapes whose oneDNN kernels must not even be tried on the CPU, because trying kills the process: libtorch 2.10's
    /// <c>jit_1x1</c> backward pass of a 1x1 stride-2 convolution divides by zero (SIGFPE) for 512->1024 and
    /// 1024->2048 channels (ResNet-50's shortcuts) at every size tried on an AVX-512 CPU (the README says which). No
    /// in-process check survives that, so every 1x1 stride-2 convolution that needs gradients takes the im2col route on
    /// the CPU, checked like any other. (Forward-only use, inference, is not affected and goes through the check as
    /// usual.)
    /// </summary>
    public static bool Quarantined(ConvolutionShape s, Device device) =>
        device.type == DeviceType.CPU && s.Backward && !s.Transposed && s.Kernel == 1 && s.Stride == 2;

    /// <summary>The routes to try for <paramref name="shape"/> on <paramref name="device"/>, in order.</summary>
    public static IEnumerable<ConvolutionRoute> Candidates(ConvolutionShape shape, Device device) =>
        Quarantined(shape, device) ? new[] { ConvolutionRoute.Unfold } : Enum.GetValues<ConvolutionRoute>();

    /// <summary>The first route right at every one of <paramref name="shapes"/>, and every check made on the
    /// way.</summary>
    private static (ConvolutionRoute Route,
        List<(ConvolutionShape, RouteResult)> Tried) FirstRight(IReadOnlyList<ConvolutionShape> shapes, Device device,
            string what)
    {
        var tried = new List<(ConvolutionShape, RouteResult)>();
        // The routes every shape may try, in order.
        foreach (var route in shapes.Select(s => Candidates(s, device)).Aggregate((a, b) => a.Intersect(b)))
        {
            bool all = true;
            foreach (var s in shapes)
            {
                var r = Check(s, route, device);
                tried.Add((s, r));
                if (!r.Passed) { all = false; break; }
            }
            if (all) return (route, tried);
        }
        throw new SegmentationException($"No convolution route computes {what} correctly on {device}: even the im2col "
            + $"route differs from the float64 reference. Run 'segment doctor' for details.");
    }

    /// <summary>Checks one route at one shape (cached): the shape's type on <paramref name="device"/> against float64
    /// on the CPU.</summary>
    public static RouteResult Check(ConvolutionShape shape, ConvolutionRoute route, Device device)
    {
        var key = (shape, route, get_num_threads(), device.ToString());
        return Cache.GetOrAdd(key, k =>
        {
            if (KernelVerdicts.Convolution(shape, route, k.Item3, device) is { } known) return known;
            var measured = Measure(shape, route, device);
            KernelVerdicts.Keep(shape, route, k.Item3, device, measured);
            return measured;
        });
    }

    /// <summary>Forgets this process's results (tests: as a new process would start).</summary>
    internal static void Forget() => Cache.Clear();

    /// <summary>Routes measured in this process (tests: a second process reads verdicts from disk instead).</summary>
    internal static int Measurements;

    private static RouteResult Measure(ConvolutionShape s, ConvolutionRoute route, Device device)
    {
        Interlocked.Increment(ref Measurements);
        double ey = 0, ex = 0, ew = 0; bool finite = true;
        using var junk = device.type == DeviceType.CPU ? NativeRuntime.JunkFill() : null;
        // Junk fill makes one trial decisive on the CPU; a second, with other data, is cheap insurance for small
        // layers.
        int trials = s.InChannels * s.OutChannels * s.Kernel * s.Kernel < 1 << 20 ? Trials : 1;
        for (int trial = 0; trial < trials && finite; trial++)
        {
            using var scope = NewDisposeScope();
            var g = new Generator((ulong)(0x5EED + trial));
            var wShape = s.Transposed
                ? new[] { s.InChannels, s.OutChannels, s.Kernel, s.Kernel }
                : new[] { s.OutChannels, s.InChannels / s.Groups, s.Kernel, s.Kernel };
            double fanIn = (s.Transposed ? s.OutChannels : s.InChannels / s.Groups) * s.Kernel * s.Kernel;
            // Drawn in float64 and rounded to the type checked; the reference computes on the rounded values in
            // float64.
            var dt = s.DataType;
            var x = randn(new[] { s.Batch, s.InChannels, s.Height, s.Width }, float64, generator: g).to(dt);
            var w = (randn(wShape, float64, generator: g) / Math.Sqrt(fanIn)).to(dt);
            var b = (randn(new[] { s.OutChannels }, float64, generator: g) * 0.1).to(dt);
            var dy = randn(new[] { s.Batch, s.OutChannels, s.OutputExtent(s.Height), s.OutputExtent(s.Width) },
                float64, generator: g).to(dt);
            var reference = Run(ConvolutionRoute.Direct, x.to(float64), w.to(float64), b.to(float64), dy.to(float64),
                s);
            var got = Run(route, x.to(device), w.to(device), b.to(device), dy.to(device), s);
            finite &= got.AllFinite();
            if (!finite) break;
            ey = Math.Max(ey, Error(got.y, reference.y));
            if (got.dx is not null) ex = Math.Max(ex, Error(got.dx, reference.dx!));
            if (got.dw is not null) ew = Math.Max(ew,
                Math.Max(Error(got.dw, reference.dw!), Error(got.db!, reference.db!)));
        }
        return new RouteResult(route, ey, ex, ew, finite, ToleranceFor(s.DataType, device));
    }

    private sealed record Outcome(Tensor y, Tensor? dx, Tensor? dw, Tensor? db)
    {
        public bool AllFinite() => new[] { y, dx, dw, db }.All(t => t is null || t.isfinite().all().item<bool>());
    }

    private static Outcome Run(ConvolutionRoute route, Tensor x, Tensor w, Tensor b, Tensor? dy, ConvolutionShape s)
    {
        bool backward = dy is not null && s.Backward;
        using var grad = backward ? enable_grad() : no_grad();
        x = x.detach().requires_grad_(backward && s.InputGradient);
        w = w.detach().requires_grad_(backward);
        b = b.detach().requires_grad_(backward);
        var y = Convolution.Apply(route, x, w, b, s.Geometry);
        if (!backward) return new Outcome(y.detach().cpu(), null, null, null);
        y.backward(new[] { dy! });
        return new Outcome(y.detach().cpu(), s.InputGradient ? x.grad!.cpu() : null, w.grad!.cpu(), b.grad!.cpu());
    }

    private static double Error(Tensor got, Tensor reference)
    {
        double scale = reference.abs().max().item<double>();
        return (got.to(float64) - reference).abs().max().item<double>() / Math.Max(scale, 1e-30);
    }

    /// <summary>
    /// The largest extent checked for a layer: <see cref="MaxExtent"/>, less for wide layers so that one pass stays
    /// within <see cref="MaxMultiplyAccumulates"/> (the float64 reference is what costs), never under the kernel or 4.
    /// </summary>
    private static long ExtentFor(Convolution c, long batch)
    {
        double perPixel = (double)batch * c.InChannels / c.Groups * c.OutChannels * c.Kernel * c.Kernel
            / (c.Transposed ? 1 : c.Stride * c.Stride);
        long byBudget = (long)Math.Sqrt(MaxMultiplyAccumulates / perPixel);
        return Math.Clamp(byBudget, Math.Max(4, c.Kernel), MaxExtent);
    }

    /// <summary>An input extent brought down to <paramref name="cap"/>, keeping its parity (odd sizes take other code
    /// paths).</summary>
    private static long Shrink(long extent, long cap) => extent <= cap ? extent : cap - ((cap - extent) & 1);

    private static (Dictionary<Convolution, ConvolutionShape>, List<Convolution>) ObserveShapes(nn.Module model,
        List<Convolution> layers, long[] inputShape, Device device, bool training)
    {
        var seen = new Dictionary<Convolution, ConvolutionShape>();
        var order = new List<Convolution>();
        void Observe(Layer layer, Tensor x, Tensor y)
        {
            var c = (Convolution)layer;
            if (!seen.ContainsKey(c)) order.Add(c);
            long batch = Math.Min(x.shape[0], MaxBatch), cap = ExtentFor(c, batch);
            seen[c] = new ConvolutionShape(c.Transposed, c.InChannels, c.OutChannels, c.Kernel, c.Stride, c.Padding,
                batch, Shrink(x.shape[2], cap), Shrink(x.shape[3], cap), training && x.requires_grad, training,
                    c.ComputeType,
                c.Groups, c.Dilation);
        }
        LayerObservation.Run(model, layers, Observe, inputShape, device, training);
        return (seen, order);
    }
}
