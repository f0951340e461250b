using System.Globalization;
using Segmentation.Data;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;
using ModuleList = TorchSharp.Modules.ModuleList<TorchSharp.torch.nn.Module>;

namespace Segmentation.Models.Encoders;

/// <summary>Options of the Swin Transformer encoders (registered as <c>swin-tiny</c> to <c>swin-large</c>).</summary>
public sealed record SwinOptions : IPartOptions
{
    /// <summary>Stochastic depth: the drop probability grows linearly from 0 to this over the blocks (transformers'
    /// default 0.1; Mask2Former's Swin configurations take 0.3).</summary>
    public double DropPathRate { get; init; } = 0.1;

    /// <summary>The attention window, in tokens (null: the variant's, 7 for tiny and small, 12 for base and large, as
    /// the checkpoints Mask2Former starts from).</summary>
    public int? WindowSize { get; init; }

    /// <summary>The first stage's channels (transformers' embed_dim; null: the variant's). With <see cref="Depths"/>
    /// and <see cref="Heads"/>, any <c>SwinConfig</c> (an imported Hugging Face model's, say).</summary>
    public int? EmbedDim { get; init; }

    /// <summary>Blocks per stage, four (depths; null: the variant's).</summary>
    public int[]? Depths { get; init; }

    /// <summary>Attention heads per stage, four (num_heads; null: the variant's).</summary>
    public int[]? Heads { get; init; }

    /// <inheritdoc />
    public void Validate()
    {
        if (EmbedDim is < 1 or > 4096 || Depths is { } d && (d.Length != 4 || d.Any(n => n is < 1 or > 64))
            || Heads is { } h && (h.Length != 4 || h.Any(n => n is < 1 or > 256)))
            throw new OptionsException($"Swin EmbedDim {EmbedDim}, Depths [{string.Join(", ", Depths ?? [])}] and "
                + $"Heads [{string.Join(", ", Heads ?? [])}]: a width of 1 to 4096, four stages of 1 to 64 blocks and "
                + "1 to 256 heads.");
        if (EmbedDim is { } e && (Heads ?? new[] { 1, 1, 1, 1 }).Select((n, i) => (e << i) % n).Any(r => r != 0))
            throw new OptionsException($"Swin EmbedDim {e}: each stage's width (doubling) must divide by its heads "
                + $"[{string.Join(", ", Heads!)}].");
        if (double.IsNaN(DropPathRate) || DropPathRate is < 0 or >= 1)
            throw new OptionsException($"Swin DropPathRate is {DropPathRate}; it must be in [0, 1).");
        if (WindowSize is < 2 or > 64)
            throw new OptionsException($"Swin WindowSize is {WindowSize}; it must be 2 to 64.");
    }
}

/// <summary>The widths and depths of a Swin Transformer (transformers' <c>SwinConfig</c>).</summary>
/// <param name="EmbedDim">Channels of the first stage (doubling at each).</param>
/// <param name="Depths">Blocks per stage.</param>
/// <param name="Heads">Attention heads per stage.</param>
/// <param name="Window">The attention window, in tokens.</param>
internal sealed record SwinShape(int EmbedDim, int[] Depths, int[] Heads, int Window)
{
    /// <summary>The registered variants: Swin-T, -S, -B and -L (the paper's Table 1).</summary>
    public static SwinShape Of(string name, SwinOptions o)
    {
        var v = Of(name, o.WindowSize);
        return new(o.EmbedDim ?? v.EmbedDim, o.Depths ?? v.Depths, o.Heads ?? v.Heads, v.Window);
    }

    /// <summary>A registered variant with <paramref name="window"/> (null: its own).</summary>
    public static SwinShape Of(string name, int? window) => name switch
    {
        "swin-tiny" => new(96, new[] { 2, 2, 6, 2 }, new[] { 3, 6, 12, 24 }, window ?? 7),
        "swin-small" => new(96, new[] { 2, 2, 18, 2 }, new[] { 3, 6, 12, 24 }, window ?? 7),
        "swin-base" => new(128, new[] { 2, 2, 18, 2 }, new[] { 4, 8, 16, 32 }, window ?? 12),
        "swin-large" => new(192, new[] { 2, 2, 18, 2 }, new[] { 6, 12, 24, 48 }, window ?? 12),
        _ => throw new OptionsException($"'{name}' is not a Swin Transformer (swin-tiny, swin-small, swin-base, "
            + "swin-large)."),
    };

