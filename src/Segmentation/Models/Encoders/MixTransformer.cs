using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using static TorchSharp.torch;
using ModuleList = TorchSharp.Modules.ModuleList<TorchSharp.torch.nn.Module>;

namespace Segmentation.Models.Encoders;

/// <summary>Options of the Mix Transformer encoders (registered as <c>mit-b0</c> to <c>mit-b5</c>).</summary>
public sealed record MixTransformerOptions : IPartOptions
{
    /// <summary>Stochastic depth: the drop probability grows linearly from 0 to this over the layers (the paper's
    /// 0.1).</summary>
    public double DropPathRate { get; init; } = 0.1;

    /// <inheritdoc />
    public void Validate()
    {
        if (double.IsNaN(DropPathRate) || DropPathRate < 0 || DropPathRate >= 1)
            throw new OptionsException($"Mix Transformer DropPathRate is {DropPathRate}; it must be in [0, 1).");
    }
}

/// <summary>
/// SegFormer's Mix Transformer (Xie et al. 2021), B0 to B5, written from the paper and transformers'
/// <c>modeling_segformer.py</c>: four stages of overlapping patch embeddings (7x7 stride 4, then 3x3 stride 2), each
/// followed by transformer layers with efficient self-attention (keys and values from a map reduced by 8, 4, 2, 1) and
/// a Mix-FFN (a 3x3 depthwise convolution between two linear layers, exact GELU), and a layer norm. Stages at strides
/// 4, 8, 16 and 32. Keys are Hugging Face's: <c>segformer.encoder.patch_embeddings.0.proj.weight</c>, ...,
/// <c>segformer.encoder.block.{i}.{j}.attention.self.query.weight</c>, <c>segformer.encoder.layer_norm.{i}.*</c>.
/// Initialised as transformers initialises it: linear and convolution weights normal(0, 0.02), biases 0.
/// </summary>
internal sealed class MixTransformer : Encoder, IPretrainedEncoder
{
#pragma warning disable IDE1006 // Hugging Face's names
    private readonly ModuleList patch_embeddings;
    private readonly ModuleList block;
    private readonly ModuleList layer_norm;
#pragma warning restore IDE1006
    private readonly EncoderStage[] stages;
    private readonly int inChannels;
    private readonly string variant;

    /// <summary>Hidden sizes, depths and decoder width of each variant.</summary>
    public static (int[] Hidden, int[] Depths, int DecoderHidden) Variant(string name) => name switch
    {
        "mit-b0" => (new[] { 32, 64, 160, 256 }, new[] { 2, 2, 2, 2 }, 256),
        "mit-b1" => (new[] { 64, 128, 320, 512 }, new[] { 2, 2, 2, 2 }, 256),
        "mit-b2" => (new[] { 64, 128, 320, 512 }, new[] { 3, 4, 6, 3 }, 768),
        "mit-b3" => (new[] { 64, 128, 320, 512 }, new[] { 3, 4, 18, 3 }, 768),
        "mit-b4" => (new[] { 64, 128, 320, 512 }, new[] { 3, 8, 27, 3 }, 768),
        "mit-b5" => (new[] { 64, 128, 320, 512 }, new[] { 3, 6, 40, 3 }, 768),
        _ => throw new OptionsException($"'{name}' is not a Mix Transformer (mit-b0 to mit-b5)."),
    };

    /// <summary>The registered names of the variants, B0 to B5.</summary>
    public static IReadOnlyList<string> Variants { get; } = new[] { "mit-b0", "mit-b1", "mit-b2", "mit-b3", "mit-b4",
        "mit-b5" };

    /// <summary>What every variant shares, per stage: attention heads, key/value reduction, patch size and
    /// stride.</summary>
    internal static readonly int[] Heads = { 1, 2, 5, 8 }, Reductions = { 8, 4, 2, 1 }, Patches = { 7, 3, 3, 3 },
        Strides = { 4, 2, 2, 2 };

