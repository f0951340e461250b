using Segmentation.Models.Decoders;
using Segmentation.Models.Export;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;
using ModuleList = TorchSharp.Modules.ModuleList<TorchSharp.torch.nn.Module>;

namespace Segmentation.Models.Heads;

/// <summary>The shape of Mask2Former's transformer decoder (transformers' <c>Mask2FormerConfig</c> names in
/// brackets).</summary>
/// <param name="Hidden">Width of the queries (hidden_dim, 256); the pixel decoder's maps must have it too.</param>
/// <param name="Heads">Attention heads (num_attention_heads, 8).</param>
/// <param name="FeedForward">Width of the feed-forward layers (dim_feedforward, 2048).</param>
/// <param name="Layers">Masked-attention layers (decoder_layers - 1: 9).</param>
/// <param name="Queries">Queries (num_queries, 100).</param>
/// <param name="MaskFeatures">Channels of the pixel decoder's mask features (mask_feature_size, 256).</param>
internal sealed record MaskedDecoderShape(int Hidden, int Heads, int FeedForward, int Layers, int Queries,
    int MaskFeatures);

/// <summary>One prediction of the transformer decoder: class logits N x Q x (classes + 1) and mask logits N x Q x H x
/// W at the mask features' stride.</summary>
internal sealed record QueryPrediction(Tensor Classes, Tensor Masks);

/// <summary>
/// Mask2Former's transformer module (transformers' <c>Mask2FormerTransformerModule</c> with the
/// <c>class_predictor</c> of <c>Mask2FormerForUniversalSegmentation</c>): learned queries (<c>queries_features</c>)
/// and their positions (<c>queries_embedder</c>) refined by masked-attention layers, the k-th attending to level k mod
/// 3
/// of the pixel decoder's maps (coarsest first) under the mask the previous prediction made there; after the queries'
/// layer norm and after every layer, class logits (<c>class_predictor</c>) and mask logits (a 3-layer MLP's embedding,
/// <c>mask_predictor.mask_embedder</c>, dotted with the mask features). Keys are transformers' under
/// <c>transformer_module.</c>; the level maps must already have the hidden width (transformers' input projections are
/// identities then).
/// </summary>
internal sealed class Mask2FormerTransformer : nn.Module
{
#pragma warning disable IDE1006 // transformers' names
    private readonly QueryEmbedding queries_embedder, queries_features;
    private readonly MaskedAttentionDecoder decoder;
    private readonly LevelEmbedding level_embed;
#pragma warning restore IDE1006
    private readonly SinePositionOp position;
    private readonly LevelMapOp[] levelMaps = Enumerable.Range(0, 3).Select(l => new LevelMapOp(l, 3)).ToArray();

    public Mask2FormerTransformer(MaskedDecoderShape shape) : base("Mask2FormerTransformerModule")
    {
        queries_embedder = new QueryEmbedding(shape.Queries, shape.Hidden);
        queries_features = new QueryEmbedding(shape.Queries, shape.Hidden);
        decoder = new MaskedAttentionDecoder(shape);
        level_embed = new LevelEmbedding(3, shape.Hidden);
        position = new SinePositionOp(shape.Hidden / 2);
        RegisterComponents();
    }

    /// <summary>The level embedding under transformers' name, <c>level_embed.weight</c> (as the leaf keeps
    /// it).</summary>
    internal LevelEmbedding LevelEmbed => level_embed;

    /// <summary>Every prediction, first the one from the queries before any layer, for the level maps (coarsest
    /// first) and the mask features; <paramref name="classify"/> is the class predictor.</summary>
    public List<QueryPrediction> forward(Tensor[] levels, Tensor maskFeatures, Layers.Linear classify)
    {
        var (tokens, positions) = LevelTokens(levels);
        var queryPositions = queries_embedder.forward(maskFeatures);
        var hidden = queries_features.forward(maskFeatures);
        var predictions = new List<QueryPrediction>();
        var (prediction, mask) = decoder.Predict(hidden, maskFeatures, levels[0], classify);
        predictions.Add(prediction);
        for (int i = 0; i < decoder.LayerCount; i++)
        {
            int level = i % 3;
            hidden = decoder.Layer(i).forward(hidden, tokens[level], positions[level], queryPositions, mask);
            (prediction, mask) = decoder.Predict(hidden, maskFeatures, levels[(i + 1) % 3], classify);
            predictions.Add(prediction);
        }
        return predictions;
    }

