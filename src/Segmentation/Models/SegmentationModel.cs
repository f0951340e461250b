using Segmentation.Data;
using Segmentation.Models.Encoders;
using Segmentation.Models.Export;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>
/// The one model type: an <see cref="Parts.Encoder"/>, a <see cref="Parts.Decoder"/> built from the encoder's stages
/// and a <see cref="Parts.Head"/>, as a <see cref="ModelDescription"/> names them (smp's <c>SegmentationModel</c>:
/// <c>encoder -> decoder(*features) -> head</c>). Its forward pass returns named outputs (<see cref="ModelOutputs"/>),
/// the logits always, float32, at the input's height and width. With the default description it is the U-Net of
/// Ronneberger et al. (2015); with a ResNet encoder it is segmentation_models.pytorch's <c>Unet</c>.
/// </summary>
/// <remarks>
/// State-dict keys: <c>encoder.*</c>, <c>decoder.*</c> and the head's (<c>head.*</c>, or smp's
/// <c>segmentation_head.0.*</c>).
/// Before the first input of each shape the model checks its layers against float64 (<see cref="VerifyLayers"/>).
/// </remarks>
public sealed class SegmentationModel : nn.Module<Tensor, ModelOutputs>
{
    private readonly Encoder encoder;
    private readonly Decoder decoder;
    private readonly Head head;
    private readonly Layers.Convolution? deviceProbe;
    private readonly HashSet<(long, long, long, long, bool, int, string, Precision)> checkedInputs = new();
    private readonly List<CheckedInput> checkOrder = new();
    private Precision precision = Precision.Float32;
    private bool checking;

    /// <summary>Builds the model a description names (each part from the registry), with fresh weights.</summary>
    public static SegmentationModel Create(ModelDescription description) => new(description);

    /// <summary>Builds the model; the description is resolved (every part and option written out) and validated
    /// first.</summary>
    public SegmentationModel(ModelDescription description) : base(nameof(SegmentationModel))
    {
        Description = description.Resolve();
        var d = Description;
        NativeRuntime.EnsureInitialized();
        using var seed = d.Seed is { } s ? SeededGenerator(s) : null;
        encoder = (Encoder)ModelRegistry.Find(PartKind.Encoder, d.Encoder.Name).Build(new EncoderContext(d.InChannels),
            d.Encoder.Options);
        decoder = (Decoder)ModelRegistry.Find(PartKind.Decoder, d.Decoder!.Name)
            .Build(new DecoderContext(encoder, d.Classes), d.Decoder.Options);
        head = (Head)ModelRegistry.Find(PartKind.Head, d.Head!.Name)
            .Build(new HeadContext(decoder.OutChannels, d.Classes) { EncoderMaps = encoder.Maps,
                DecoderMaps = decoder.Maps }, d.Head.Options);
        if (encoder.InChannels != d.InChannels)
            throw new OptionsException($"The encoder '{d.Encoder.Name}' takes {encoder.InChannels} channels; the "
                + $"description says {d.InChannels}.");
        foreach (var (name, module) in encoder.StateDictModules().Concat(decoder.StateDictModules())
            .Concat(head.StateDictModules()))
            register_module(name, module);
        deviceProbe = modules().OfType<Layers.Convolution>().FirstOrDefault();
    }

    /// <summary>What the model is (resolved: every part named, every option written out).</summary>
    public ModelDescription Description { get; }

    /// <summary>The encoder (for freezing it, a lower learning rate, or pretrained weights).</summary>
    public Encoder Encoder => encoder;

    /// <summary>The smallest height and width the model accepts.</summary>
    public int MinimumInputSize => encoder.MinimumInputSize;

    /// <summary>Number of trainable parameters.</summary>
    public long ParameterCount() => parameters().Sum(p => p.numel());

    /// <summary>Named outputs for images N x InChannels x H x W (float, normalised).</summary>
    public override ModelOutputs forward(Tensor input)
    {
        CheckInput(input);
        if (VerifyLayers && !checking) CheckLayers(input.shape, training && is_grad_enabled());
        Features encoded, decoded;
        using (StepProfile.Time("forward: encoder")) encoded = new Features(encoder.Maps, encoder.forward(input));
        using (StepProfile.Time("forward: decoder")) decoded = new Features(decoder.Maps, decoder.Decode(encoded.All));
        using var _ = StepProfile.Time("forward: head");
        return head.forward(new HeadInput(input, encoded, decoded)).Checked(head.Outputs, Description.Head!.Name)
            .ToFloat32();
    }