    /// <summary>Creates the encoder for <paramref name="variant"/> (mit-b0 to mit-b5).</summary>
    public MixTransformer(string variant, int inChannels, MixTransformerOptions o) : base(nameof(MixTransformer))
    {
        var (hidden, depths, _) = Variant(variant);
        this.inChannels = inChannels;
        this.variant = variant;
        int total = depths.Sum(), index = 0;
        var embeddings = new List<nn.Module>();
        var blocks = new List<nn.Module>();
        var norms = new List<nn.Module>();
        for (int i = 0; i < 4; i++)
        {
            embeddings.Add(new PatchEmbedding(i == 0 ? inChannels : hidden[i - 1], hidden[i], Patches[i], Strides[i]));
            var layers = new List<nn.Module>();
            for (int j = 0; j < depths[i]; j++, index++)
                layers.Add(new TransformerLayer(hidden[i], Heads[i], Reductions[i], total > 1 ? o.DropPathRate
                    * index / (total - 1) : 0));
            blocks.Add(new ModuleList(layers.ToArray()));
            norms.Add(new Layers.LayerNorm(hidden[i]));
        }
        patch_embeddings = new ModuleList(embeddings.ToArray());
        block = new ModuleList(blocks.ToArray());
        layer_norm = new ModuleList(norms.ToArray());
        stages = Enumerable.Range(0, 4).Select(i => new EncoderStage(hidden[i], 4 << i)).ToArray();
        RegisterComponents();
        InitialiseAsTransformers(this);
    }

    /// <summary>transformers' <c>_init_weights</c>: linear and convolution weights normal(0, 0.02), biases 0; norms 1
    /// and 0.</summary>
    internal static void InitialiseAsTransformers(nn.Module module)
    {
        using var grad = no_grad();
        foreach (var m in module.modules())
        {
            if (m is Layers.Linear l) { nn.init.normal_(l.Weight, 0, 0.02); if (l.Bias is { } b) nn.init.zeros_(b); }
            else if (m is Convolution c) { nn.init.normal_(c.Weight, 0, 0.02); if (c.Bias is { } b) nn.init.zeros_(b); }
        }
    }

    /// <inheritdoc />
    public override IReadOnlyList<EncoderStage> Stages => stages;

    /// <inheritdoc />
    public override int InChannels => inChannels;

    /// <summary>
    /// Loads an ImageNet-trained (or any) Mix Transformer of this variant from <paramref name="path"/>: a Hugging Face
    /// model folder (<c>nvidia/mit-b0</c>'s, or a whole SegFormer's), or a state dict file in Hugging Face's or the
    /// original layout (<c>mit_b0.pth</c>; <see cref="SegformerWeights"/>). Only the encoder is taken; a
    /// classifier or decode head in the file is left out. The first patch embedding is fitted to the input channels as
    /// the ResNets' first convolution is. The weights expect ImageNet's normalisation, which is the trainer's default
    /// for RGB.
    /// </summary>
    public int LoadWeights(string path, Data.Normalization inputNormalization)
    {
        var file = Directory.Exists(path) ? SegformerWeights.FileIn(path) : path;
        using var scope = NewDisposeScope();
        var weights = SegformerWeights.ToHuggingFace(StateDicts.ReadFile(file), file, encoderOnly: true);
        var (theirs, _) = SegformerWeights.Variant(weights, file);
        if (theirs != variant)
            throw new SegmentationException($"{file}: holds a {theirs} encoder; this model's is {variant} (use "
                + $"--encoder {theirs}).");
        var encoder = SegformerWeights.EncoderOnly(weights);
        const string first = "patch_embeddings.0.proj.weight";
        if (encoder[first].shape[1] != inChannels)
            encoder[first] = ResNetEncoder.AdaptFirstConvolution(encoder[first], inChannels);
        StateDicts.Load(this, encoder, $"{file} ({variant} encoder weights)");
        return encoder.Count;
    }