    /// <summary>Each level's tokens with its level embedding, and its sine positions as tokens.</summary>
    internal (Tensor[] Tokens, Tensor[] Positions) LevelTokens(Tensor[] levels)
    {
        var all = level_embed.forward(levels);
        var tokens = Enumerable.Range(0, 3).Select(l => LayerOps.ToTokens(levelMaps[l].Run(new[] { all }.Concat(levels)
            .ToArray()))).ToArray();
        var positions = levels.Select(m => LayerOps.ToTokens(position.Run(m))).ToArray();
        return (tokens, positions);
    }

    /// <summary>The query positions and features for a batch like <paramref name="like"/>.</summary>
    internal (Tensor Positions, Tensor Features) Queries(Tensor like) =>
        (queries_embedder.forward(like), queries_features.forward(like));

    internal MaskedAttentionDecoder Decoder => decoder;
}

/// <summary>transformers' <c>Mask2FormerMaskedAttentionDecoder</c>: <c>layers</c>, <c>layernorm</c>,
/// <c>mask_predictor</c>.</summary>
internal sealed class MaskedAttentionDecoder : nn.Module
{
#pragma warning disable IDE1006 // transformers' names
    private readonly ModuleList layers;
    private readonly Layers.LayerNorm layernorm;
    private readonly MaskPredictor mask_predictor;
#pragma warning restore IDE1006

    public MaskedAttentionDecoder(MaskedDecoderShape shape) : base("Mask2FormerMaskedAttentionDecoder")
    {
        layers = new ModuleList(Enumerable.Range(0, shape.Layers).Select(_ => (nn.Module)new MaskedAttentionLayer(
            shape)).ToArray());
        layernorm = new Layers.LayerNorm(shape.Hidden);
        mask_predictor = new MaskPredictor(shape);
        RegisterComponents();
    }

    public int LayerCount => layers.Count;

    public MaskedAttentionLayer Layer(int i) => (MaskedAttentionLayer)layers[i];

    /// <summary>The prediction from queries <paramref name="hidden"/> (after the layer norm), and the masked attention
    /// it makes for <paramref name="level"/>'s size.</summary>
    public (QueryPrediction Prediction, Tensor Mask) Predict(Tensor hidden, Tensor maskFeatures, Tensor level,
        Layers.Linear classify)
    {
        var normed = layernorm.forward(hidden);
        var masks = mask_predictor.forward(normed, maskFeatures);
        var attention = MaskedAttentionOp.Instance.Run(LayerOps.ResizeLike(masks, level));
        return (new QueryPrediction(classify.forward(normed), masks), attention);
    }
}

/// <summary>transformers' <c>Mask2FormerMaskPredictor</c>: <c>mask_embedder</c> (three linear layers, ReLU between,
/// each as <c>{i}.0</c>), dotted with the mask features.</summary>
internal sealed class MaskPredictor : nn.Module
{
#pragma warning disable IDE1006 // transformers' names
    private readonly MlpHead mask_embedder;
#pragma warning restore IDE1006
    private readonly MaskProduct product = new();

    public MaskPredictor(MaskedDecoderShape shape) : base("Mask2FormerMaskPredictor")
    {
        mask_embedder = new MlpHead(shape.Hidden, shape.Hidden, shape.MaskFeatures, 3);
        RegisterComponents();
    }

    public Tensor forward(Tensor queries, Tensor maskFeatures) =>
        product.forward(mask_embedder.forward(queries), maskFeatures);
}

/// <summary>transformers' <c>Mask2FormerMLPPredictionHead</c>: blocks <c>{i}</c>, each a linear layer <c>0</c> and,
/// but for the last, a ReLU.</summary>
internal sealed class MlpHead : nn.Module<Tensor, Tensor>
{
    private readonly Layers.Linear[] linears;

