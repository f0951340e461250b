using Segmentation.Models.Decoders;
using Segmentation.Models.Export;
using Segmentation.Models.Layers;
using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;

namespace Segmentation.Models.Heads;

/// <summary>
/// Learned queries (transformers' <c>nn.Embedding</c> of Mask2Former's <c>queries_embedder</c> and
/// <c>queries_features</c>): the Q x C weight, expanded to the batch of its input (N x Q x C), in float32. A leaf, so
/// the
/// weight is checked, kept in float32 and exported (Expand of the initializer).
/// </summary>
internal sealed class QueryEmbedding : Layer, ICheckedComputation
{
#pragma warning disable IDE1006 // state-dict name
    private readonly Parameter weight;
#pragma warning restore IDE1006

    public QueryEmbedding(int queries, int channels) : base("Embedding")
    {
        weight = new Parameter(zeros(queries, channels));
        RegisterComponents();
        using var _ = no_grad();
        nn.init.normal_(weight);
    }

    protected override Tensor Compute(Tensor input) => Apply(input.shape[0], weight);

    private static Tensor Apply(long n, Tensor weight) => weight.unsqueeze(0).expand(n, -1, -1);

    internal override string ExportOnnx(OnnxGraph g, string input, string path) =>
        g.Node("Expand", new[] { g.Node("Unsqueeze", new[] { g.Initializer(path + ".weight", weight),
            g.Int64s("axes", 0) }), g.Node("Concat", new[] { g.ShapeSlice(input, 0, 1),
            g.Int64s("qc", weight.shape[0], weight.shape[1]) }, OnnxGraph.Int("axis", 0)) });

    internal override LayerSummary Summarise(string path, Tensor input, Tensor output) => ShapeRow(path, "Embedding",
        output);

    internal override ICheckedComputation Checkable => this;
    IReadOnlyList<Tensor> ICheckedComputation.Parameters => new Tensor[] { weight };
    int ICheckedComputation.RouteCount => 1;

    Tensor ICheckedComputation.Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> p, bool training)
        => Apply(inputs[0].shape[0], p[0]).contiguous();
}

/// <summary>
/// PyTorch's <c>nn.MultiheadAttention</c> input projection: one packed weight (<c>in_proj_weight</c>, 3C x C) and bias
/// (<c>in_proj_bias</c>) whose thirds project the queries, keys and values. Its output is the three projections one
/// after the other along the tokens (N x (Q + 2S) x C; <see cref="PackedPartOp"/> takes them apart). Computes in the
/// model's precision; checked against float64 (route 1: one matrix product over the stacked inputs, then split);
/// exported as three MatMul and Add on the thirds.
/// </summary>
internal sealed class PackedInProjection : MultiInputLeaf
{
    private readonly Parameter weight, bias;

    public PackedInProjection(int channels) : base("MultiheadAttentionInProjection")
    {
        weight = new Parameter(zeros(3 * channels, channels));
        bias = new Parameter(zeros(3 * channels));
        register_parameter("in_proj_weight", weight);
        register_parameter("in_proj_bias", bias);
        using var _ = no_grad();
        nn.init.xavier_uniform_(weight); // PyTorch's _reset_parameters
    }

    protected override bool FollowsModelPrecision => true;

    public Tensor forward(Tensor query, Tensor key, Tensor value)
    {
        var inputs = new[] { query, key, value };
        Tensor output;
        using (var scope = NewDisposeScope())
        {
            output = Apply(Route, inputs.Select(x => x.to(ComputeType)).ToArray(), weight.to(ComputeType),
                bias.to(ComputeType)).MoveToOuterDisposeScope();
        }
        return Record(inputs, output, (g, names, path) =>
        {
            long c = weight.shape[1];
            var parts = names.Select((x, k) => g.Node("Add", new[] { g.Node("MatMul", new[] { x,
                g.Initializer($"{path}.in_proj_weight.{k}", weight.detach().narrow(0, k * c, c).t().contiguous()) }),
                g.Initializer($"{path}.in_proj_bias.{k}", bias.detach().narrow(0, k * c, c)) })).ToArray();
            return g.Node("Concat", parts, OnnxGraph.Int("axis", 1));
        });
    }

