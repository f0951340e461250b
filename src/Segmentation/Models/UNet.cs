using TorchSharp;
using TorchSharp.Modules;
using Segmentation.Models.Encoders;
using Segmentation.Data;
using static TorchSharp.torch;
using Segmentation.Models.Export;

namespace Segmentation.Models;

/// <summary>
/// A U-Net: an <see cref="Encoder"/> (the contracting path), a <see cref="Decoder"/> built from the encoder's stages
/// (the expanding path, joined to it by skip connections), and a head to class logits. With the default options it is
/// the U-Net of Ronneberger et al. (2015); with a ResNet encoder it is segmentation_models.pytorch's <c>Unet</c>. Any
/// input of at least <see cref="UNetOptions.MinimumInputSize"/> on a side works; the logits have exactly the input's
/// height and width.
/// </summary>
/// <remarks>
/// State-dict keys: <c>encoder.*</c> (for the U-Net encoder <c>encoder.stem.*</c> and <c>encoder.blocks.{i}.*</c>; for
/// ResNets torchvision's names), <c>decoder.blocks.{i}.*</c>, and <c>head.*</c> (U-Net encoder) or
/// <c>segmentation_head.0.*</c> (ResNets, smp's name). <see cref="LegacyKey"/> maps the keys of 0.1's checkpoints.
/// </remarks>
public sealed class UNet : nn.Module<Tensor, Tensor>
{
    private readonly Encoder encoder;
    private readonly Decoder decoder;
    private readonly nn.Module<Tensor, Tensor> head;
    private readonly Convolution headConvolution;

    /// <summary>The options the model was built with.</summary>
    public UNetOptions Options { get; }

    /// <summary>The encoder (for freezing it, a lower learning rate, or pretrained weights).</summary>
    internal Encoder Encoder => encoder;

    /// <summary>Builds the model; <paramref name="options"/> are validated first.</summary>
    public UNet(UNetOptions? options = null) : base(nameof(UNet))
    {
        Options = options ?? new UNetOptions();
        Options.Validate();
        var o = Options;
        NativeRuntime.EnsureInitialized();
        using var seed = o.Seed is { } s ? SeededGenerator(s) : null;
        if (o.Encoder == EncoderKind.UNet)
        {
            encoder = new UNetEncoder(o.InChannels, o.BaseChannels, o.Depth, o.Norm, o.Dropout);
            decoder = new UNetDecoder(encoder.Stages, o.Upsampling, o.Norm);
            head = headConvolution = new Convolution(decoder.OutChannels, o.Classes, 1);
        }
        else
        {
            encoder = new ResNetEncoder(o.Encoder, o.InChannels);
            decoder = new SmpDecoder(encoder.Stages, o.DecoderChannels ?? SmpDecoder.DefaultChannels, o.Norm);
            headConvolution = new Convolution(decoder.OutChannels, o.Classes, 3, padding: 1);
            head = nn.Sequential(("0", headConvolution));
        }
        register_module("encoder", encoder);
        register_module("decoder", decoder);
        register_module(o.Encoder == EncoderKind.UNet ? "head" : "segmentation_head", head);
    }

