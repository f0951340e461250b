using Segmentation.Data;
using Segmentation.Models.Export;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Parameter = TorchSharp.Modules.Parameter;
using Sequential = TorchSharp.Modules.Sequential;
using static TorchSharp.torch;

namespace Segmentation.Models.Encoders;

/// <summary>Options of the ConvNeXt encoders (registered as <c>convnext-tiny</c>).</summary>
public sealed record ConvNeXtOptions : IPartOptions
{
    /// <summary>Stochastic depth: the drop probability grows linearly from 0 to this over the blocks (torchvision's
    /// 0.1 for ConvNeXt-T).</summary>
    public double DropPathRate { get; init; } = 0.1;

    /// <inheritdoc />
    public void Validate()
    {
        if (double.IsNaN(DropPathRate) || DropPathRate is < 0 or >= 1)
            throw new OptionsException($"ConvNeXt DropPathRate is {DropPathRate}; it must be in [0, 1).");
    }
}

/// <summary>
/// ConvNeXt (Liu et al. 2022) as torchvision's <c>convnext_tiny</c> without its classifier: a 4x4 stride-4 stem with a
/// channels-first layer norm, then four stages of blocks (3-3-9-3 at widths 96-192-384-768), each stage after the
/// first entered by a layer norm and a 2x2 stride-2 convolution. A block is a 7x7 depthwise convolution, a layer norm
/// over the channels, a 4x wider linear layer, exact GELU, a linear layer back, a per-channel layer scale (1e-6 at
/// first) and stochastic depth, added to its input. Maps at strides 4, 8, 16 and 32 (after <c>features.1</c>,
/// <c>.3</c>, <c>.5</c>, <c>.7</c>). Keys are torchvision's (<c>features.0.0.weight</c>,
/// <c>features.1.0.block.0.weight</c>, <c>features.1.0.block.2.weight</c>, <c>features.1.0.layer_scale</c>,
/// <c>features.2.1.weight</c>, ...), so a torchvision <c>state_dict</c> (less <c>classifier.*</c>) loads by name; its
/// <c>features</c> hold 27,818,592 parameters. Initialised as torchvision initialises it: convolution and linear
/// weights normal (std 0.02; torchvision's truncation at +-2 is a hundred deviations out), biases 0. The layer norms
/// and the layer scale are leaf layers, so bf16, the
/// float64 check and the ONNX export cover them; the layer norm works on the tokens (N x HW x C), which is
/// torchvision's permute to channels-last.
/// </summary>
internal sealed class ConvNeXt : Encoder, IPretrainedEncoder
{
    private readonly Sequential features;
    private readonly EncoderStage[] stages;
    private readonly int inChannels;

    /// <summary>ConvNeXt-T's blocks per stage and widths.</summary>
    private static readonly (int Blocks, int Width)[] Tiny = { (3, 96), (3, 192), (9, 384), (3, 768) };

    /// <summary>Registers <c>convnext-tiny</c> (its default model a U-Net, as the ResNets').</summary>
    internal static void Register() => ModelRegistry.AddEncoder<ConvNeXtOptions>("convnext-tiny",
        (c, o) => new ConvNeXt(c.InChannels, o),
        "torchvision's ConvNeXt-T (blocks 3-3-9-3, widths 96-768, layer scale, stochastic depth 0.1); maps at strides "
            + "4 to 32.",
        new PretrainedSource("FILE.pth | FILE.safetensors",
            "a torchvision convnext_tiny state dict (classifier.* left out; an RGB stem is fitted to the input "
                + "channels)"));

    /// <summary>Creates a randomly initialised ConvNeXt-T taking <paramref name="inChannels"/> channels.</summary>
    public ConvNeXt(int inChannels, ConvNeXtOptions o) : base("convnext-tiny")
    {
        this.inChannels = inChannels;
        int total = Tiny.Sum(s => s.Blocks), index = 0;
        var list = new List<(string, nn.Module<Tensor, Tensor>)>
        {
            ("0", nn.Sequential(("0", new Convolution(inChannels, Tiny[0].Width, 4, stride: 4)),
                ("1", new ChannelsLayerNorm(Tiny[0].Width)))),
        };
        for (int s = 0; s < Tiny.Length; s++)
        {
            var blocks = new List<(string, nn.Module<Tensor, Tensor>)>();
            for (int b = 0; b < Tiny[s].Blocks; b++, index++)
                blocks.Add((b.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    new ConvNeXtBlock(Tiny[s].Width, o.DropPathRate * index / (total - 1.0))));
            list.Add(((2 * s + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), nn.Sequential(blocks)));
            if (s + 1 < Tiny.Length)
                list.Add(((2 * s + 2).ToString(System.Globalization.CultureInfo.InvariantCulture),
                    nn.Sequential(("0", new ChannelsLayerNorm(Tiny[s].Width)),
                        ("1", new Convolution(Tiny[s].Width, Tiny[s + 1].Width, 2, stride: 2)))));
        }
        features = nn.Sequential(list);
        stages = Tiny.Select((t, i) => new EncoderStage(t.Width, 4 << i)).ToArray();
        RegisterComponents();
        // torchvision's trunc_normal_(std=0.02) cuts at +-2 (absolute), a hundred deviations out: a normal draw. Not
        // TorchSharp's trunc_normal_, which left NaN in a 384 x 1536 weight of this model.
        using var _ = no_grad();
        foreach (var m in modules())
        {
            if (m is Convolution c) { nn.init.normal_(c.Weight, 0, 0.02); c.Bias?.zero_(); }
            else if (m is Layers.Linear l) { nn.init.normal_(l.Weight, 0, 0.02); l.Bias?.zero_(); }
        }
    }