    /// <summary>The registered names.</summary>
    public static IReadOnlyList<string> Variants { get; } = new[] { "swin-tiny", "swin-small", "swin-base",
        "swin-large" };
}

/// <summary>
/// The Swin Transformer (Liu et al. 2021) as transformers' <c>SwinBackbone</c>, written from the paper and
/// <c>modeling_swin.py</c>: a 4x4 patch embedding with a layer norm, then four stages of blocks that attend within
/// windows (every second block's windows shifted by half a window, the wrapped-around parts masked apart), with a
/// relative position bias per head, and patch merging (2x2 neighbours concatenated, a layer norm, a linear layer to
/// twice the channels) between stages. Each stage's output before merging, under its own layer norm
/// (<c>hidden_states_norms.stage1</c> to <c>stage4</c>), is a map at strides 4, 8, 16 and 32. Any height and width:
/// the image is padded to the patch size, each block's tokens to the window, odd maps before merging, as transformers
/// does; the backbone always partitions into windows (transformers' <c>always_partition</c>), so a small map is
/// padded rather than given a smaller window. Keys are transformers': <c>embeddings.patch_embeddings.projection.*</c>,
/// <c>embeddings.norm.*</c>, <c>encoder.layers.{i}.blocks.{j}.attention.self.relative_position_bias_table</c>, ...,
/// <c>encoder.layers.{i}.downsample.reduction.weight</c>. Stochastic depth is applied to both branches of a block,
/// as the paper's code does (transformers' drops only the attention branch; inference is the same).
/// </summary>
internal sealed class Swin : Encoder, IPretrainedEncoder
{
#pragma warning disable IDE1006 // transformers' names
    private readonly SwinEmbeddings embeddings;
    private readonly SwinStages encoder;
    private readonly NormsByStage hidden_states_norms;
#pragma warning restore IDE1006
    private readonly EncoderStage[] stages;
    private readonly int inChannels;

    /// <summary>Registers <c>swin-tiny</c>, <c>swin-small</c>, <c>swin-base</c> and <c>swin-large</c> (their default
    /// model a U-Net, as the other encoders').</summary>
    internal static void Register()
    {
        SwinWindows.Register();
        foreach (var variant in SwinShape.Variants)
        {
            var shape = SwinShape.Of(variant, (int?)null);
            ModelRegistry.AddEncoder<SwinOptions>(variant, (c, o) => new Swin(SwinShape.Of(variant, o),
                c.InChannels, o),
                $"transformers' Swin Transformer {variant[5..]} as SwinBackbone (width {shape.EmbedDim}, blocks "
                    + $"{string.Join("-", shape.Depths)}, window {shape.Window}); maps at strides 4 to 32.",
                new PretrainedSource("FOLDER | FILE.safetensors | FILE.bin | FILE.pth",
                    "a Hugging Face Swin of the same shape and window (SwinModel, SwinForImageClassification or "
                        + "SwinBackbone; a Mask2Former's backbone too); an RGB embedding is fitted to the input "
                        + "channels"));
        }
    }

    /// <summary>Creates a randomly initialised Swin of <paramref name="shape"/>.</summary>
    public Swin(SwinShape shape, int inChannels, SwinOptions o) : base("SwinBackbone")
    {
        if (shape.Depths.Length != 4 || shape.Heads.Length != 4)
            throw new OptionsException("A Swin Transformer has four stages.");
        this.inChannels = inChannels;
        embeddings = new SwinEmbeddings(inChannels, shape.EmbedDim);
        encoder = new SwinStages(shape, o.DropPathRate);
        hidden_states_norms = new NormsByStage(Enumerable.Range(0, 4).Select(i => shape.EmbedDim << i));
        stages = Enumerable.Range(0, 4).Select(i => new EncoderStage(shape.EmbedDim << i, 4 << i)).ToArray();
        RegisterComponents();
        using var _ = no_grad();
        foreach (var m in modules()) // transformers' _init_weights: normal(0, 0.02), biases 0
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
        var maps = new Tensor[5];
        maps[0] = input;
        var x = embeddings.forward(input);
        for (int i = 0; i < 4; i++)
        {
            var (before, after) = encoder.Stage(i, x);
            maps[i + 1] = hidden_states_norms.Norm(i).forward(before);
            x = after;
        }
        return maps;
    }