    /// <summary>Hugging Face's layout: the encoder under <c>segformer.encoder</c>.</summary>
    public override IEnumerable<(string Name, nn.Module Module)> StateDictModules()
        => new[] { ("segformer", (nn.Module)new Holder(this)) };

    /// <inheritdoc />
    public override Tensor[] forward(Tensor input)
    {
        var features = new Tensor[5];
        features[0] = input;
        var x = input;
        for (int i = 0; i < 4; i++)
        {
            var (tokens, map) = ((PatchEmbedding)patch_embeddings[i]).Embed(x);
            foreach (var layer in (ModuleList)block[i]) tokens = ((TransformerLayer)layer).forward(tokens, map);
            x = features[i + 1] = LayerOps.ToMap(((Layers.LayerNorm)layer_norm[i]).forward(tokens), map);
        }
        return features;
    }

    /// <summary>A container that holds the encoder as <c>encoder</c>, so that its keys read
    /// <c>segformer.encoder.*</c>.</summary>
    private sealed class Holder : nn.Module
    {
        private readonly MixTransformer encoder;

        public Holder(MixTransformer encoder) : base("Segformer")
        {
            this.encoder = encoder;
            RegisterComponents();
        }
    }
}

/// <summary>An overlapping patch embedding: a strided convolution (<c>proj</c>), the map flattened to tokens, a layer
/// norm.</summary>
internal sealed class PatchEmbedding : nn.Module
{
#pragma warning disable IDE1006 // Hugging Face's names
    private readonly Convolution proj;
    private readonly Layers.LayerNorm layer_norm;
#pragma warning restore IDE1006

    public PatchEmbedding(long inChannels, long hidden, int patch, int stride) : base(nameof(PatchEmbedding))
    {
        proj = new Convolution(inChannels, hidden, patch, stride, patch / 2);
        layer_norm = new Layers.LayerNorm(hidden);
        RegisterComponents();
    }

    /// <summary>The normalised tokens N x hw x C and the map N x C x h x w they came from (its height and width are the
    /// layer's).</summary>
    public (Tensor Tokens, Tensor Map) Embed(Tensor x)
    {
        var map = proj.forward(x);
        return (layer_norm.forward(LayerOps.ToTokens(map)), map);
    }
}

/// <summary>One transformer layer: pre-norm efficient self-attention and Mix-FFN, each added back through stochastic
/// depth.</summary>
internal sealed class TransformerLayer : nn.Module
{
#pragma warning disable IDE1006 // Hugging Face's names
    private readonly Layers.LayerNorm layer_norm_1, layer_norm_2;
    private readonly EfficientAttention attention;
    private readonly MixFfn mlp;
    private readonly DropPath drop_path;
#pragma warning restore IDE1006

    public TransformerLayer(long hidden, int heads, int reduction, double dropPath) : base(nameof(TransformerLayer))
    {
        layer_norm_1 = new Layers.LayerNorm(hidden);
        attention = new EfficientAttention(hidden, heads, reduction);
        drop_path = new DropPath(dropPath);
        layer_norm_2 = new Layers.LayerNorm(hidden);
        mlp = new MixFfn(hidden, hidden * 4);
        RegisterComponents();
    }

    /// <summary>The layer on tokens N x hw x C; <paramref name="map"/> gives h and w.</summary>
    public Tensor forward(Tensor tokens, Tensor map)
    {
        tokens = LayerOps.Add(drop_path.forward(attention.forward(layer_norm_1.forward(tokens), map)), tokens);
        return LayerOps.Add(drop_path.forward(mlp.forward(layer_norm_2.forward(tokens), map)), tokens);
    }
}

/// <summary>
/// Efficient self-attention (<c>attention.self</c> and <c>attention.output</c>): queries from every token; keys and
/// values
/// from the map reduced by a strided convolution (<c>sr</c>, then <c>layer_norm</c>) when the reduction is over 1.
/// </summary>
internal sealed class EfficientAttention : nn.Module
{
#pragma warning disable IDE1006 // Hugging Face's names
    private readonly SelfAttention self;
    private readonly SelfOutput output;
#pragma warning restore IDE1006

