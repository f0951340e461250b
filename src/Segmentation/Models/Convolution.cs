using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using Segmentation.Models.Export;

namespace Segmentation.Models;

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
    /// The same call with input and output channels zero-padded up to a multiple of <see cref="Convolution.PadMultiple"/>
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
/// A 2-D convolution or transposed convolution whose route (<see cref="ConvolutionRoute"/>) can be switched without
/// touching its parameters. State-dict keys (<c>weight</c>, <c>bias</c>), shapes and initialisation are those of
/// <c>nn.Conv2d</c> and <c>nn.ConvTranspose2d</c>, so checkpoints are interchangeable with them.
/// </summary>
internal sealed class Convolution : nn.Module<Tensor, Tensor>, IOnnxExportable
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
    /// <summary>How <see cref="forward"/> computes; <see cref="ConvolutionRoute.Direct"/> until a check says otherwise.</summary>
    public ConvolutionRoute Route { get; set; }

    /// <summary>
    /// The type the convolution computes in (<see cref="Precision"/>): input, weight and bias are cast to it and the
    /// output stays in it; the parameters themselves stay float32. Float32 unless a model sets it.
    /// </summary>
    public ScalarType ComputeType { get; set; } = ScalarType.Float32;

    /// <summary>The weight (out x in x k x k, or in x out x k x k when transposed).</summary>
    public Parameter Weight => weight;
    /// <summary>The bias, if any.</summary>
    public Parameter? Bias => bias;

    /// <summary>The shapes this layer was checked at (its route is right for all of them).</summary>
    internal List<ConvolutionShape> CheckedShapes { get; } = new();

    /// <summary>Called with each input while set (the route check uses it to learn the shapes a model really sees).</summary>
    internal Action<Convolution, Tensor>? Observer { get; set; }

    /// <summary>Creates the layer, initialised as PyTorch initialises <c>nn.Conv2d</c>/<c>nn.ConvTranspose2d</c>.</summary>
    public Convolution(long inChannels, long outChannels, int kernel, int stride = 1, int padding = 0, bool bias = true, bool transposed = false)
        : base(transposed ? "ConvTranspose2d" : "Conv2d")
    {
        if (inChannels < 1 || outChannels < 1) throw new ArgumentOutOfRangeException(nameof(inChannels), $"Convolution channels must be at least 1; got {inChannels} -> {outChannels}.");
        if (kernel < 1 || stride < 1 || padding < 0) throw new ArgumentOutOfRangeException(nameof(kernel), $"Convolution kernel {kernel}, stride {stride}, padding {padding} are out of range.");
        InChannels = inChannels; OutChannels = outChannels; Kernel = kernel; Stride = stride; Padding = padding; Transposed = transposed;
        var shape = transposed ? new long[] { inChannels, outChannels, kernel, kernel } : new long[] { outChannels, inChannels, kernel, kernel };
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

    /// <inheritdoc />
    public override Tensor forward(Tensor input)
    {
        Observer?.Invoke(this, input);
        if (ComputeType == weight.dtype) return Apply(Route, input, weight, bias, Stride, Padding, Transposed);
        using var scope = NewDisposeScope();
        var x = input.dtype == ComputeType ? input : input.to(ComputeType);
        return Apply(Route, x, weight.to(ComputeType), bias?.to(ComputeType), Stride, Padding, Transposed).MoveToOuterDisposeScope();
    }

    /// <summary>The convolution of <paramref name="x"/> by <paramref name="w"/> along <paramref name="route"/>.</summary>
    internal static Tensor Apply(ConvolutionRoute route, Tensor x, Tensor w, Tensor? b, int stride, int padding, bool transposed) => route switch
    {
        ConvolutionRoute.Padded => PaddedConvolution(x, w, b, stride, padding, transposed),
        ConvolutionRoute.Unfold => x.dtype == ScalarType.Float32 || x.dtype == ScalarType.Float64
            ? transposed ? UnfoldTransposed(x, w, b, stride, padding) : UnfoldConvolution(x, w, b, stride, padding)
            : InFloat32(x, w, b, (x32, w32, b32) => transposed ? UnfoldTransposed(x32, w32, b32, stride, padding) : UnfoldConvolution(x32, w32, b32, stride, padding)),
        _ => DirectConvolution(x, w, b, stride, padding, transposed),
    };

    /// <summary>
    /// The fallback route accumulates in float32 whatever the type it is given (fold sums overlapping columns, which in
    /// bfloat16 would lose what the kernels it stands in for keep), and returns that type.
    /// </summary>
    private static Tensor InFloat32(Tensor x, Tensor w, Tensor? b, Func<Tensor, Tensor, Tensor?, Tensor> route)
    {
        using var scope = NewDisposeScope();
        return route(x.to(ScalarType.Float32), w.to(ScalarType.Float32), b?.to(ScalarType.Float32)).to(x.dtype).MoveToOuterDisposeScope();
    }

    private static Tensor DirectConvolution(Tensor x, Tensor w, Tensor? b, int stride, int padding, bool transposed)
    {
        long[] s = { stride, stride }, p = { padding, padding };
        return transposed ? F.conv_transpose2d(x, w, b, strides: s, padding: p) : F.conv2d(x, w, b, strides: s, padding: p);
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
        var y = DirectConvolution(xp, wp, null, stride, padding, transposed);
        if (cout2 > cout) y = y.narrow(1, 0, cout);
        if (b is not null) y = y + b.view(1, -1, 1, 1);
        return y.MoveToOuterDisposeScope();
    }

    private static Tensor UnfoldConvolution(Tensor x, Tensor w, Tensor? b, int stride, int padding)
    {
        long n = x.shape[0], cout = w.shape[0], k = w.shape[2];
        long ho = (x.shape[2] + 2 * padding - k) / stride + 1, wo = (x.shape[3] + 2 * padding - k) / stride + 1;
        using var scope = NewDisposeScope();
        var cols = F.unfold(x, (k, k), padding: (padding, padding), stride: (stride, stride)); // N x (Cin k k) x L
        var y = w.reshape(cout, -1).matmul(cols).view(n, cout, ho, wo);
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
    public string ExportOnnx(OnnxGraph g, string input, string path) => g.Convolution(input, path, weight, bias, Kernel, Stride, Padding, Transposed);
}
