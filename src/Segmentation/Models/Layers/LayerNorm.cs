using Segmentation.Models.Export;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Segmentation.Models.Layers;

/// <summary>
/// Layer normalisation over the last dimension (Ba et al. 2016), as PyTorch's <c>nn.LayerNorm(channels)</c> with its
/// keys <c>weight</c> and <c>bias</c> and its default epsilon 1e-5. In float32 whatever the input's type (as autocast
/// does), returned in the input's type.
/// </summary>
public sealed class LayerNorm : Layer, ICheckedComputation
{
#pragma warning disable IDE1006 // state-dict names
    private Parameter weight;
    private Parameter bias;
#pragma warning restore IDE1006

    /// <summary>Size of the last dimension.</summary>
    public long Channels { get; }
    /// <summary>Added to the variance.</summary>
    public double Epsilon { get; }

    /// <summary>Creates the layer: weight 1, bias 0.</summary>
    public LayerNorm(long channels, double epsilon = 1e-5) : base(nameof(LayerNorm))
    {
        if (channels < 1) throw new ArgumentOutOfRangeException(nameof(channels),
            $"LayerNorm channels must be at least 1; got {channels}.");
        Channels = channels; Epsilon = epsilon;
        weight = new Parameter(ones(channels));
        bias = new Parameter(zeros(channels));
        RegisterComponents();
    }

    /// <inheritdoc />
    protected override Tensor Compute(Tensor input)
    {
        if (input.dtype == weight.dtype) return nn.functional.layer_norm(input, new[] { Channels }, weight, bias,
            Epsilon);
        using var scope = NewDisposeScope();
        var y = nn.functional.layer_norm(input.to(weight.dtype), new[] { Channels }, weight, bias, Epsilon);
        return y.to(input.dtype).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    internal override string ExportOnnx(OnnxGraph g, string input, string path) => g.LayerNorm(input, path, weight,
        bias, Epsilon);

    /// <inheritdoc />
    internal override LayerSummary Summarise(string path, Tensor input, Tensor output) => ShapeRow(path, "LayerNorm",
        output);

    internal override ICheckedComputation Checkable => this;
    IReadOnlyList<Tensor> ICheckedComputation.Parameters => new Tensor[] { weight, bias };
    string ICheckedComputation.Hyperparameters => $"eps={Epsilon}";

    /// <summary>Route 0 is libtorch's kernel; route 1 the statistics from reductions.</summary>
    Tensor ICheckedComputation.Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> p, bool training)
    {
        var x = inputs[0];
        if (route == 0) return nn.functional.layer_norm(x, new[] { Channels }, p[0], p[1], Epsilon);
        var mean = x.mean(new long[] { -1 }, keepdim: true);
        var variance = (x - mean).square().mean(new long[] { -1 }, keepdim: true);
        return (x - mean) / (variance + Epsilon).sqrt() * p[0] + p[1];
    }
}
