using System.Globalization;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Parameter = TorchSharp.Modules.Parameter;
using Sequential = TorchSharp.Modules.Sequential;
using static TorchSharp.torch;
using ModuleList = TorchSharp.Modules.ModuleList<TorchSharp.torch.nn.Module>;

namespace Segmentation.Models.Decoders;

/// <summary>Options of Mask2Former's pixel decoder (transformers' <c>Mask2FormerConfig</c> names in
/// brackets).</summary>
public sealed record Mask2FormerPixelDecoderOptions : IPartOptions
{
    /// <summary>Width of the deformable layers and of every output but the mask features (feature_size, 256).</summary>
    public int FeatureSize { get; init; } = 256;

    /// <summary>Channels of the mask features (mask_feature_size, 256).</summary>
    public int MaskFeatureSize { get; init; } = 256;

    /// <summary>Attention heads of the deformable layers (num_attention_heads, 8).</summary>
    public int Heads { get; init; } = 8;

    /// <summary>Deformable attention layers (encoder_layers, 6).</summary>
    public int Layers { get; init; } = 6;

    /// <summary>Width of their feed-forward layers (encoder_feedforward_dim, 1024).</summary>
    public int FeedForward { get; init; } = 1024;

    /// <summary>Sampling points per head and level (4, fixed in transformers).</summary>
    public int Points { get; init; } = 4;

    /// <inheritdoc />
    public void Validate()
    {
        if (FeatureSize < 32 || FeatureSize % 32 != 0)
            throw new OptionsException($"Pixel decoder FeatureSize is {FeatureSize}; it must be a multiple of 32 "
                + "(its group norms have 32 groups).");
        if (Heads < 1 || FeatureSize % Heads != 0)
            throw new OptionsException($"Pixel decoder Heads is {Heads}; it must divide FeatureSize {FeatureSize}.");
        if (MaskFeatureSize < 1 || Layers < 0 || FeedForward < 1 || Points < 1)
            throw new OptionsException("Pixel decoder MaskFeatureSize, FeedForward and Points must be at least 1, "
                + "Layers at least 0.");
    }
}

/// <summary>
/// Mask2Former's pixel decoder (Cheng et al. 2022), as transformers' <c>Mask2FormerPixelDecoder</c>: the encoder's
/// three deepest maps (strides 8 to 32 on the usual encoders) projected to the feature size (1x1 convolution, group
/// norm), flattened into one token sequence with sine position embeddings and a learned embedding per level, refined
/// by layers of multi-scale deformable self-attention (each token samples 4 points per head in each of the three
/// levels around its own position, <see cref="DeformableSampling"/>) and a ReLU feed-forward layer, each post-norm;
/// then split back into maps, and the finest of them upsampled (bilinear) onto the encoder's stride-4 map through a
/// lateral 1x1 convolution and a 3x3 convolution (<c>adapter_1</c>, <c>layer_1</c>). Gives the mask features (a 1x1
/// convolution of that stride-4 map, <c>mask_projection</c>) and the three refined maps, coarsest first, as
/// transformers' <c>multi_scale_features</c>. Keys are transformers' (<c>level_embed</c>,
/// <c>input_projections.{i}.{0,1}</c>, <c>encoder.layers.{i}.self_attn.sampling_offsets</c>, ...). Initialised as
/// Deformable DETR initialises its attention: offsets 0 with each head's bias pointing one way (k points k steps out),
/// attention weights 0, value and output projections Xavier-uniform; convolutions as PyTorch's.
/// </summary>
internal sealed class Mask2FormerPixelDecoder : Decoder
{
#pragma warning disable IDE1006 // transformers' names
    private readonly LevelEmbedding level_embed;
    private readonly ModuleList input_projections;
    private readonly DeformableEncoder encoder;
    private readonly Convolution mask_projection;
    private readonly Sequential adapter_1, layer_1;
#pragma warning restore IDE1006
    private readonly SinePositionOp position;
    private readonly ReferencePointsOp reference = new(Levels);
    private readonly FeatureMap[] maps;
    private readonly Mask2FormerPixelDecoderOptions options;

    private const int Levels = 3;

    /// <summary>The decoder's name, once registered with Mask2Former (issue 35): until then tests register
    /// it.</summary>
    internal const string Name = "mask2former-pixel";

