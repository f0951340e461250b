using Segmentation.Models.Export;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Models.Layers;

/// <summary>
/// Batch normalisation over the channels of N x C x ... (Ioffe and Szegedy 2015), as PyTorch's <c>BatchNorm2d</c>
/// computes it and with its state-dict keys (<c>weight</c>, <c>bias</c>, <c>running_mean</c>, <c>running_var</c>,
/// <c>num_batches_tracked</c>), so checkpoints move between them. Statistics and arithmetic stay float32 under mixed
/// precision; the output has the input's type.
/// </summary>
public sealed class BatchNorm : Layer, ICheckedComputation
{
#pragma warning disable IDE1006 // state-dict names
    private Parameter weight;
    private Parameter bias;
    private Tensor running_mean;
    private Tensor running_var;
    private Tensor num_batches_tracked;
#pragma warning restore IDE1006

    /// <summary>Channels normalised.</summary>
    public long Channels { get; }
    /// <summary>Added to the variance.</summary>
    public double Epsilon { get; }
    /// <summary>Weight of the newest batch in the running statistics.</summary>
    public double Momentum { get; }

    /// <summary>Creates the layer: weight 1, bias 0, running mean 0 and variance 1.</summary>
    public BatchNorm(long channels, double epsilon = 1e-5, double momentum = 0.1) : base("BatchNorm2d")
    {
        if (channels < 1) throw new ArgumentOutOfRangeException(nameof(channels),
            $"BatchNorm channels must be at least 1; got {channels}.");
        Channels = channels; Epsilon = epsilon; Momentum = momentum;
        weight = new Parameter(ones(channels));
        bias = new Parameter(zeros(channels));
        running_mean = zeros(channels);
        running_var = ones(channels);
        num_batches_tracked = tensor(0L);
        RegisterComponents();
    }

    /// <summary>The per-channel scale.</summary>
    public Parameter Weight => weight;
    /// <summary>The per-channel shift.</summary>
    public Parameter Bias => bias;
    /// <summary>The running mean (eval mode normalises with it).</summary>
    public Tensor RunningMean => running_mean;
    /// <summary>The running variance.</summary>
    public Tensor RunningVariance => running_var;

    /// <summary>
    /// The processes whose batches this layer normalises together while training (SyncBatchNorm; the trainer sets it
    /// for <c>--sync-bn</c>); null: this process's batch alone.
    /// </summary>
    internal Distributed.ProcessGroup? Sync { get; set; }

    /// <summary>libtorch's kernel takes a bfloat16 or float16 input with float32 statistics as it is.</summary>
    protected override Tensor Compute(Tensor input)
    {
        if (training) num_batches_tracked.add_(Scalars.One, Scalars.One); // no temporary scalars: Scalars
        if (training && Sync is { WorldSize: > 1 } group)
            return Distributed.SyncBatchNormFunction.apply(input, weight, bias,
                new Distributed.SyncBatchNormFunction.Settings(group, running_mean, running_var, Momentum, Epsilon));
        return F.batch_norm(input, running_mean, running_var, weight, bias, training, Momentum, Epsilon);
    }

    /// <inheritdoc />
    internal override string ExportOnnx(OnnxGraph g, string input, string path) =>
        g.BatchNorm(input, path, weight, bias, running_mean, running_var, Epsilon);

    /// <inheritdoc />
    internal override LayerSummary Summarise(string path, Tensor input, Tensor output) => ShapeRow(path, "BatchNorm2d",
        output);

    internal override ICheckedComputation Checkable => this;
    IReadOnlyList<Tensor> ICheckedComputation.Parameters => new Tensor[] { weight, bias };
    string ICheckedComputation.Hyperparameters => $"eps={Epsilon} momentum={Momentum}";

    /// <summary>Route 0 is libtorch's kernel; route 1 the same statistics from reductions (batch statistics when
    /// training).</summary>
    Tensor ICheckedComputation.Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> p, bool training)
    {
        var x = inputs[0];
        var shape = new long[x.dim()];
        Array.Fill(shape, 1L);
        shape[1] = -1;
        if (route == 0)
        {
            using var mean = zeros(Channels, x.dtype, x.device);
            using var variance = ones(Channels, x.dtype, x.device);
            return F.batch_norm(x, mean, variance, p[0], p[1], training, Momentum, Epsilon);
        }
        var dims = Enumerable.Range(0, (int)x.dim()).Where(d => d != 1).Select(d => (long)d).ToArray();
        var m = training ? x.mean(dims, keepdim: true) : zeros_like(p[0]).view(shape);
        var v = training ? (x - m).square().mean(dims, keepdim: true) : ones_like(p[0]).view(shape);
        return (x - m) / (v + Epsilon).sqrt() * p[0].view(shape) + p[1].view(shape);
    }
}