    private static Tensor Apply(int route, IReadOnlyList<Tensor> inputs, Tensor w, Tensor b)
    {
        long c = w.shape[1];
        if (route == 0)
            return cat(inputs.Select((x, k) => nn.functional.linear(x, w.narrow(0, k * c, c), b.narrow(0, k * c, c)))
                .ToArray(), 1);
        using var scope = NewDisposeScope();
        var all = cat(inputs.ToArray(), 1).matmul(w.t()) + b; // every token through all three, then the right third
        long at = 0;
        var parts = new Tensor[3];
        for (int k = 0; k < 3; k++)
        {
            parts[k] = all.narrow(1, at, inputs[k].shape[1]).narrow(2, k * c, c);
            at += inputs[k].shape[1];
        }
        return cat(parts, 1).MoveToOuterDisposeScope();
    }

    public override LayerSummary Summarise(string path, Tensor[] inputs, Tensor output) =>
        new(path, "InProjection", output.shape[1..], weight.numel() + bias.numel(),
            output.shape[1] * weight.shape[1] * weight.shape[1]);

    public override IReadOnlyList<Tensor> Parameters => new Tensor[] { weight, bias };

    public override Tensor Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> parameters,
        bool training) => Apply(route, inputs, parameters[0], parameters[1]);
}

/// <summary>One of the three projections in a <see cref="PackedInProjection"/>'s output (0: the queries', 1: the
/// keys', 2: the values'), given the queries and the keys to read their lengths from.</summary>
internal sealed class PackedPartOp : Op
{
    private readonly int part;

    public PackedPartOp(int part) : base($"PackedPart{part}") => this.part = part;

    internal override int RouteCount => 1;

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs)
    {
        long q = inputs[1].shape[1], s = inputs[2].shape[1];
        return part switch { 0 => inputs[0].narrow(1, 0, q), 1 => inputs[0].narrow(1, q, s),
            _ => inputs[0].narrow(1, q + s, s) };
    }

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs)
    {
        var q = g.ShapeSlice(inputs[1], 1, 2);
        var s = g.ShapeSlice(inputs[2], 1, 2);
        var start = part == 0 ? g.Int64s("zero", 0) : part == 1 ? q : g.Node("Add", new[] { q, s });
        var end = part == 0 ? q : g.Node("Add", new[] { start, s });
        return g.Node("Slice", new[] { inputs[0], start, end, g.Int64s("axis", 1) });
    }

    internal override IReadOnlyList<Tensor[]> CheckInputs() => new[]
    {
        new[] { randn(new long[] { 2, 3 + 2 * 5, 4 }, ScalarType.Float64, generator: new Generator(3)),
            zeros(2, 3, 4, dtype: ScalarType.Float64), zeros(2, 5, 4, dtype: ScalarType.Float64) },
    };
}

/// <summary>
/// Mask2Former's mask logits: each query's mask embedding dotted with every pixel's mask feature
/// (<c>einsum("bqc,bchw->bqhw")</c>), N x Q x C and N x C x H x W to N x Q x H x W, in the model's precision. A leaf
/// of two inputs (a product of two activations), checked against float64 (route 1 sums the channels one by one) and
/// exported as MatMul between Reshapes.
/// </summary>
internal sealed class MaskProduct : MultiInputLeaf
{
    public MaskProduct() : base(nameof(MaskProduct)) { }

    protected override bool FollowsModelPrecision => true;

    public Tensor forward(Tensor embeddings, Tensor pixels)
    {
        var inputs = new[] { embeddings, pixels };
        Tensor output;
        using (var scope = NewDisposeScope())
            output = Apply(Route, embeddings.to(ComputeType), pixels.to(ComputeType)).MoveToOuterDisposeScope();
        return Record(inputs, output, (g, names, _) =>
        {
            var flat = g.Node("Reshape", new[] { names[1], g.Int64s("flat", 0, 0, -1) });
            var shape = g.Node("Concat", new[] { g.ShapeSlice(names[0], 0, 2), g.ShapeSlice(names[1], 2,
                4) }, OnnxGraph.Int("axis", 0));
            return g.Node("Reshape", new[] { g.Node("MatMul", new[] { names[0], flat }), shape });
        });
    }

