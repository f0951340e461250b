using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using Segmentation.Models.Export;

namespace Segmentation.Models.Layers;

/// <summary>
/// How a <see cref="Convolution"/> computes. All three give the same numbers where the kernels underneath are right;
/// <see cref="ConvolutionCheck"/> measures which of them are right on this machine, for each layer shape, and the
/// model uses the first that is.
/// </summary>
internal enum ConvolutionRoute
{
    /// <summary>libtorch's own convolution (oneDNN on the CPU, cuDNN on CUDA): the fastest.</summary>
    Direct,
    /// <summary>
    /// The same call with input and output channels zero-padded up to a multiple of <see
    /// cref="Convolution.PadMultiple"/>
    /// (zero input channels, zero weight rows and columns, the output sliced back): the same result, and a different
    /// oneDNN kernel, which is right for channel counts where the direct kernel is not.
    /// </summary>
    Padded,
    /// <summary>
    /// im2col (<c>unfold</c>/<c>fold</c>) and a matrix product: no convolution kernel at all, so it is right wherever a
    /// matrix product is; slower and heavier in memory, used only where both others failed the check.
    /// </summary>
    Unfold,
}

/// <summary>
/// A 2-D convolution (grouped and dilated too) or transposed convolution whose route (<see cref="ConvolutionRoute"/>)
/// can be switched without touching its parameters. State-dict keys (<c>weight</c>, <c>bias</c>), shapes and
/// initialisation are those of <c>nn.Conv2d</c> and <c>nn.ConvTranspose2d</c>, so checkpoints are interchangeable with
/// them. Checked against float64 by <see cref="ConvolutionCheck"/>, which also chooses its route.
/// </summary>
public sealed class Convolution : Layer
{
    /// <summary>Channel multiple the <see cref="ConvolutionRoute.Padded"/> route pads to.</summary>
    public const int PadMultiple = 32;

#pragma warning disable IDE1006 // state-dict names
    private Parameter weight;
    private Parameter? bias;
#pragma warning restore IDE1006

    /// <summary>Input channels.</summary>
    public long InChannels { get; }
    /// <summary>Output channels.</summary>
    public long OutChannels { get; }
    /// <summary>Square kernel size.</summary>
    public int Kernel { get; }
    /// <summary>Stride (both directions).</summary>
    public int Stride { get; }
    /// <summary>Zero padding (both sides, both directions).</summary>
    public int Padding { get; }
    /// <summary>Transposed convolution (weight laid out in x out x k x k).</summary>
    public bool Transposed { get; }
    /// <summary>Channel groups (depthwise: as many as the input channels).</summary>
    public int Groups { get; }
    /// <summary>Spacing between kernel taps.</summary>
    public int Dilation { get; }
    /// <summary>How <see cref="Layer.forward"/> computes; <see cref="ConvolutionRoute.Direct"/> until a check says
    /// otherwise.</summary>
    internal new ConvolutionRoute Route { get => (ConvolutionRoute)base.Route; set => base.Route = (int)value; }

    /// <summary>The weight (out x in x k x k, or in x out x k x k when transposed).</summary>
    public Parameter Weight => weight;
    /// <summary>The bias, if any.</summary>
    public Parameter? Bias => bias;

    /// <summary>The shapes this layer was checked at (its route is right for all of them).</summary>
    internal List<ConvolutionShape> CheckedShapes { get; } = new();