    /// <inheritdoc />
    public override IReadOnlyList<EncoderStage> Stages => stages;

    /// <inheritdoc />
    public override int InChannels => inChannels;

    /// <inheritdoc />
    public override Tensor[] forward(Tensor input)
    {
        var maps = new List<Tensor> { input };
        var x = input;
        int i = 0;
        foreach (var module in features.children().Cast<nn.Module<Tensor, Tensor>>())
        {
            x = module.forward(x);
            if (i++ % 2 == 1) maps.Add(x); // after each stage of blocks
        }
        return maps.ToArray();
    }

    /// <summary>
    /// Loads a torchvision <c>convnext_tiny</c> state dict (<c>.pth</c> or <c>.safetensors</c>; <c>classifier.*</c>
    /// and an <c>encoder.</c> prefix dropped). An RGB stem is fitted to other channel counts as the ResNets' first
    /// convolution is (<see cref="ResNetEncoder.AdaptFirstConvolution"/>).
    /// </summary>
    public int LoadWeights(string path, Normalization inputNormalization)
    {
        using var scope = NewDisposeScope();
        var source = ResNetEncoder.TorchvisionWeights(path, "classifier.", "features.0.0.weight", inChannels);
        StateDicts.Load(this, source, $"{path} (convnext-tiny encoder weights)");
        return source.Count;
    }
}

/// <summary>
/// torchvision's <c>CNBlock</c>: <c>block</c> (7x7 depthwise convolution <c>block.0</c>, layer norm <c>block.2</c>,
/// linear <c>block.3</c>, GELU, linear <c>block.5</c>; the indices are torchvision's, whose permutes are 1 and 6), the
/// layer scale and stochastic depth, plus the input. The layer scale's value is torchvision's key <c>layer_scale</c>
/// (a parameter of the block there): here it is held by a leaf (<see cref="LayerScale"/>) registered as
/// <c>layer_scale</c>, and the block names it as torchvision does.
/// </summary>
internal sealed class ConvNeXtBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // torchvision's names
    private readonly Convolution depthwise;
    private readonly Layers.LayerNorm norm;
    private readonly Layers.Linear expand, project;
    private readonly Activation gelu = new(ActivationKind.Gelu);
    private readonly NumberedLayers block;
    private readonly LayerScale layer_scale;
    private readonly DropPath stochastic_depth;
#pragma warning restore IDE1006

    public ConvNeXtBlock(int width, double dropPath) : base("CNBlock")
    {
        depthwise = new Convolution(width, width, 7, padding: 3, groups: width);
        norm = new Layers.LayerNorm(width, 1e-6);
        expand = new Layers.Linear(width, 4 * width);
        project = new Layers.Linear(4 * width, width);
        block = new NumberedLayers(("0", depthwise), ("2", norm), ("3", expand), ("4", gelu), ("5", project));
        layer_scale = new LayerScale(width, 1e-6);
        stochastic_depth = new DropPath(dropPath);
        register_module("block", block);
        register_module("layer_scale", layer_scale);
        register_module("stochastic_depth", stochastic_depth);
    }

    public override Tensor forward(Tensor input)
    {
        var tokens = LayerOps.ToTokens(depthwise.forward(input));
        tokens = project.forward(gelu.forward(expand.forward(norm.forward(tokens))));
        var branch = stochastic_depth.forward(layer_scale.forward(LayerOps.ToMap(tokens, input)));
        return LayerOps.Add(branch, input);
    }

    /// <summary>The parameters under torchvision's names and in its order: the layer scale's first (a parameter of
    /// the block there) as <c>layer_scale</c>, not <c>layer_scale.weight</c>.</summary>
    public override IEnumerable<(string name, Parameter parameter)> named_parameters(bool recurse = true)
    {
        if (!recurse) yield break;
        yield return ("layer_scale", layer_scale.Weight);
        foreach (var p in base.named_parameters(recurse).Where(p => p.name != "layer_scale.weight")) yield return p;
    }

    /// <summary>The state under the names <see cref="named_parameters"/> gives (the block has no buffers).</summary>
    public override Dictionary<string, Tensor> state_dict(Dictionary<string, Tensor>? destination = null,
        string? prefix = null) => StateUnderOwnNames(named_parameters(), destination, prefix);

    /// <summary>A module's state as its renamed parameters (it has no buffers), under <paramref name="prefix"/>:
    /// TorchSharp's own walk would add the leaves' keys as well.</summary>
    internal static Dictionary<string, Tensor> StateUnderOwnNames(IEnumerable<(string Name, Parameter Parameter)>
        parameters, Dictionary<string, Tensor>? destination, string? prefix)
    {
        destination ??= new Dictionary<string, Tensor>();
        foreach (var (name, p) in parameters)
            destination.TryAdd(string.IsNullOrEmpty(prefix) ? name : $"{prefix}.{name}", p);
        return destination;
    }
}