    /// <summary>
    /// Loads pretrained encoder weights from a torchvision-layout state dict (<c>.pth</c> or <c>.safetensors</c>; the
    /// classifier <c>fc.*</c> is left out, and keys may carry an <c>encoder.</c> prefix, as smp's do). An RGB first
    /// convolution is fitted to this model's input channels (<see cref="ResNetEncoder.AdaptFirstConvolution"/>).
    /// Or, for <see cref="EncoderKind.MlNetResNet18"/>, ML.NET's <c>ResNet18.onnx</c> (<see cref="MlNetResNet18"/>), whose
    /// input convention is folded into the first layer for images normalised by <paramref name="inputNormalization"/>
    /// (default: what the trainer uses, <see cref="Normalization.DefaultFor"/>).
    /// Returns the number of tensors loaded.
    /// </summary>
    public int LoadEncoderWeights(string path, Normalization? inputNormalization = null)
    {
        if (encoder is not ResNetEncoder) throw new OptionsException($"Pretrained encoder weights need a ResNet encoder; this model's encoder is {Options.Encoder}.");
        using var scope = NewDisposeScope();
        bool onnx = path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase);
        if (onnx != (Options.Encoder == EncoderKind.MlNetResNet18))
            throw new OptionsException(onnx
                ? $"{path}: ONNX encoder weights are read for the mlnet-resnet18 encoder (ML.NET's ResNet18.onnx) only; this model's encoder is {Options.Encoder}."
                : $"{path}: the mlnet-resnet18 encoder takes ML.NET's ResNet18.onnx ({MlNetResNet18.Package} {MlNetResNet18.Version}), not a .pth or .safetensors file.");
        if (onnx)
        {
            var weights = MlNetResNet18.ReadWeights(path, Options.InChannels, inputNormalization ?? Normalization.DefaultFor(Options.InChannels));
            StateDicts.Load(encoder, weights, $"{path} ({Options.Encoder} encoder weights)", key => key.EndsWith("num_batches_tracked", StringComparison.Ordinal));
            return weights.Count;
        }
        var source = StateDicts.ReadFile(path)
            .Where(kv => !kv.Key.StartsWith("fc.", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key.StartsWith("encoder.", StringComparison.Ordinal) ? kv.Key["encoder.".Length..] : kv.Key, kv => kv.Value);
        if (source.TryGetValue("conv1.weight", out var first) && first.shape.Length == 4 && first.shape[1] != Options.InChannels)
            source["conv1.weight"] = ResNetEncoder.AdaptFirstConvolution(first, Options.InChannels);
        StateDicts.Load(encoder, source, $"{path} ({Options.Encoder} encoder weights)", key => key.EndsWith("num_batches_tracked", StringComparison.Ordinal));
        return source.Count;
    }

    /// <summary>
    /// The key a 0.1 checkpoint's key has now (0.1 had only the U-Net encoder, with <c>stem.*</c>, <c>encoder.{i}.*</c>
    /// and <c>decoder.{i}.*</c> at the top), or the key itself.
    /// </summary>
    public static string LegacyKey(string key)
    {
        if (key.StartsWith("stem.", StringComparison.Ordinal)) return "encoder." + key;
        foreach (var part in new[] { "encoder.", "decoder." })
            if (key.StartsWith(part, StringComparison.Ordinal) && key.Length > part.Length && char.IsDigit(key[part.Length]))
                return part + "blocks." + key[part.Length..];
        return key;
    }

    /// <summary>Logits N x Classes x H x W for images N x InChannels x H x W (float).</summary>
    public override Tensor forward(Tensor input)
    {
        CheckInput(input);
        if (VerifyConvolutions && !routing) RouteConvolutions(input.shape, training && is_grad_enabled());
        var logits = head.forward(decoder.forward(encoder.forward(input)));
        return logits.dtype == ScalarType.Float32 ? logits : logits.to(ScalarType.Float32);
    }

    /// <summary>
    /// The model's eval-mode computation as an ONNX graph (float32, input <paramref name="input"/> N x InChannels x H x W,
    /// normalised; output <paramref name="output"/>, the logits), written by the modules themselves.
    /// </summary>
    internal Onnx.GraphProto ToOnnxGraph(string input, string output)
    {
        var g = new OnnxGraph();
        var features = encoder.ExportOnnx(g, input, "encoder");
        var logits = g.Module(head, decoder.ExportOnnx(g, features, "decoder"), Options.Encoder == EncoderKind.UNet ? "head" : "segmentation_head");
        g.Rename(logits, output);
        return g.Graph;
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
        string device = headConvolution.Weight.device.ToString();
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
            throw new ArgumentException($"Input of {input.shape[3]}x{input.shape[2]} (WxH) is too small for {(Options.Encoder == EncoderKind.UNet ? $"a U-Net of depth {Options.Depth}" : $"a {Options.Encoder} U-Net")}: the minimum is {min}x{min}.");
    }
}