    /// <summary>
    /// Loads a Hugging Face Swin (<c>config.json</c>'s folder with <c>model.safetensors</c> or
    /// <c>pytorch_model.bin</c>, or the file): a <c>SwinModel</c>'s or <c>SwinForImageClassification</c>'s keys
    /// (<c>swin.</c>), a <c>SwinBackbone</c>'s, or a Mask2Former's backbone (<c>model.pixel_level_module.encoder.</c>).
    /// The classifier, the final layer norm and the pooler are left out; a file without the backbone's stage norms
    /// (an ImageNet classifier) keeps them at 1 and 0, as transformers initialises them. A file for another window
    /// or width is refused, naming the key and both shapes (the position tables are not resized).
    /// </summary>
    public int LoadWeights(string path, Normalization inputNormalization)
    {
        var file = Directory.Exists(path) ? HuggingFaceFile(path) : path;
        using var scope = NewDisposeScope();
        var raw = StateDicts.ReadFile(file);
        string[] prefixes = { "model.pixel_level_module.encoder.", "swin.", "backbone.", "encoder." };
        var prefix = prefixes.FirstOrDefault(p => raw.Keys.Any(k => k.StartsWith(p + "embeddings.",
            StringComparison.Ordinal))) ?? "";
        var weights = raw.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value)
            .Where(kv => kv.Key.StartsWith("embeddings.", StringComparison.Ordinal)
                || kv.Key.StartsWith("encoder.", StringComparison.Ordinal)
                || kv.Key.StartsWith("hidden_states_norms.", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key, kv => kv.Value);
        if (weights.Count == 0)
            throw new SegmentationException($"{file}: holds no Swin embeddings (embeddings.patch_embeddings.*, "
                + "under swin., backbone. or model.pixel_level_module.encoder.).");
        const string first = "embeddings.patch_embeddings.projection.weight";
        if (weights.TryGetValue(first, out var stem) && stem.shape[1] != inChannels)
            weights[first] = ResNetEncoder.AdaptFirstConvolution(stem, inChannels);
        RefuseOtherWindow(weights, file);
        bool norms = weights.Keys.Any(k => k.StartsWith("hidden_states_norms.", StringComparison.Ordinal));
        StateDicts.Load(this, weights, $"{file} (Swin encoder weights)",
            ignore: norms ? null : k => k.StartsWith("hidden_states_norms.", StringComparison.Ordinal));
        return weights.Count;
    }

    /// <summary>A file for another window holds position tables of another size: refused by its first table, with
    /// both shapes and both windows (transformers would interpolate them; this encoder does not).</summary>
    private void RefuseOtherWindow(Dictionary<string, Tensor> weights, string file)
    {
        const string key = "encoder.layers.0.blocks.0.attention.self.relative_position_bias_table";
        var ours = state_dict()[key];
        if (!weights.TryGetValue(key, out var theirs) || theirs.shape.SequenceEqual(ours.shape)) return;
        static string Shape(Tensor t) => $"[{string.Join(", ", t.shape)}]";
        static long Window(Tensor t) => ((long)Math.Round(Math.Sqrt(t.shape[0])) + 1) / 2;
        throw new SegmentationException($"{file}: {key} is {Shape(theirs)} (window {Window(theirs)}); this "
            + $"encoder's is {Shape(ours)} (window {Window(ours)}). Position tables are not resized: build the "
            + $"encoder with WindowSize {Window(theirs)}.");
    }

