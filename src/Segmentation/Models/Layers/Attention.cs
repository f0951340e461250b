using Segmentation.Models.Export;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Models.Layers;

/// <summary>
/// Scaled dot-product attention, softmax(Q Kᵀ / √d + M) V, over N x heads x L x d queries and N x heads x S x d keys
/// and values: the leaf under every transformer block. M, when given (<see cref="forward(Tensor, Tensor, Tensor,
/// Tensor)"/>), is an additive mask that broadcasts to N x heads x L x S: 0 where a query may see a key, -∞ where it
/// may not (<see cref="LayerOps.AttentionBias"/> makes one from a boolean mask; Mask2Former's masked attention), or any
/// bias. A query that may see no key gets NaN, as in PyTorch; the model decides what such a row should see. Computes in
/// the model's precision (the softmax at least float32 along the explicit route), is checked against float64 like every
/// leaf, mask and all, has its summary line (2 N h L S d multiply-accumulates) and its ONNX nodes (MatMul, [Add],
/// Softmax, MatMul).
/// </summary>
public sealed class Attention : nn.Module<Tensor, Tensor, Tensor, Tensor>, IMultiInputLeaf
{
    /// <summary>Creates the layer (it has no parameters).</summary>
    public Attention() : base(nameof(Attention)) { }

    /// <summary>The type it computes in (<see cref="Precision"/>).</summary>
    internal ScalarType ComputeType { get; set; } = ScalarType.Float32;

    /// <summary>0: libtorch's fused kernel; 1: the explicit products and softmax.</summary>
    internal int Route { get; set; }

    /// <summary>Called with the three inputs and the output after each pass while set.</summary>
    internal Action<nn.Module, Tensor[], Tensor>? Observer { get; set; }

    ScalarType IMultiInputLeaf.ComputeType { get => ComputeType; set => ComputeType = value; }
    int IMultiInputLeaf.Route { get => Route; set => Route = value; }
    Action<nn.Module, Tensor[], Tensor>? IMultiInputLeaf.Observer { get => Observer; set => Observer = value; }
    LayerSummary IMultiInputLeaf.Summarise(string path, Tensor[] inputs, Tensor output) =>
        Summarise(path, inputs, output);

    /// <inheritdoc />
    public override Tensor forward(Tensor query, Tensor key, Tensor value) => Attend(query, key, value, null);

    /// <summary>Attention with an additive mask <paramref name="mask"/> that broadcasts to N x heads x L x S (see the
    /// class summary).</summary>
    public Tensor forward(Tensor query, Tensor key, Tensor value, Tensor mask)
    {
        if (mask.dim() != 4)
            throw new ArgumentException($"An attention mask is N x heads x L x S (or broadcasts to it: 1 for any of "
                + $"them); got {string.Join("x", mask.shape)}.");
        return Attend(query, key, value, mask);
    }

    private Tensor Attend(Tensor query, Tensor key, Tensor value, Tensor? mask)
    {
        Tensor output;
        if (query.dtype == ComputeType && (mask is null || mask.dtype == ComputeType))
            output = Apply(Route, query, key, value, mask);
        else
        {
            using var scope = NewDisposeScope();
            output = Apply(Route, query.to(ComputeType), key.to(ComputeType), value.to(ComputeType),
                mask?.to(ComputeType)).MoveToOuterDisposeScope();
        }
        var inputs = mask is null ? new[] { query, key, value } : new[] { query, key, value, mask };
        Observer?.Invoke(this, inputs, output);
        OnnxTrace.Current?.Attention(this, query, key, value, mask, output);
        return output;
    }

    private static Tensor Apply(int route, Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        if (route == 0) return mask is null ? F.scaled_dot_product_attention(q, k, v)
            : F.scaled_dot_product_attention(q, k, v, mask);
        using var scope = NewDisposeScope();
        var scores = q.matmul(k.transpose(-2, -1)) * (1.0 / Math.Sqrt(q.shape[^1]));
        if (mask is not null) scores = scores + mask;
        // float32 for the half types (as libtorch's kernel accumulates); float64 stays float64, so that the check's
        // reference is float64 throughout
        var soft = q.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var weights = scores.to(soft).softmax(-1).to(q.dtype);
        return weights.matmul(v).MoveToOuterDisposeScope();
    }

    /// <summary>The summary row for one pass.</summary>
    internal LayerSummary Summarise(string path, Tensor[] inputs, Tensor output)
    {
        long heads = inputs[0].shape[1], l = inputs[0].shape[2], d = inputs[0].shape[3], s = inputs[1].shape[2];
        return new LayerSummary(path, "Attention", output.shape[1..], 0, 2 * heads * l * s * d);
    }

    IReadOnlyList<Tensor> ICheckedComputation.Parameters => Array.Empty<Tensor>();
    bool ICheckedComputation.FollowsPrecision => true;

    Tensor ICheckedComputation.Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> parameters,
        bool training) =>
        Apply(route, inputs[0], inputs[1], inputs[2], inputs.Count > 3 ? inputs[3] : null);
}