    public Mask2FormerPixelDecoder(IReadOnlyList<EncoderStage> stages, Mask2FormerPixelDecoderOptions o)
        : base(nameof(Mask2FormerPixelDecoder))
    {
        o.Validate();
        if (stages.Count < Levels + 1)
            throw new OptionsException($"Mask2Former's pixel decoder takes the encoder's four deepest maps; this "
                + $"encoder has {stages.Count}.");
        options = o;
        var used = stages.Skip(stages.Count - (Levels + 1)).ToArray(); // finest (stride 4 on the usual encoders) first
        level_embed = new LevelEmbedding(Levels, o.FeatureSize);
        input_projections = new ModuleList(used.Skip(1).Reverse().Select(s => (nn.Module)nn.Sequential(
            ("0", new Convolution(s.Channels, o.FeatureSize, 1)), ("1", new Layers.GroupNorm(32, o.FeatureSize))))
            .ToArray());
        encoder = new DeformableEncoder(o);
        mask_projection = new Convolution(o.FeatureSize, o.MaskFeatureSize, 1);
        adapter_1 = nn.Sequential(("0", new Convolution(used[0].Channels, o.FeatureSize, 1, bias: false)),
            ("1", new Layers.GroupNorm(32, o.FeatureSize)));
        layer_1 = nn.Sequential(("0", new Convolution(o.FeatureSize, o.FeatureSize, 3, padding: 1, bias: false)),
            ("1", new Layers.GroupNorm(32, o.FeatureSize)), ("2", new Activation(ActivationKind.Relu)));
        position = new SinePositionOp(o.FeatureSize / 2);
        maps = new[] { new FeatureMap("mask_features", o.MaskFeatureSize, used[0].Stride) }
            .Concat(Enumerable.Range(0, Levels).Select(i => new FeatureMap($"multi_scale_{i}", o.FeatureSize,
                used[Levels - i].Stride))).ToArray();
        RegisterComponents();
    }

    /// <inheritdoc />
    public override long OutChannels => options.MaskFeatureSize;

    /// <inheritdoc />
    public override int OutStride => maps[0].Stride;

    /// <inheritdoc />
    public override IReadOnlyList<FeatureMap> Maps => maps;

    /// <inheritdoc />
    public override Tensor forward(Tensor[] features) => Decode(features)[0];

    /// <summary>The mask features, then the three refined maps, coarsest first.</summary>
    public override Tensor[] Decode(Tensor[] features)
    {
        var used = features.Skip(features.Length - (Levels + 1)).ToArray();
        var projected = Project(used);
        var (positions, points) = Embed(projected);
        var tokens = encoder.forward(LayerOps.Concat(projected.Select(LayerOps.ToTokens).ToArray()), positions, points,
            projected);
        var refined = Enumerable.Range(0, Levels).Select(l => levelMaps[l].Run(new[] { tokens }.Concat(projected)
            .ToArray())).ToArray();
        var lateral = adapter_1.forward(used[0]);
        var fine = layer_1.forward(LayerOps.Add(lateral, LayerOps.ResizeLike(refined[^1], lateral)));
        return new[] { mask_projection.forward(fine) }.Concat(refined).ToArray();
    }

    /// <summary>The three deepest of the four maps used, projected, coarsest first.</summary>
    internal Tensor[] Project(Tensor[] used) => Enumerable.Range(0, Levels)
        .Select(l => ((nn.Module<Tensor, Tensor>)input_projections[l]).forward(used[Levels - l])).ToArray();

    /// <summary>The position tokens (with the level embeddings) and the reference points of the projected
    /// maps.</summary>
    internal (Tensor Positions, Tensor Points) Embed(Tensor[] projected) =>
        (level_embed.forward(projected.Select(p => position.Run(p)).ToArray()), reference.Run(projected));

    /// <summary>Deformable layer <paramref name="i"/> (tests feed it the reference's inputs).</summary>
    internal DeformableLayer EncoderLayer(int i) => encoder.Layer(i);

    private readonly LevelMapOp[] levelMaps = Enumerable.Range(0, Levels).Select(l => new LevelMapOp(l, Levels))
        .ToArray();

    /// <summary>transformers' names: the level embedding is <c>level_embed</c>, a parameter of the decoder.</summary>
    public override IEnumerable<(string name, Parameter parameter)> named_parameters(bool recurse = true)
    {
        if (!recurse) yield break;
        yield return ("level_embed", level_embed.Weight);
        foreach (var p in base.named_parameters(recurse).Where(p => p.name != "level_embed.weight")) yield return p;
    }

    /// <summary>The state under the names <see cref="named_parameters"/> gives (no buffers).</summary>
    public override Dictionary<string, Tensor> state_dict(Dictionary<string, Tensor>? destination = null,
        string? prefix = null) => Encoders.ConvNeXtBlock.StateUnderOwnNames(named_parameters(), destination, prefix);
}

/// <summary>transformers' <c>Mask2FormerPixelDecoderEncoderOnly</c>: <c>layers.{i}</c>.</summary>
internal sealed class DeformableEncoder : nn.Module
{
#pragma warning disable IDE1006 // transformers' names
    private readonly ModuleList layers;
#pragma warning restore IDE1006

    public DeformableEncoder(Mask2FormerPixelDecoderOptions o) : base("Mask2FormerPixelDecoderEncoderOnly")
    {
        layers = new ModuleList(Enumerable.Range(0, o.Layers).Select(_ => (nn.Module)new DeformableLayer(o))
            .ToArray());
        RegisterComponents();
    }

    public DeformableLayer Layer(int i) => (DeformableLayer)layers[i];

    public Tensor forward(Tensor tokens, Tensor positions, Tensor points, Tensor[] levels)
    {
        foreach (var layer in layers) tokens = ((DeformableLayer)layer).forward(tokens, positions, points, levels);
        return tokens;
    }
}