    /// <summary>The weights file of a Hugging Face model folder.</summary>
    private static string HuggingFaceFile(string folder)
    {
        foreach (var name in new[] { "model.safetensors", "pytorch_model.bin" })
            if (File.Exists(Path.Combine(folder, name))) return Path.Combine(folder, name);
        throw new SegmentationException($"{folder}: holds neither model.safetensors nor pytorch_model.bin.");
    }
}

/// <summary>transformers' <c>SwinEmbeddings</c>: the image padded to a multiple of 4, a 4x4 stride-4 convolution
/// (<c>patch_embeddings.projection</c>), a layer norm over the channels (<c>norm</c>).</summary>
internal sealed class SwinEmbeddings : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // transformers' names
    private readonly PatchProjection patch_embeddings;
    private readonly Layers.LayerNorm norm;
#pragma warning restore IDE1006

    public SwinEmbeddings(int inChannels, int width) : base("SwinEmbeddings")
    {
        patch_embeddings = new PatchProjection(inChannels, width);
        norm = new Layers.LayerNorm(width);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        var map = patch_embeddings.forward(input);
        return LayerOps.ToMap(norm.forward(LayerOps.ToTokens(map)), map);
    }

    private sealed class PatchProjection : nn.Module<Tensor, Tensor>
    {
#pragma warning disable IDE1006 // transformers' names
        private readonly Convolution projection;
#pragma warning restore IDE1006
        private readonly PadToMultipleOp pad = new(4);

        public PatchProjection(int inChannels, int width) : base("SwinPatchEmbeddings")
        {
            projection = new Convolution(inChannels, width, 4, stride: 4);
            RegisterComponents();
        }

        public override Tensor forward(Tensor input) => projection.forward(pad.Run(input));
    }
}

/// <summary>transformers' <c>SwinEncoder</c>: <c>layers.{i}</c>, each <c>blocks.{j}</c> and, but for the last,
/// <c>downsample</c>.</summary>
internal sealed class SwinStages : nn.Module
{
#pragma warning disable IDE1006 // transformers' names
    private readonly ModuleList layers;
#pragma warning restore IDE1006

    public SwinStages(SwinShape shape, double dropPathRate) : base("SwinEncoder")
    {
        int total = shape.Depths.Sum(), index = 0;
        var list = new List<nn.Module>();
        for (int i = 0; i < 4; i++)
        {
            int width = shape.EmbedDim << i;
            var blocks = new List<nn.Module>();
            for (int j = 0; j < shape.Depths[i]; j++, index++)
                blocks.Add(new SwinBlock(width, shape.Heads[i], shape.Window, j % 2 == 0 ? 0 : shape.Window / 2,
                    total > 1 ? dropPathRate * index / (total - 1) : 0));
            list.Add(new SwinStage(new ModuleList(blocks.ToArray()), i < 3 ? new PatchMerging(width) : null));
        }
        layers = new ModuleList(list.ToArray());
        RegisterComponents();
    }

    /// <summary>Stage <paramref name="i"/> on a map: its output before merging, and after (the same map for the
    /// last).</summary>
    public (Tensor Before, Tensor After) Stage(int i, Tensor x) => ((SwinStage)layers[i]).Run(x);

    private sealed class SwinStage : nn.Module
    {
#pragma warning disable IDE1006 // transformers' names
        private readonly ModuleList blocks;
        private readonly PatchMerging? downsample;
#pragma warning restore IDE1006

        public SwinStage(ModuleList blocks, PatchMerging? downsample) : base("SwinStage")
        {
            this.blocks = blocks;
            this.downsample = downsample;
            RegisterComponents();
        }

        public (Tensor, Tensor) Run(Tensor x)
        {
            foreach (var block in blocks) x = ((SwinBlock)block).forward(x);
            return (x, downsample is null ? x : downsample.forward(x));
        }
    }
}

