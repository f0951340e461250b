using Segmentation.Models.Export;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Segmentation.Models.Layers;

/// <summary>
/// A fully connected layer over the last dimension, y = x Wᵀ + b, with PyTorch's <c>nn.Linear</c> keys (<c>weight</c>
/// out x in, <c>bias</c>) and initialisation. Computes in the model's precision; the parameters stay float32.
/// </summary>
public sealed class Linear : Layer, ICheckedComputation
{
#pragma warning disable IDE1006 // state-dict names
    private Parameter weight;
    private Parameter? bias;
#pragma warning restore IDE1006

    /// <summary>Input features.</summary>
    public long InFeatures { get; }
    /// <summary>Output features.</summary>
    public long OutFeatures { get; }

    /// <summary>Creates the layer, initialised as PyTorch initialises <c>nn.Linear</c>.</summary>
    public Linear(long inFeatures, long outFeatures, bool bias = true) : base(nameof(Linear))
    {
        if (inFeatures < 1 || outFeatures < 1)
            throw new ArgumentOutOfRangeException(nameof(inFeatures),
                $"Linear features must be at least 1; got {inFeatures} -> {outFeatures}.");
        InFeatures = inFeatures; OutFeatures = outFeatures;
        weight = new Parameter(empty(outFeatures, inFeatures));
        this.bias = bias ? new Parameter(empty(outFeatures)) : null;
        using (no_grad())
        {
            nn.init.kaiming_uniform_(weight, Math.Sqrt(5));
            if (this.bias is not null)
            {
                double bound = 1 / Math.Sqrt(inFeatures);
                nn.init.uniform_(this.bias, -bound, bound);
            }
        }
        RegisterComponents();
    }

    /// <summary>The weight, out x in.</summary>
    public Parameter Weight => weight;
    /// <summary>The bias, if any.</summary>
    public Parameter? Bias => bias;

    /// <inheritdoc />
    protected override Tensor Compute(Tensor input)
    {
        if (ComputeType == weight.dtype) return Apply(Route, input, weight, bias);
        using var scope = NewDisposeScope();
        var x = input.dtype == ComputeType ? input : input.to(ComputeType);
        return Apply(Route, x, weight.to(ComputeType), bias?.to(ComputeType)).MoveToOuterDisposeScope();
    }

    /// <summary>Route 0 is libtorch's <c>linear</c>; route 1 a plain matrix product.</summary>
    private static Tensor Apply(int route, Tensor x, Tensor w, Tensor? b)
    {
        if (route == 0) return nn.functional.linear(x, w, b);
        var y = x.matmul(w.t());
        return b is null ? y : y + b;
    }

    /// <inheritdoc />
    internal override string ExportOnnx(OnnxGraph g, string input, string path) => g.Linear(input, path, weight, bias);

    /// <inheritdoc />
    internal override LayerSummary Summarise(string path, Tensor input, Tensor output) =>
        new(path, "Linear", output.shape[1..], OwnParameters(), input.numel() / input.shape[0] / InFeatures
            * InFeatures * OutFeatures);

    internal override ICheckedComputation Checkable => this;
    IReadOnlyList<Tensor> ICheckedComputation.Parameters => bias is null ? new Tensor[] { weight }
        : new Tensor[] { weight, bias };
    bool ICheckedComputation.FollowsPrecision => true;
    Tensor ICheckedComputation.Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> p, bool training) =>
        Apply(route, inputs[0], p[0], p.Count > 1 ? p[1] : null);
}