    /// <summary>What the forward pass returns: each output's name, rank and meaning, as the head declares
    /// them.</summary>
    public IReadOnlyList<ModelOutput> Outputs => head.Outputs;

    /// <summary>Just the logits N x Classes x H x W.</summary>
    public Tensor Logits(Tensor input) => forward(input).Logits;

    /// <summary>
    /// The arithmetic of the leaf layers (<see cref="Models.Precision"/>); parameters stay float32 and the outputs
    /// come out float32 whatever it is. Float32 by default; not part of the weights, so any checkpoint runs in any.
    /// </summary>
    public Precision Precision
    {
        get => precision;
        set
        {
            precision = value;
            foreach (var m in modules())
            {
                if (m is Layer l) l.ComputeType = value.ComputeType();
                else if (m is IMultiInputLeaf a) a.ComputeType = value.ComputeType();
            }
        }
    }

    /// <summary>
    /// Check every leaf layer against float64 before the first input of each shape, and route it through a kernel that
    /// is right (<see cref="ConvolutionCheck"/>, <see cref="LayerCheck"/>). On by default: libtorch's CPU kernels are
    /// wrong for some channel counts on some CPUs. Turning it off keeps libtorch's kernels, unchecked.
    /// </summary>
    public bool VerifyLayers { get; set; } = true;

    /// <summary>
    /// The inputs the layers were checked for, in order. A layer's route is the first that is right for every shape it
    /// was checked at, so the routes depend on this history; a resumed run checks these again before its first step
    /// (<see cref="Checkpoints.TrainingState.CheckedInputs"/>), so that it computes as the interrupted run did.
    /// </summary>
    public IReadOnlyList<CheckedInput> CheckedInputs => checkOrder;

    /// <summary>The report of the latest layer check (null before the first).</summary>
    public ConvolutionReport? Convolutions { get; private set; }