/// <summary>
/// transformers' <c>SwinLayer</c> on a map N x C x H x W: layer norm (<c>layernorm_before</c>), the map padded to the
/// window, shifted and cut into windows, window attention with the relative position bias (and the shifted windows'
/// mask), the windows merged back and cropped, added to the input; then layer norm (<c>layernorm_after</c>), the MLP
/// (<c>intermediate.dense</c>, exact GELU, <c>output.dense</c>), added.
/// </summary>
internal sealed class SwinBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // transformers' names
    private readonly Layers.LayerNorm layernorm_before;
    private readonly SwinAttention attention;
    private readonly DropPath drop_path;
    private readonly Layers.LayerNorm layernorm_after;
    private readonly DenseHolder intermediate;
    private readonly DenseHolder output;
    private readonly Activation gelu = new(ActivationKind.Gelu);
#pragma warning restore IDE1006
    private readonly PadToMultipleOp pad;
    private readonly WindowPartitionOp partition;
    private readonly WindowMergeOp merge;
    private readonly WindowMaskOp mask;

    public SwinBlock(int width, int heads, int window, int shift, double dropPath) : base("SwinLayer")
    {
        layernorm_before = new Layers.LayerNorm(width);
        attention = new SwinAttention(width, heads, window);
        drop_path = new DropPath(dropPath);
        layernorm_after = new Layers.LayerNorm(width);
        intermediate = new DenseHolder(width, 4 * width);
        output = new DenseHolder(4 * width, width);
        (pad, partition, merge, mask) = (new PadToMultipleOp(window), new WindowPartitionOp(window, shift),
            new WindowMergeOp(window, shift), new WindowMaskOp(window, shift));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var padded = pad.Run(LayerOps.ToMap(layernorm_before.forward(LayerOps.ToTokens(x)), x));
        var attended = attention.Attend(partition.Run(padded), mask.Run(padded));
        x = LayerOps.Add(drop_path.forward(merge.Run(attended, x)), x);
        var mlp = output.forward(gelu.forward(intermediate.forward(layernorm_after.forward(LayerOps.ToTokens(x)))));
        return LayerOps.Add(drop_path.forward(LayerOps.ToMap(mlp, x)), x);
    }
}

/// <summary>A linear layer held as <c>dense</c> (transformers' <c>SwinIntermediate</c>, <c>SwinOutput</c>,
/// <c>SwinSelfOutput</c>).</summary>
internal sealed class DenseHolder : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // transformers' names
    private readonly Layers.Linear dense;
#pragma warning restore IDE1006

    public DenseHolder(long inFeatures, long outFeatures) : base("Dense")
    {
        dense = new Layers.Linear(inFeatures, outFeatures);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => dense.forward(x);
}

/// <summary>transformers' <c>SwinAttention</c>: <c>self</c> (queries, keys, values, the position table) and
/// <c>output.dense</c>.</summary>
internal sealed class SwinAttention : nn.Module
{
#pragma warning disable IDE1006 // transformers' names
    private readonly SwinSelfAttention self;
    private readonly DenseHolder output;
#pragma warning restore IDE1006

    public SwinAttention(int width, int heads, int window) : base("SwinAttention")
    {
        self = new SwinSelfAttention(width, heads, window);
        output = new DenseHolder(width, width);
        RegisterComponents();
    }

    /// <summary>Attention within each window (N' x window² x C) under <paramref name="mask"/> (N' x window⁴, see
    /// <see cref="WindowMaskOp"/>) plus the position bias.</summary>
    public Tensor Attend(Tensor windows, Tensor mask) => output.forward(self.Attend(windows, mask));
}

/// <summary>
/// transformers' <c>SwinSelfAttention</c>: <c>query</c>, <c>key</c>, <c>value</c>, scaled dot-product attention per
/// head with the relative position bias added to the mask. The bias table and its index are keys of this module
/// (<c>relative_position_bias_table</c>, <c>relative_position_index</c>) as in transformers, held by a leaf
/// (<see cref="RelativePositionBias"/>).
/// </summary>
internal sealed class SwinSelfAttention : nn.Module
{
#pragma warning disable IDE1006 // transformers' names
    private readonly Layers.Linear query, key, value;
    private readonly RelativePositionBias relative_position_bias;
    private readonly Attention attend = new();
#pragma warning restore IDE1006
    private readonly int heads;