    /// <summary>Creates the layer, initialised as PyTorch initialises
    /// <c>nn.Conv2d</c>/<c>nn.ConvTranspose2d</c>.</summary>
    public Convolution(long inChannels, long outChannels, int kernel, int stride = 1, int padding = 0, bool bias = true,
        bool transposed = false, int groups = 1, int dilation = 1)
        : base(transposed ? "ConvTranspose2d" : "Conv2d")
    {
        if (inChannels < 1 || outChannels < 1)
            throw new ArgumentOutOfRangeException(nameof(inChannels),
                $"Convolution channels must be at least 1; got {inChannels} -> {outChannels}.");
        if (kernel < 1 || stride < 1 || padding < 0 || dilation < 1)
            throw new ArgumentOutOfRangeException(nameof(kernel),
                $"Convolution kernel {kernel}, stride {stride}, padding {padding}, dilation {dilation} are out of "
                    + $"range.");
        if (groups < 1 || inChannels % groups != 0 || outChannels % groups != 0)
            throw new ArgumentOutOfRangeException(nameof(groups),
                $"Convolution groups {groups} must divide both channel counts ({inChannels} -> {outChannels}).");
        if (transposed && (groups != 1 || dilation != 1))
            throw new ArgumentOutOfRangeException(nameof(transposed),
                "Transposed convolutions here have one group and no dilation.");
        InChannels = inChannels; OutChannels = outChannels; Kernel = kernel; Stride = stride; Padding = padding;
        Transposed = transposed; Groups = groups; Dilation = dilation;
        var shape = transposed
            ? new long[] { inChannels, outChannels, kernel, kernel }
            : new long[] { outChannels, inChannels / groups, kernel, kernel };
        weight = new Parameter(empty(shape));
        this.bias = bias ? new Parameter(empty(outChannels)) : null;
        using (no_grad())
        {
            nn.init.kaiming_uniform_(weight, Math.Sqrt(5));
            if (this.bias is not null)
            {
                // PyTorch's fan-in: weight.size(1) * k * k (for a transposed weight that is the output channels).
                double fanIn = shape[1] * kernel * kernel, bound = 1 / Math.Sqrt(fanIn);
                nn.init.uniform_(this.bias, -bound, bound);
            }
        }
        RegisterComponents();
    }

    /// <summary>The geometry of this layer (the check and the summary read it).</summary>
    internal ConvolutionGeometry Geometry => new(Stride, Padding, Transposed, Groups, Dilation);

    /// <inheritdoc />
    protected override Tensor Compute(Tensor input)
    {
        if (ComputeType == weight.dtype) return Apply(Route, input, weight, bias, Geometry);
        using var scope = NewDisposeScope();
        var x = input.dtype == ComputeType ? input : input.to(ComputeType);
        return Apply(Route, x, weight.to(ComputeType), bias?.to(ComputeType), Geometry).MoveToOuterDisposeScope();
    }

    /// <summary>The convolution of <paramref name="x"/> by <paramref name="w"/> along <paramref
    /// name="route"/>.</summary>
    internal static Tensor Apply(ConvolutionRoute route, Tensor x, Tensor w, Tensor? b, ConvolutionGeometry g)
    {
        // Padding channels would mix groups; grouped layers have the direct and the im2col routes.
        if (route == ConvolutionRoute.Padded && g.Groups == 1) return PaddedConvolution(x, w, b, g.Stride, g.Padding,
            g.Transposed);
        if (route == ConvolutionRoute.Direct) return DirectConvolution(x, w, b, g);
        if (x.dtype == ScalarType.Float32 || x.dtype == ScalarType.Float64) return Unfold(x, w, b, g);
        return InFloat32(x, w, b, (x32, w32, b32) => Unfold(x32, w32, b32, g));
    }

    private static Tensor Unfold(Tensor x, Tensor w, Tensor? b, ConvolutionGeometry g) =>
        g.Transposed ? UnfoldTransposed(x, w, b, g.Stride, g.Padding) : UnfoldConvolution(x, w, b, g);

    /// <summary>
    /// The fallback route accumulates in float32 whatever the type it is given (fold sums overlapping columns, which in
    /// bfloat16 would lose what the kernels it stands in for keep), and returns that type.
    /// </summary>
    private static Tensor InFloat32(Tensor x, Tensor w, Tensor? b, Func<Tensor, Tensor, Tensor?, Tensor> route)
    {
        using var scope = NewDisposeScope();
        return route(x.to(ScalarType.Float32), w.to(ScalarType.Float32), b?.to(ScalarType.Float32)).to(x.dtype)
            .MoveToOuterDisposeScope();
    }

    private static Tensor DirectConvolution(Tensor x, Tensor w, Tensor? b, ConvolutionGeometry g)
    {
        long[] s = { g.Stride, g.Stride }, p = { g.Padding, g.Padding }, d = { g.Dilation, g.Dilation };
        return g.Transposed
            ? F.conv_transpose2d(x, w, b, strides: s, padding: p)
            : F.conv2d(x, w, b, strides: s, padding: p, dilation: d, groups: g.Groups);
    }