    /// <summary>
    /// Checks and routes the layers for inputs of <paramref name="inputShape"/> (N x C x H x W), with gradients when
    /// <paramref name="training"/>; <see cref="forward"/> does this by itself for each new shape. Returns the report,
    /// or null when that shape was checked before.
    /// </summary>
    public ConvolutionReport? CheckLayers(long[] inputShape, bool training)
    {
        if (inputShape.Length != 4)
            throw new ArgumentException($"Expected an input shape N x C x H x W; got "
                + $"[{string.Join(", ", inputShape)}].");
        // Kernels are chosen per thread count (oneDNN splits work by threads), device and type, so a new one is checked
        // again.
        var device = Device;
        var key = (inputShape[0], inputShape[1], inputShape[2], inputShape[3], training, get_num_threads(),
            device.ToString(), precision);
        if (!checkedInputs.Add(key)) return null;
        checkOrder.Add(new CheckedInput(inputShape.ToArray(), training));
        checking = true;
        try
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var report = ConvolutionCheck.Configure(this, inputShape, training);
            var others = LayerCheck.Configure(this, inputShape, training, device);
            return Convolutions = report.With(others, clock.Elapsed.TotalSeconds);
        }
        finally { checking = false; }
    }

    /// <summary>The device of the parameters (read off one convolution's weight: every forward asks, so no walk over
    /// all parameters).</summary>
    internal Device Device => deviceProbe?.Weight.device ?? parameters().First().device;

    /// <summary>
    /// Loads pretrained encoder weights (what the encoder's registry entry lists under pretrained sources), for images
    /// normalised by <paramref name="inputNormalization"/> (default: what the trainer uses, <see
    /// cref="Normalization.DefaultFor"/>).
    /// Returns the number of tensors loaded.
    /// </summary>
    public int LoadEncoderWeights(string path, Normalization? inputNormalization = null)
    {
        if (encoder is not IPretrainedEncoder pretrained)
            throw new OptionsException($"{path}: the '{Description.Encoder.Name}' encoder takes no pretrained "
                + $"weights.");
        return pretrained.LoadWeights(path, inputNormalization ?? Normalization.DefaultFor(Description.InChannels));
    }

    /// <summary>
    /// The model's eval-mode computation as an ONNX graph, recorded by running it once (<see cref="OnnxTrace"/>) in
    /// float32 on the CPU copy it is: input <paramref name="input"/> (N x InChannels x H x W, normalised), one graph
    /// output per named output.
    /// </summary>
    internal Onnx.GraphProto ToOnnxGraph(string input, out IReadOnlyList<string> outputs)
    {
        bool wasTraining = training, verify = VerifyLayers;
        var saved = Precision;
        try
        {
            eval();
            VerifyLayers = false;
            Precision = Precision.Float32;
            using var scope = NewDisposeScope();
            using var grad = no_grad();
            int size = Math.Max(64, MinimumInputSize);
            using var trace = new OnnxTrace(this);
            var x = zeros(new long[] { 1, Description.InChannels, size, size }, device: Device);
            trace.Bind(x, input);
            var result = forward(x);
            outputs = result.Names.ToList();
            foreach (var name in outputs) trace.Graph.Rename(trace.NameOf(result[name],
                $"the model's output '{name}'"), name);
            return trace.Graph.Graph;
        }
        finally
        {
            Precision = saved;
            VerifyLayers = verify;
            if (wasTraining) train();
        }
    }

    /// <summary>
    /// What this model supports, found by looking rather than declared: mixed precision and the float64 check need
    /// every parameter in a leaf layer; the ONNX export needs its forward pass to record (tried once, at the smallest
    /// size the model takes).
    /// </summary>
    public ModelSupport Supports()
    {
        var outside = NonLeafModules();
        string? export = null;
        try { ToOnnxGraph("images", out _); }
        catch (NotSupportedException e) { export = e.Message; }
        return new ModelSupport(outside.Count == 0, outside.Count == 0, export is null,
            outside.Count == 0 ? export : $"not leaf layers: {string.Join(", ", outside.Take(3))}"
                + (export is null ? "" : $"; {export}"));
    }

    /// <summary>
    /// Modules with parameters that are not leaf layers: they would compute in float32 whatever the precision, go
    /// unchecked and fail the ONNX export. The library's parts have none; a test says so for each.
    /// </summary>
    internal IReadOnlyList<string> NonLeafModules() => named_modules()
        .Where(m => m.module is not (Layer or IMultiInputLeaf) && m.module.parameters(recurse: false).Any())
        .Select(m => $"{m.name} ({m.module.GetType().Name})").ToList();

    /// <summary>
    /// The key a 0.1 checkpoint's key has now (0.1 had only the U-Net encoder, with <c>stem.*</c>, <c>encoder.{i}.*</c>
    /// and <c>decoder.{i}.*</c> at the top), or the key itself.
    /// </summary>
    internal static string LegacyKey(string key)
    {
        if (key.StartsWith("stem.", StringComparison.Ordinal)) return "encoder." + key;
        foreach (var part in new[] { "encoder.", "decoder." })
            if (key.StartsWith(part, StringComparison.Ordinal) && key.Length > part.Length
                && char.IsDigit(key[part.Length]))
                return part + "blocks." + key[part.Length..];
        return key;
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

    private void CheckInput(Tensor input)
    {
        if (input.dim() != 4)
            throw new ArgumentException($"The model expects a batch N x C x H x W; got a tensor of shape "
                + $"[{string.Join(", ", input.shape)}].");
        if (input.shape[1] != Description.InChannels)
            throw new ArgumentException($"The model was built for {Description.InChannels} input channel(s); the "
                + $"batch has {input.shape[1]}.");
        long min = MinimumInputSize;
        if (input.shape[2] < min || input.shape[3] < min)
            throw new ArgumentException($"Input of {input.shape[3]}x{input.shape[2]} (WxH) is too small for this model "
                + $"({Description.Encoder.Name} encoder): the minimum is {min}x{min}.");
    }
}

/// <summary>An input shape (N x C x H x W) the layers were checked for, with gradients or not.</summary>
/// <param name="Shape">N x C x H x W.</param>
/// <param name="Training">Whether gradients were checked too.</param>
public sealed record CheckedInput(long[] Shape, bool Training);
