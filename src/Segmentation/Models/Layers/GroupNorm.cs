using Segmentation.Models.Export;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Segmentation.Models.Layers;

/// <summary>
/// Group normalisation (Wu and He 2018) with its affine weight 1 and bias 0 at the start, as PyTorch initialises it.
/// TorchSharp 0.107's <c>nn.GroupNorm</c> leaves both uninitialised (whatever the allocator returned: 1e25, NaN), so
/// this one is ours; <c>nn.functional.group_norm</c> computes it. State-dict keys <c>weight</c> and <c>bias</c>, as
/// there.
/// In float32 whatever the input's type (as autocast does), and returned in the input's type.
/// </summary>
public sealed class GroupNorm : Layer, ICheckedComputation
{
#pragma warning disable IDE1006 // state-dict names
    private Parameter weight;
    private Parameter bias;
#pragma warning restore IDE1006

    /// <summary>Groups the channels are split into.</summary>
    public long Groups { get; }
    /// <summary>Added to the variance.</summary>
    public double Epsilon { get; }

    /// <summary>Creates the layer; <paramref name="channels"/> must be a multiple of <paramref
    /// name="groups"/>.</summary>
    public GroupNorm(long groups, long channels, double epsilon = 1e-5) : base(nameof(GroupNorm))
    {
        if (groups < 1 || channels % groups != 0)
            throw new ArgumentException($"GroupNorm: {channels} channels cannot be split into {groups} equal groups.");
        Groups = groups; Epsilon = epsilon;
        weight = new Parameter(ones(channels));
        bias = new Parameter(zeros(channels));
        RegisterComponents();
    }

    /// <summary>Up to 32 groups that divide the channels evenly.</summary>
    public static long GroupsFor(long channels)
    {
        for (long g = Math.Min(32, channels); g > 1; g--)
            if (channels % g == 0) return g;
        return 1;
    }

    /// <summary>The per-channel scale.</summary>
    public Parameter Weight => weight;
    /// <summary>The per-channel shift.</summary>
    public Parameter Bias => bias;

    /// <inheritdoc />
    protected override Tensor Compute(Tensor input)
    {
        if (input.dtype == weight.dtype) return nn.functional.group_norm(input, Groups, weight, bias, Epsilon);
        using var scope = NewDisposeScope();
        var y = nn.functional.group_norm(input.to(weight.dtype), Groups, weight, bias, Epsilon);
        return y.to(input.dtype).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    internal override string ExportOnnx(OnnxGraph g, string input, string path) => g.GroupNorm(input, path, Groups,
        Epsilon, weight, bias);

    /// <inheritdoc />
    internal override LayerSummary Summarise(string path, Tensor input, Tensor output) => ShapeRow(path, "GroupNorm",
        output);

    internal override ICheckedComputation Checkable => this;
    IReadOnlyList<Tensor> ICheckedComputation.Parameters => new Tensor[] { weight, bias };
    string ICheckedComputation.Hyperparameters => $"groups={Groups} eps={Epsilon}";

    /// <summary>Route 0 is libtorch's kernel; route 1 the statistics from reductions over each group.</summary>
    Tensor ICheckedComputation.Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> p, bool training)
    {
        var x = inputs[0];
        if (route == 0) return nn.functional.group_norm(x, Groups, p[0], p[1], Epsilon);
        var grouped = x.reshape(x.shape[0], Groups, -1);
        var mean = grouped.mean(new long[] { 2 }, keepdim: true);
        var variance = (grouped - mean).square().mean(new long[] { 2 }, keepdim: true);
        var shape = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
        shape[1] = -1;
        var y = ((grouped - mean) / (variance + Epsilon).sqrt()).reshape(x.shape);
        return y * p[0].view(shape) + p[1].view(shape);
    }
}