    private static Tensor PaddedConvolution(Tensor x, Tensor w, Tensor? b, int stride, int padding, bool transposed)
    {
        long cin = x.shape[1], cout = transposed ? w.shape[1] : w.shape[0];
        long cin2 = RoundUp(cin), cout2 = RoundUp(cout);
        using var scope = NewDisposeScope();
        var xp = cin2 > cin ? F.pad(x, new long[] { 0, 0, 0, 0, 0, cin2 - cin }) : x;
        // F.pad pads the last dimensions first: (k, k, dim1, dim0).
        var wp = transposed
            ? F.pad(w, new long[] { 0, 0, 0, 0, 0, cout2 - cout, 0, cin2 - cin })
            : F.pad(w, new long[] { 0, 0, 0, 0, 0, cin2 - cin, 0, cout2 - cout });
        var y = DirectConvolution(xp, wp, null, new ConvolutionGeometry(stride, padding, transposed, 1, 1));
        if (cout2 > cout) y = y.narrow(1, 0, cout);
        if (b is not null) y = y + b.view(1, -1, 1, 1);
        return y.MoveToOuterDisposeScope();
    }

    private static Tensor UnfoldConvolution(Tensor x, Tensor w, Tensor? b, ConvolutionGeometry g)
    {
        long n = x.shape[0], cout = w.shape[0], k = w.shape[2], groups = g.Groups;
        long ho = g.OutputExtent(x.shape[2], k), wo = g.OutputExtent(x.shape[3], k);
        using var scope = NewDisposeScope();
        // N x (Cin k k) x L, the columns of each group together.
        var cols = F.unfold(x, (k, k), dilation: (g.Dilation, g.Dilation), padding: (g.Padding, g.Padding),
            stride: (g.Stride, g.Stride));
        var y = w.reshape(groups, cout / groups, -1).matmul(cols.view(n, groups, -1, cols.shape[2]))
            .view(n, cout, ho, wo);
        if (b is not null) y = y + b.view(1, -1, 1, 1);
        return y.MoveToOuterDisposeScope();
    }

    private static Tensor UnfoldTransposed(Tensor x, Tensor w, Tensor? b, int stride, int padding)
    {
        long n = x.shape[0], cin = x.shape[1], cout = w.shape[1], k = w.shape[2];
        long ho = (x.shape[2] - 1) * stride - 2 * padding + k, wo = (x.shape[3] - 1) * stride - 2 * padding + k;
        using var scope = NewDisposeScope();
        var cols = w.reshape(cin, cout * k * k).t().matmul(x.reshape(n, cin, -1)); // N x (Cout k k) x HW
        var y = F.fold(cols, (ho, wo), (k, k), padding: (padding, padding), stride: (stride, stride));
        if (b is not null) y = y + b.view(1, -1, 1, 1);
        return y.MoveToOuterDisposeScope();
    }

    private static long RoundUp(long channels) => (channels + PadMultiple - 1) / PadMultiple * PadMultiple;

    /// <inheritdoc />
    internal override string ExportOnnx(OnnxGraph g, string input, string path) => g.Convolution(input, path, weight,
        bias, Kernel, Geometry);

    /// <inheritdoc />
    internal override LayerSummary Summarise(string path, Tensor input, Tensor output)
    {
        long inH = input.shape[2], inW = input.shape[3], outH = output.shape[2], outW = output.shape[3];
        long perPosition = InChannels / Groups * OutChannels * Kernel * Kernel;
        long macs = perPosition * (Transposed ? inH * inW : outH * outW);
        return new LayerSummary(path, Transposed ? "ConvTranspose2d" : "Conv2d", new[] { OutChannels, outH, outW },
            OwnParameters(), macs);
    }
}

/// <summary>Stride, padding, transposition, groups and dilation of a convolution.</summary>
/// <param name="Stride">Stride (both directions).</param>
/// <param name="Padding">Zero padding (both sides, both directions).</param>
/// <param name="Transposed">Transposed convolution.</param>
/// <param name="Groups">Channel groups.</param>
/// <param name="Dilation">Spacing between kernel taps.</param>
internal readonly record struct ConvolutionGeometry(int Stride, int Padding, bool Transposed, int Groups, int Dilation)
{
    /// <summary>Output height or width for an input extent and a kernel size.</summary>
    public long OutputExtent(long input, long kernel) => Transposed
        ? (input - 1) * Stride - 2 * Padding + kernel
        : (input + 2 * Padding - Dilation * (kernel - 1) - 1) / Stride + 1;
}