    public MlpHead(int input, int hidden, int output, int layers) : base("Mask2FormerMLPPredictionHead")
    {
        linears = Enumerable.Range(0, layers).Select(i => new Layers.Linear(i == 0 ? input : hidden,
            i == layers - 1 ? output : hidden)).ToArray();
        for (int i = 0; i < layers; i++)
        {
            var block = new Block();
            block.Add(linears[i]);
            register_module(i.ToString(System.Globalization.CultureInfo.InvariantCulture), block);
        }
    }

    public override Tensor forward(Tensor x)
    {
        for (int i = 0; i < linears.Length; i++)
        {
            x = linears[i].forward(x);
            if (i < linears.Length - 1) x = LayerOps.Relu(x);
        }
        return x;
    }

    /// <summary>transformers' <c>Mask2FormerPredictionBlock</c>: its linear layer as <c>0</c>.</summary>
    private sealed class Block : nn.Module
    {
        public Block() : base("Mask2FormerPredictionBlock") { }

        public void Add(Layers.Linear linear) => register_module("0", linear);
    }
}

/// <summary>
/// transformers' <c>Mask2FormerMaskedAttentionDecoderLayer</c> (post-norm): masked cross-attention to a level
/// (<c>cross_attn</c>, PyTorch's <c>nn.MultiheadAttention</c>: queries plus positions, keys the level's tokens plus
/// positions, values the tokens), add, <c>cross_attn_layer_norm</c>; self-attention among the queries
/// (<c>self_attn</c>), add, <c>self_attn_layer_norm</c>; <c>fc1</c>, ReLU, <c>fc2</c>, add,
/// <c>final_layer_norm</c>.
/// </summary>
internal sealed class MaskedAttentionLayer : nn.Module
{
#pragma warning disable IDE1006 // transformers' names
    private readonly QueryAttention self_attn;
    private readonly Layers.LayerNorm self_attn_layer_norm;
    private readonly CrossAttention cross_attn;
    private readonly Layers.LayerNorm cross_attn_layer_norm;
    private readonly Layers.Linear fc1, fc2;
    private readonly Layers.LayerNorm final_layer_norm;
#pragma warning restore IDE1006

    public MaskedAttentionLayer(MaskedDecoderShape shape) : base("Mask2FormerMaskedAttentionDecoderLayer")
    {
        self_attn = new QueryAttention(shape.Hidden, shape.Heads);
        self_attn_layer_norm = new Layers.LayerNorm(shape.Hidden);
        cross_attn = new CrossAttention(shape.Hidden, shape.Heads);
        cross_attn_layer_norm = new Layers.LayerNorm(shape.Hidden);
        fc1 = new Layers.Linear(shape.Hidden, shape.FeedForward);
        fc2 = new Layers.Linear(shape.FeedForward, shape.Hidden);
        final_layer_norm = new Layers.LayerNorm(shape.Hidden);
        RegisterComponents();
    }

    /// <summary>The layer on queries N x Q x C, attending to a level's tokens N x S x C under <paramref name="mask"/>
    /// (additive, N x 1 x Q x S).</summary>
    public Tensor forward(Tensor hidden, Tensor tokens, Tensor positions, Tensor queryPositions, Tensor mask)
    {
        hidden = cross_attn_layer_norm.forward(LayerOps.Add(hidden, cross_attn.forward(LayerOps.Add(hidden,
            queryPositions), LayerOps.Add(tokens, positions), tokens, mask)));
        hidden = self_attn_layer_norm.forward(LayerOps.Add(hidden, self_attn.forward(hidden, queryPositions)));
        return final_layer_norm.forward(LayerOps.Add(hidden, fc2.forward(LayerOps.Relu(fc1.forward(hidden)))));
    }
}