/// <summary>transformers' <c>Mask2FormerPixelDecoderEncoderLayer</c>: deformable self-attention
/// (<c>self_attn</c>), add and <c>self_attn_layer_norm</c>; <c>fc1</c>, ReLU, <c>fc2</c>, add and
/// <c>final_layer_norm</c>.</summary>
internal sealed class DeformableLayer : nn.Module
{
#pragma warning disable IDE1006 // transformers' names
    private readonly MultiScaleDeformableAttention self_attn;
    private readonly Layers.LayerNorm self_attn_layer_norm;
    private readonly Layers.Linear fc1, fc2;
    private readonly Layers.LayerNorm final_layer_norm;
#pragma warning restore IDE1006

    public DeformableLayer(Mask2FormerPixelDecoderOptions o) : base("Mask2FormerPixelDecoderEncoderLayer")
    {
        self_attn = new MultiScaleDeformableAttention(o.FeatureSize, o.Heads, 3, o.Points);
        self_attn_layer_norm = new Layers.LayerNorm(o.FeatureSize);
        fc1 = new Layers.Linear(o.FeatureSize, o.FeedForward);
        fc2 = new Layers.Linear(o.FeedForward, o.FeatureSize);
        final_layer_norm = new Layers.LayerNorm(o.FeatureSize);
        RegisterComponents();
    }

    public Tensor forward(Tensor tokens, Tensor positions, Tensor points, Tensor[] levels)
    {
        var x = self_attn_layer_norm.forward(LayerOps.Add(tokens, self_attn.forward(tokens, positions, points,
            levels)));
        return final_layer_norm.forward(LayerOps.Add(x, fc2.forward(LayerOps.Relu(fc1.forward(x)))));
    }
}

/// <summary>
/// transformers' <c>Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention</c>: queries are the tokens plus
/// their positions; <c>sampling_offsets</c> and <c>attention_weights</c> read the queries, <c>value_proj</c> the
/// tokens, whose levels become maps again for the sampling (<see cref="DeformableSampling"/>), then
/// <c>output_proj</c>.
/// </summary>
internal sealed class MultiScaleDeformableAttention : nn.Module
{
#pragma warning disable IDE1006 // transformers' names
    private readonly Layers.Linear sampling_offsets, attention_weights, value_proj, output_proj;
    private readonly DeformableSampling sample;
#pragma warning restore IDE1006
    private readonly LevelMapOp[] levelMaps;

    public MultiScaleDeformableAttention(int width, int heads, int levels, int points)
        : base("Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention")
    {
        sampling_offsets = new Layers.Linear(width, heads * levels * points * 2);
        attention_weights = new Layers.Linear(width, heads * levels * points);
        value_proj = new Layers.Linear(width, width);
        output_proj = new Layers.Linear(width, width);
        sample = new DeformableSampling(heads, levels, points);
        levelMaps = Enumerable.Range(0, levels).Select(l => new LevelMapOp(l, levels)).ToArray();
        RegisterComponents();
        Initialise(heads, levels, points);
    }

    /// <summary>Deformable DETR's initialisation: head h's offsets point at angle 2πh/heads, point k k steps out
    /// (the largest component 1), offsets' weights and attention weights 0, projections Xavier-uniform.</summary>
    private void Initialise(int heads, int levels, int points)
    {
        using var _ = no_grad();
        sampling_offsets.Weight.zero_();
        var bias = new float[heads * levels * points * 2];
        for (int h = 0; h < heads; h++)
        {
            double theta = 2 * Math.PI * h / heads, cx = Math.Cos(theta), cy = Math.Sin(theta);
            double largest = Math.Max(Math.Abs(cx), Math.Abs(cy));
            for (int l = 0; l < levels; l++)
                for (int k = 0; k < points; k++)
                {
                    int at = ((h * levels + l) * points + k) * 2;
                    bias[at] = (float)(cx / largest * (k + 1));
                    bias[at + 1] = (float)(cy / largest * (k + 1));
                }
        }
        sampling_offsets.Bias!.copy_(tensor(bias));
        attention_weights.Weight.zero_();
        attention_weights.Bias!.zero_();
        foreach (var l in new[] { value_proj, output_proj })
        {
            nn.init.xavier_uniform_(l.Weight);
            l.Bias!.zero_();
        }
    }

    public Tensor forward(Tensor tokens, Tensor positions, Tensor points, Tensor[] levels)
    {
        var query = LayerOps.Add(tokens, positions);
        var value = value_proj.forward(tokens);
        var maps = levelMaps.Select(m => m.Run(new[] { value }.Concat(levels).ToArray())).ToArray();
        return output_proj.forward(sample.forward(points, sampling_offsets.forward(query),
            attention_weights.forward(query), maps));
    }
}

/// <summary>Registers the pixel decoder's ops for the op conformance test.</summary>
internal static class DeformableOps
{
    internal static void Register()
    {
        Ops.Add(new ReferencePointsOp(3));
        Ops.Add(new SinePositionOp(8));
        Ops.Add(new LevelMapOp(1, 3));
        Ops.Add(new LevelMapOp(2, 3));
    }
}