    public EfficientAttention(long hidden, int heads, int reduction) : base(nameof(EfficientAttention))
    {
        self = new SelfAttention(hidden, heads, reduction);
        output = new SelfOutput(hidden);
        RegisterComponents();
    }

    public Tensor forward(Tensor tokens, Tensor map) => output.forward(self.forward(tokens, map));

    private sealed class SelfOutput : nn.Module
    {
#pragma warning disable IDE1006 // Hugging Face's names
        private readonly Layers.Linear dense;
#pragma warning restore IDE1006

        public SelfOutput(long hidden) : base(nameof(SelfOutput))
        {
            dense = new Layers.Linear(hidden, hidden);
            RegisterComponents();
        }

        public Tensor forward(Tensor x) => dense.forward(x);
    }
}

/// <summary>Queries, reduced keys and values, scaled dot-product attention over the heads.</summary>
internal sealed class SelfAttention : nn.Module
{
#pragma warning disable IDE1006 // Hugging Face's names
    private readonly Layers.Linear query, key, value;
    private readonly Convolution? sr;
    private readonly Layers.LayerNorm? layer_norm;
    private readonly Attention attend = new();
#pragma warning restore IDE1006
    private readonly int heads;

    public SelfAttention(long hidden, int heads, int reduction) : base(nameof(SelfAttention))
    {
        if (hidden % heads != 0)
            throw new OptionsException($"Hidden size {hidden} is not a multiple of {heads} attention heads.");
        this.heads = heads;
        query = new Layers.Linear(hidden, hidden);
        key = new Layers.Linear(hidden, hidden);
        value = new Layers.Linear(hidden, hidden);
        if (reduction > 1)
        {
            sr = new Convolution(hidden, hidden, reduction, reduction);
            layer_norm = new Layers.LayerNorm(hidden);
        }
        RegisterComponents();
    }

    public Tensor forward(Tensor tokens, Tensor map)
    {
        var q = LayerOps.SplitHeads(query.forward(tokens), heads);
        var kv = sr is null ? tokens : layer_norm!.forward(LayerOps.ToTokens(sr.forward(LayerOps.ToMap(tokens, map))));
        var context = attend.forward(q, LayerOps.SplitHeads(key.forward(kv), heads),
            LayerOps.SplitHeads(value.forward(kv), heads));
        return LayerOps.MergeHeads(context);
    }
}

/// <summary>Mix-FFN: <c>dense1</c>, a 3x3 depthwise convolution on the map (<c>dwconv.dwconv</c>), exact GELU,
/// <c>dense2</c>.</summary>
internal sealed class MixFfn : nn.Module
{
#pragma warning disable IDE1006 // Hugging Face's names
    private readonly Layers.Linear dense1, dense2;
    private readonly DepthwiseConvolution dwconv;
    private readonly Activation act = new(ActivationKind.Gelu);
#pragma warning restore IDE1006

    public MixFfn(long hidden, long inner) : base(nameof(MixFfn))
    {
        dense1 = new Layers.Linear(hidden, inner);
        dwconv = new DepthwiseConvolution(inner);
        dense2 = new Layers.Linear(inner, hidden);
        RegisterComponents();
    }

    public Tensor forward(Tensor tokens, Tensor map)
        => dense2.forward(act.forward(dwconv.forward(dense1.forward(tokens), map)));

    private sealed class DepthwiseConvolution : nn.Module
    {
#pragma warning disable IDE1006 // Hugging Face's names
        private readonly Convolution dwconv;
#pragma warning restore IDE1006

        public DepthwiseConvolution(long channels) : base(nameof(DepthwiseConvolution))
        {
            dwconv = new Convolution(channels, channels, 3, 1, 1, groups: (int)channels);
            RegisterComponents();
        }

        public Tensor forward(Tensor tokens, Tensor map)
            => LayerOps.ToTokens(dwconv.forward(LayerOps.ToMap(tokens, map)));
    }
}