/// <summary>The layers of a <see cref="ConvNeXtBlock"/> under torchvision's indices (its permutes, 1 and 6, hold
/// nothing); the block runs them itself.</summary>
internal sealed class NumberedLayers : nn.Module
{
    public NumberedLayers(params (string Name, nn.Module Layer)[] layers) : base("Sequential")
    {
        foreach (var (name, layer) in layers) register_module(name, layer);
    }
}

/// <summary>
/// Layer normalisation over the channels of an N x C x H x W map (torchvision's <c>LayerNorm2d</c>, epsilon 1e-6 unless
/// given): the
/// map as tokens, a <see cref="Layers.LayerNorm"/> (a leaf, keys <c>weight</c> and <c>bias</c>), and back.
/// </summary>
internal sealed class ChannelsLayerNorm : nn.Module<Tensor, Tensor>
{
    private readonly Layers.LayerNorm norm;

    public ChannelsLayerNorm(int channels, double epsilon = 1e-6) : base("LayerNorm2d")
    {
        norm = new Layers.LayerNorm(channels, epsilon);
        RegisterComponents();
    }

    /// <summary>Registered as the norm itself, so its keys are the parent's <c>weight</c> and <c>bias</c>.</summary>
    public override IEnumerable<(string name, Parameter parameter)> named_parameters(bool recurse = true) =>
        recurse ? norm.named_parameters() : Enumerable.Empty<(string, Parameter)>();

    /// <inheritdoc cref="ConvNeXtBlock.state_dict"/>
    public override Dictionary<string, Tensor> state_dict(Dictionary<string, Tensor>? destination = null,
        string? prefix = null) => ConvNeXtBlock.StateUnderOwnNames(named_parameters(), destination, prefix);

    public override Tensor forward(Tensor x) => LayerOps.ToMap(norm.forward(LayerOps.ToTokens(x)), x);
}

/// <summary>
/// A learned per-channel scale of an N x C x H x W map (ConvNeXt's layer scale, CaiT's): x times a C x 1 x 1 weight,
/// in the model's precision. Checked against float64 (route 1 broadcasts by hand) and exported as ONNX <c>Mul</c>.
/// </summary>
internal sealed class LayerScale : Layer, ICheckedComputation
{
#pragma warning disable IDE1006 // state-dict name
    private readonly Parameter weight;
#pragma warning restore IDE1006

    /// <summary>Creates the layer with every scale <paramref name="initial"/>.</summary>
    public LayerScale(long channels, double initial) : base(nameof(LayerScale))
    {
        if (channels < 1) throw new ArgumentOutOfRangeException(nameof(channels),
            $"LayerScale channels must be at least 1; got {channels}.");
        weight = new Parameter(full(new long[] { channels, 1, 1 }, initial));
        RegisterComponents();
    }

    /// <summary>The scales, C x 1 x 1.</summary>
    public Parameter Weight => weight;

    /// <inheritdoc />
    protected override Tensor Compute(Tensor input)
    {
        if (input.dtype == weight.dtype) return input * weight;
        using var scope = NewDisposeScope();
        return (input * weight.to(input.dtype)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    internal override string ExportOnnx(OnnxGraph g, string input, string path) =>
        g.Node("Mul", new[] { input, g.Initializer(path + ".weight", weight) });

    /// <inheritdoc />
    internal override LayerSummary Summarise(string path, Tensor input, Tensor output) => ShapeRow(path, "LayerScale",
        output);

    internal override ICheckedComputation Checkable => this;
    IReadOnlyList<Tensor> ICheckedComputation.Parameters => new Tensor[] { weight };
    bool ICheckedComputation.FollowsPrecision => true;

    /// <summary>Route 0 broadcasts the C x 1 x 1 weight; route 1 expands it to the input's shape first.</summary>
    Tensor ICheckedComputation.Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> p, bool training)
        => route == 0 ? inputs[0] * p[0] : inputs[0].mul(p[0].expand(inputs[0].shape).contiguous());
}