    public SwinSelfAttention(int width, int heads, int window) : base("SwinSelfAttention")
    {
        if (width % heads != 0)
            throw new OptionsException($"Swin width {width} is not a multiple of {heads} attention heads.");
        this.heads = heads;
        relative_position_bias = new RelativePositionBias(window, heads);
        query = new Layers.Linear(width, width);
        key = new Layers.Linear(width, width);
        value = new Layers.Linear(width, width);
        RegisterComponents();
    }

    public Tensor Attend(Tensor windows, Tensor mask)
    {
        var q = LayerOps.SplitHeads(query.forward(windows), heads);
        var k = LayerOps.SplitHeads(key.forward(windows), heads);
        var v = LayerOps.SplitHeads(value.forward(windows), heads);
        return LayerOps.MergeHeads(attend.forward(q, k, v, relative_position_bias.forward(mask)));
    }

    private const string Table = "relative_position_bias_table", Index = "relative_position_index";

    /// <summary>transformers' names and order: the table first, then the query, key and value.</summary>
    public override IEnumerable<(string name, Parameter parameter)> named_parameters(bool recurse = true)
    {
        if (!recurse) yield break;
        yield return (Table, relative_position_bias.Table);
        foreach (var p in base.named_parameters(recurse).Where(p => !p.name.StartsWith("relative_position_bias.",
            StringComparison.Ordinal)))
            yield return p;
    }

    /// <summary>The state under transformers' names: the table, the index, then the query, key and value.</summary>
    public override Dictionary<string, Tensor> state_dict(Dictionary<string, Tensor>? destination = null,
        string? prefix = null)
    {
        destination ??= new Dictionary<string, Tensor>();
        string Key(string name) => string.IsNullOrEmpty(prefix) ? name : $"{prefix}.{name}";
        destination.TryAdd(Key(Table), relative_position_bias.Table);
        // a buffer of the module itself: before its children
        destination.TryAdd(Key(Index), relative_position_bias.Index);
        return ConvNeXtBlock.StateUnderOwnNames(named_parameters().Skip(1), destination, prefix);
    }

    /// <summary>The index under transformers' name (a buffer of this module there).</summary>
    public override IEnumerable<(string name, Tensor buffer)> named_buffers(bool recurse = true,
        bool include_nonpersistent = true)
    {
        if (!recurse) yield break;
        yield return (Index, relative_position_bias.Index);
    }
}

/// <summary>transformers' <c>SwinPatchMerging</c> on a map: padded to even sizes, each 2x2 cell's four pixels
/// concatenated (4C), a layer norm (<c>norm</c>), a linear layer without bias to 2C (<c>reduction</c>).</summary>
internal sealed class PatchMerging : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // transformers' names
    private readonly Layers.Linear reduction;
    private readonly Layers.LayerNorm norm;
#pragma warning restore IDE1006
    private readonly PadToMultipleOp pad = new(2);

    public PatchMerging(int width) : base("SwinPatchMerging")
    {
        reduction = new Layers.Linear(4 * width, 2 * width, bias: false);
        norm = new Layers.LayerNorm(4 * width);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var gathered = PatchMergeGatherOp.Instance.Run(pad.Run(x));
        return LayerOps.ToMap(reduction.forward(norm.forward(LayerOps.ToTokens(gathered))), gathered);
    }
}

/// <summary><c>SwinBackbone.hidden_states_norms</c>: a layer norm over the channels per stage, keys
/// <c>stage1</c> to <c>stage4</c>.</summary>
internal sealed class NormsByStage : nn.Module
{
    private readonly ChannelsLayerNorm[] norms;

    public NormsByStage(IEnumerable<int> widths) : base("ModuleDict")
    {
        norms = widths.Select(w => new ChannelsLayerNorm(w, 1e-5)).ToArray();
        for (int i = 0; i < norms.Length; i++)
            register_module("stage" + (i + 1).ToString(CultureInfo.InvariantCulture), norms[i]);
    }

    public ChannelsLayerNorm Norm(int i) => norms[i];
}