/// <summary>transformers' <c>Mask2FormerAttention</c> among the queries: <c>q_proj</c> and <c>k_proj</c> read the
/// queries plus their positions, <c>v_proj</c> the queries, then <c>out_proj</c>.</summary>
internal sealed class QueryAttention : nn.Module
{
#pragma warning disable IDE1006 // transformers' names
    private readonly Layers.Linear k_proj, v_proj, q_proj, out_proj;
    private readonly Attention attend = new();
#pragma warning restore IDE1006
    private readonly int heads;

    public QueryAttention(int width, int heads) : base("Mask2FormerAttention")
    {
        this.heads = heads;
        k_proj = new Layers.Linear(width, width);
        v_proj = new Layers.Linear(width, width);
        q_proj = new Layers.Linear(width, width);
        out_proj = new Layers.Linear(width, width);
        RegisterComponents();
    }

    public Tensor forward(Tensor hidden, Tensor positions)
    {
        var withPositions = LayerOps.Add(hidden, positions);
        var context = attend.forward(LayerOps.SplitHeads(q_proj.forward(withPositions), heads),
            LayerOps.SplitHeads(k_proj.forward(withPositions), heads), LayerOps.SplitHeads(v_proj.forward(hidden),
                heads));
        return out_proj.forward(LayerOps.MergeHeads(context));
    }
}

/// <summary>PyTorch's <c>nn.MultiheadAttention</c> with an additive mask: <c>in_proj_weight</c> and
/// <c>in_proj_bias</c> (<see cref="PackedInProjection"/>), then <c>out_proj</c>.</summary>
internal sealed class CrossAttention : nn.Module
{
    private readonly PackedInProjection projection;
#pragma warning disable IDE1006 // PyTorch's names
    private readonly Layers.Linear out_proj;
#pragma warning restore IDE1006
    private readonly Attention attend = new();
    private readonly PackedPartOp[] parts = Enumerable.Range(0, 3).Select(p => new PackedPartOp(p)).ToArray();
    private readonly int heads;

    public CrossAttention(int width, int heads) : base("MultiheadAttention")
    {
        this.heads = heads;
        projection = new PackedInProjection(width);
        out_proj = new Layers.Linear(width, width);
        RegisterComponents();
        using var _ = no_grad();
        out_proj.Bias!.zero_(); // PyTorch's _reset_parameters
    }

    public Tensor forward(Tensor query, Tensor key, Tensor value, Tensor mask)
    {
        var packed = projection.forward(query, key, value);
        Tensor Part(int p) => LayerOps.SplitHeads(parts[p].Run(packed, query, key), heads);
        return out_proj.forward(LayerOps.MergeHeads(attend.forward(Part(0), Part(1), Part(2), mask)));
    }

    /// <summary>PyTorch's names: the packed projection's two parameters belong to this module.</summary>
    public override IEnumerable<(string name, Parameter parameter)> named_parameters(bool recurse = true)
    {
        if (!recurse) yield break;
        foreach (var (name, p) in base.named_parameters(recurse))
            yield return (name.StartsWith("projection.", StringComparison.Ordinal) ? name["projection.".Length..]
                : name,
                p);
    }

    /// <summary>The state under the names <see cref="named_parameters"/> gives (no buffers).</summary>
    public override Dictionary<string, Tensor> state_dict(Dictionary<string, Tensor>? destination = null,
        string? prefix = null) => Encoders.ConvNeXtBlock.StateUnderOwnNames(named_parameters(), destination, prefix);
}

/// <summary>Options of the Mask2Former head (transformers' <c>Mask2FormerConfig</c> names in brackets).</summary>
public sealed record Mask2FormerHeadOptions : IPartOptions
{
    /// <summary>Queries (num_queries, 100).</summary>
    public int Queries { get; init; } = 100;

    /// <summary>Masked-attention layers (decoder_layers - 1, 9).</summary>
    public int Layers { get; init; } = 9;

    /// <summary>Attention heads (num_attention_heads, 8).</summary>
    public int Heads { get; init; } = 8;

    /// <summary>Width of the feed-forward layers (dim_feedforward, 2048).</summary>
    public int FeedForward { get; init; } = 2048;

