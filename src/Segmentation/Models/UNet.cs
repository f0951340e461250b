using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>
/// U-Net (Ronneberger et al. 2015): a contracting path that halves the size and doubles the channels at each level,
/// an expanding path that upsamples back and concatenates the same-resolution feature map of the contracting path
/// (skip connection), and a 1x1 head to class logits. Any input of at least 2^Depth on a side works; the logits have
/// exactly the input's height and width.
/// </summary>
/// <remarks>State-dict keys: <c>stem.*</c>, <c>encoder.{i}.*</c> (the last is the bottleneck), <c>decoder.{i}.*</c>, <c>head.*</c>.</remarks>
public sealed class UNet : nn.Module<Tensor, Tensor>
{
    private readonly DoubleConv stem;
    private readonly ModuleList<EncoderBlock> encoder;
    private readonly ModuleList<DecoderBlock> decoder;
    private readonly Convolution head;

    /// <summary>The options the model was built with.</summary>
    public UNetOptions Options { get; }

    /// <summary>Builds the model; <paramref name="options"/> are validated first.</summary>
    public UNet(UNetOptions? options = null) : base(nameof(UNet))
    {
        Options = options ?? new UNetOptions();
        Options.Validate();
        var o = Options;
        NativeRuntime.EnsureInitialized();
        using var seed = o.Seed is { } s ? SeededGenerator(s) : null;
        var channels = Enumerable.Range(0, o.Depth + 1).Select(i => (long)o.BaseChannels << i).ToArray();

        stem = new DoubleConv(o.InChannels, channels[0], o.Normalization);
        encoder = nn.ModuleList(Enumerable.Range(1, o.Depth)
            .Select(i => new EncoderBlock(channels[i - 1], channels[i], o.Normalization, i == o.Depth ? o.Dropout : 0))
            .ToArray());
        decoder = nn.ModuleList(Enumerable.Range(0, o.Depth).Reverse()
            .Select(i => new DecoderBlock(channels[i + 1], channels[i], channels[i], o.Upsampling, o.Normalization))
            .ToArray());
        head = new Convolution(channels[0], o.Classes, 1);
        RegisterComponents();
    }

    /// <summary>Logits N x Classes x H x W for images N x InChannels x H x W (float).</summary>
    public override Tensor forward(Tensor input)
    {
        CheckInput(input);
        if (VerifyConvolutions && !routing) RouteConvolutions(input.shape, training && is_grad_enabled());
        var skips = new List<Tensor>(Options.Depth);
        var x = stem.forward(input);
        foreach (var block in encoder)
        {
            skips.Add(x);
            x = block.forward(x);
        }
        for (int i = 0; i < decoder.Count; i++)
            x = decoder[i].forward(x, skips[skips.Count - 1 - i]);
        var logits = head.forward(x);
        return logits.dtype == ScalarType.Float32 ? logits : logits.to(ScalarType.Float32);
    }

    /// <summary>
    /// The arithmetic of the convolutions (<see cref="Models.Precision"/>); parameters stay float32 and the logits
    /// come out float32 whatever it is. Float32 by default; not part of the weights, so any checkpoint runs in any.
    /// </summary>
    public Precision Precision
    {
        get => precision;
        set
        {
            precision = value;
            foreach (var c in modules().OfType<Convolution>()) c.ComputeType = value.ComputeType();
        }
    }

    private Precision precision = Precision.Float32;

    /// <summary>
    /// Check every convolution against float64 before the first input of each shape, and route it through a kernel
    /// that is right (<see cref="ConvolutionCheck"/>). On by default: libtorch's CPU kernels are wrong for some channel
    /// counts on some CPUs. Turning it off keeps libtorch's direct kernels, unchecked.
    /// </summary>
    public bool VerifyConvolutions { get; set; } = true;

    /// <summary>The report of the latest convolution check (null before the first).</summary>
    public ConvolutionReport? Convolutions { get; private set; }

    private readonly HashSet<(long, long, long, long, bool, int, string, Precision)> routedInputs = new();
    private bool routing;

    /// <summary>
    /// Checks and routes the convolutions for inputs of <paramref name="inputShape"/> (N x C x H x W), with
    /// gradients when <paramref name="training"/>; <see cref="forward"/> does this by itself for each new shape.
    /// Returns the report, or null when that shape was checked before.
    /// </summary>
    public ConvolutionReport? RouteConvolutions(long[] inputShape, bool training)
    {
        if (inputShape.Length != 4) throw new ArgumentException($"Expected an input shape N x C x H x W; got [{string.Join(", ", inputShape)}].");
        // Kernels are chosen per thread count (oneDNN splits work by threads), device and type, so a new one is checked again.
        string device = head.Weight.device.ToString();
        if (!routedInputs.Add((inputShape[0], inputShape[1], inputShape[2], inputShape[3], training, get_num_threads(), device, precision))) return null;
        routing = true;
        try { return Convolutions = ConvolutionCheck.Configure(this, inputShape, training); }
        finally { routing = false; }
    }

    /// <summary>Seeds the global generator for the weights and puts its state back when disposed.</summary>
    private static IDisposable SeededGenerator(int seed)
    {
        var saved = random.get_rng_state();
        random.manual_seed(seed);
        return new RestoreGenerator(saved);
    }

    private sealed class RestoreGenerator(Tensor state) : IDisposable
    {
        public void Dispose() { random.set_rng_state(state); state.Dispose(); }
    }

    /// <summary>Number of trainable parameters.</summary>
    public long ParameterCount() => parameters().Sum(p => p.numel());

    private void CheckInput(Tensor input)
    {
        if (input.dim() != 4)
            throw new ArgumentException($"UNet expects a batch N x C x H x W; got a tensor of shape [{string.Join(", ", input.shape)}].");
        if (input.shape[1] != Options.InChannels)
            throw new ArgumentException($"UNet was built for {Options.InChannels} input channel(s); the batch has {input.shape[1]}.");
        long min = Options.MinimumInputSize;
        if (input.shape[2] < min || input.shape[3] < min)
            throw new ArgumentException($"Input of {input.shape[3]}x{input.shape[2]} (WxH) is too small for a U-Net of depth {Options.Depth}: the minimum is {min}x{min}.");
    }
}