    private static Tensor Apply(int route, Tensor embeddings, Tensor pixels)
    {
        long n = pixels.shape[0], c = pixels.shape[1], h = pixels.shape[2], w = pixels.shape[3];
        if (route == 0)
            return embeddings.matmul(pixels.reshape(n, c, h * w)).reshape(n, embeddings.shape[1], h, w);
        using var scope = NewDisposeScope();
        Tensor sum = zeros(new[] { n, embeddings.shape[1], h, w }, embeddings.dtype, embeddings.device);
        for (long k = 0; k < c; k++)
            sum = sum + embeddings.select(2, k).unsqueeze(-1).unsqueeze(-1) * pixels.select(1, k).unsqueeze(1);
        return sum.MoveToOuterDisposeScope();
    }

    public override LayerSummary Summarise(string path, Tensor[] inputs, Tensor output) =>
        new(path, "MaskProduct", output.shape[1..], 0, output.numel() / output.shape[0] * inputs[0].shape[2]);

    public override IReadOnlyList<Tensor> Parameters => Array.Empty<Tensor>();

    public override Tensor Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> parameters,
        bool training) => Apply(route, inputs[0], inputs[1]);
}

/// <summary>
/// Mask2Former's masked attention from mask logits resized to a level (N x Q x h x w): a query may attend to a pixel
/// where its mask's sigmoid is at least 0.5, and to every pixel where it would see none (transformers' fix for empty
/// masks); the additive mask N x 1 x Q x hw, -10⁹ where blocked (whose exponential is 0 as -∞'s, but which stays a
/// number to compare) and 0 elsewhere, in float32. As transformers computes it: sigmoid, then the comparison. No
/// gradient
/// flows through it.
/// </summary>
internal sealed class MaskedAttentionOp : Op
{
    public static MaskedAttentionOp Instance { get; } = new();

    private MaskedAttentionOp() : base("MaskedAttention") { }

    private static readonly Scalar Half = 0.5.ToScalar(), Blocked = (-1e9).ToScalar();

    /// <summary>The additive value of a blocked pair.</summary>
    internal const float BlockedValue = -1e9f;

    internal override int RouteCount => 1;

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var type = x.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var blocked = x.detach().to(type).sigmoid().flatten(2).lt(Half); // N x Q x hw
        var everywhere = blocked.all(-1, keepdim: true);
        blocked = blocked.logical_and(everywhere.logical_not());
        return zeros(blocked.shape, type, x.device).masked_fill(blocked, Blocked).unsqueeze(1)
            .MoveToOuterDisposeScope();
    }

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs)
    {
        var flat = g.Node("Reshape", new[] { inputs[0], g.Int64s("flat", 0, 0, -1) });
        var blocked = g.Node("Less", new[] { g.Node("Sigmoid", new[] { flat }), g.Constant("half", tensor(0.5f)) });
        var counted = g.Node("ReduceMin", new[] { g.Node("Cast", new[] { blocked }, OnnxGraph.Int("to", 7)) },
            OnnxGraph.Ints("axes", -1), OnnxGraph.Int("keepdims", 1));
        var everywhere = g.Node("Cast", new[] { counted }, OnnxGraph.Int("to", 9));
        var kept = g.Node("And", new[] { blocked, g.Node("Not", new[] { everywhere }) });
        var additive = g.Node("Where", new[] { kept, g.Constant("blocked", tensor(BlockedValue)),
            g.Constant("zero", tensor(0f)) });
        return g.Node("Unsqueeze", new[] { additive, g.Int64s("axes", 1) });
    }

    internal override IReadOnlyList<Tensor[]> CheckInputs()
    {
        var x = randn(new long[] { 2, 3, 4, 5 }, ScalarType.Float64, generator: new Generator(5));
        x[0, 1] = -x[0, 1].abs() - 0.1; // a query that would see nothing sees everything
        return new[] { new[] { x } };
    }
}

/// <summary>Registers the transformer decoder's ops for the op conformance test.</summary>
internal static class MaskedAttentionOps
{
    internal static void Register()
    {
        for (int part = 0; part < 3; part++) Ops.Add(new PackedPartOp(part));
        Ops.Add(MaskedAttentionOp.Instance);
        Ops.Add(QueryProbabilitiesOp.Instance);
        Ops.Add(SigmoidOp.Instance);
        Ops.Add(StackOp.Instance);
    }
}