    /// <inheritdoc />
    public void Validate()
    {
        if (Queries < 1 || Layers < 0 || Heads < 1 || FeedForward < 1)
            throw new OptionsException($"Mask2Former head: Queries {Queries}, Heads {Heads} and FeedForward "
                + $"{FeedForward} must be at least 1, Layers {Layers} at least 0.");
    }
}

/// <summary>
/// Mask2Former's head on a pixel decoder's maps (the mask features first, then three level maps of the hidden width,
/// coarsest first): the transformer module and the class predictor (transformers' <c>transformer_module.*</c> and
/// <c>class_predictor.*</c>), giving the last layer's per-query class logits (<c>class_queries_logits</c>, N x Q x
/// (classes + 1), the last "no object") and mask logits (<c>masks_queries_logits</c>, N x Q x H/4 x W/4), and the class
/// scores per pixel at the input's size (<c>logits</c>): transformers' semantic inference, the masks resized to the
/// input (bilinear), their sigmoid weighted by each query's class probabilities (softmax, "no object" left out) and
/// summed over the queries, so the arg-max is <c>post_process_semantic_segmentation</c>'s map.
/// </summary>
internal sealed class Mask2FormerHead : Head
{
#pragma warning disable IDE1006 // transformers' names
    private readonly Mask2FormerTransformer transformer_module;
    private readonly Layers.Linear class_predictor;
#pragma warning restore IDE1006
    private readonly MaskProduct semantic = new();

    /// <summary>The outputs' names, transformers'.</summary>
    internal const string ClassLogits = "class_queries_logits", MaskLogits = "masks_queries_logits";

    public Mask2FormerHead(IReadOnlyList<FeatureMap> decoderMaps, int classes, Mask2FormerHeadOptions o)
        : base(nameof(Mask2FormerHead))
    {
        o.Validate();
        if (decoderMaps.Count < 4 || decoderMaps.Skip(1).Take(3).Any(m => m.Channels != decoderMaps[1].Channels))
            throw new OptionsException("Mask2Former's head takes a pixel decoder's mask features and three level maps "
                + "of one width (mask2former-pixel).");
        int hidden = decoderMaps[1].Channels;
        if (hidden % o.Heads != 0)
            throw new OptionsException($"Mask2Former head: {o.Heads} heads do not divide the width {hidden}.");
        transformer_module = new Mask2FormerTransformer(new MaskedDecoderShape(hidden, o.Heads, o.FeedForward,
            o.Layers, o.Queries, decoderMaps[0].Channels));
        class_predictor = new Layers.Linear(hidden, classes + 1);
        Outputs = o.Layers > 0 ? MainOutputs.Concat(AuxiliaryOutputs).ToArray() : MainOutputs;
        RegisterComponents();
    }

    /// <inheritdoc />
    public override IReadOnlyList<ModelOutput> Outputs { get; }

    private static readonly ModelOutput[] MainOutputs =
    {
        new(ModelOutputs.LogitsName, 4, OutputKind.PixelClassLogits,
            "class scores per pixel at the input's size (Mask2Former's semantic inference)"),
        new(ClassLogits, 3, OutputKind.QueryClassLogits, "class logits per query, the last no object"),
        new(MaskLogits, 4, OutputKind.QueryMaskLogits, "mask logits per query at the mask features' stride"),
    };

    private static readonly ModelOutput[] AuxiliaryOutputs =
    {
        new(AuxClassLogits, 4, OutputKind.Auxiliary, "class logits per query of every earlier prediction, N x "
            + "predictions x queries x (classes + 1)"),
        new(AuxMaskLogits, 5, OutputKind.Auxiliary, "mask logits per query of every earlier prediction"),
    };

    /// <summary>The auxiliary outputs' names (the predictions before the last, stacked on dimension 1).</summary>
    internal const string AuxClassLogits = "aux_" + ClassLogits, AuxMaskLogits = "aux_" + MaskLogits;

    /// <summary>Every prediction (before the first layer, then after each), for the decoder's maps.</summary>
    internal List<QueryPrediction> Predictions(Tensor[] decoderMaps) =>
        transformer_module.forward(decoderMaps.Skip(1).Take(3).ToArray(), decoderMaps[0], class_predictor);

    internal Mask2FormerTransformer Transformer => transformer_module;

    internal Layers.Linear ClassPredictor => class_predictor;

    /// <inheritdoc />
    public override ModelOutputs forward(HeadInput x)
    {
        var all = Predictions(Enumerable.Range(0, 4).Select(i => x.Decoder[i]).ToArray());
        var last = all[^1];
        var probabilities = QueryProbabilitiesOp.Instance.Run(last.Classes);
        var masks = SigmoidOp.Instance.Run(LayerOps.ResizeLike(last.Masks, x.Input));
        var outputs = new Dictionary<string, Tensor>
        {
            [ModelOutputs.LogitsName] = semantic.forward(probabilities, masks),
            [ClassLogits] = last.Classes,
            [MaskLogits] = last.Masks,
        };
        if (all.Count > 1)
        {
            outputs[AuxClassLogits] = StackOp.Instance.Run(all.Take(all.Count - 1).Select(p => p.Classes).ToArray());
            outputs[AuxMaskLogits] = StackOp.Instance.Run(all.Take(all.Count - 1).Select(p => p.Masks).ToArray());
        }
        return new ModelOutputs(outputs, Outputs);
    }
}

/// <summary>Per-query class probabilities for the semantic inference: softmax over the classes of N x Q x (K + 1),
/// "no object" left out, as N x K x Q.</summary>
internal sealed class QueryProbabilitiesOp : Op
{
    public static QueryProbabilitiesOp Instance { get; } = new();

    private QueryProbabilitiesOp() : base("QueryProbabilities") { }

    internal override int RouteCount => 1;

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        return x.softmax(-1).narrow(-1, 0, x.shape[^1] - 1).transpose(1, 2);
    }

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs)
    {
        var soft = g.Node("Softmax", new[] { inputs[0] }, OnnxGraph.Int("axis", -1));
        var kept = g.Node("Slice", new[] { soft, g.Int64s("start", 0), g.Int64s("end", -1), g.Int64s("axis", 2) });
        return g.Node("Transpose", new[] { kept }, OnnxGraph.Ints("perm", 0, 2, 1));
    }

    internal override IReadOnlyList<Tensor[]> CheckInputs() => new[]
    {
        new[] { randn(new long[] { 2, 5, 4 }, ScalarType.Float64, generator: new Generator(6)) * 3 },
    };
}

/// <summary>The logistic function, element-wise (ONNX <c>Sigmoid</c>).</summary>
internal sealed class SigmoidOp : Op
{
    public static SigmoidOp Instance { get; } = new();

    private SigmoidOp() : base("Sigmoid") { }

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs) => route == 0 ? inputs[0].sigmoid()
        : (inputs[0].neg().exp() + 1).reciprocal();

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs) =>
        g.Node("Sigmoid", new[] { inputs[0] });

    internal override IReadOnlyList<Tensor[]> CheckInputs() => new[]
    {
        new[] { randn(new long[] { 2, 3, 4, 5 }, ScalarType.Float64, generator: new Generator(7)) * 4 },
    };
}

/// <summary>Tensors of one shape stacked on a new dimension 1 (ONNX Unsqueeze and Concat).</summary>
internal sealed class StackOp : Op
{
    public static StackOp Instance { get; } = new();

    private StackOp() : base("Stack") { }

    internal override int RouteCount => 1;

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs) => stack(inputs.ToArray(), 1);

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs) =>
        g.Node("Concat", inputs.Select(x => g.Node("Unsqueeze", new[] { x, g.Int64s("axes", 1) })).ToArray(),
            OnnxGraph.Int("axis", 1));

    internal override IReadOnlyList<Tensor[]> CheckInputs() => new[]
    {
        Enumerable.Range(0, 3).Select(i => randn(new long[] { 2, 4, 5 }, ScalarType.Float64,
            generator: new Generator((ulong)(10 + i)))).ToArray(),
    };
}
