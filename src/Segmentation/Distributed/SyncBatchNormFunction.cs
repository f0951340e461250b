using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Segmentation.Distributed;

/// <summary>
/// Batch normalisation with statistics over the whole global batch (PyTorch's <c>SyncBatchNorm</c>): the forward pass
/// all-reduces each channel's sum, sum of squares and count; the backward pass all-reduces the sums of the output
/// gradient and of its product with the centred input, so that every process's input gradient is the gradient of the
/// loss summed over all processes. Running statistics use the global mean and unbiased variance, and so stay the same
/// on
/// every process. Statistics are accumulated in float64.
/// </summary>
internal sealed class SyncBatchNormFunction : SingleTensorFunction<SyncBatchNormFunction>
{
    /// <summary>What the forward pass needs besides the tensors.</summary>
    internal sealed record Settings(ProcessGroup Group, Tensor RunningMean, Tensor RunningVariance, double Momentum,
        double Epsilon);

    public override string Name => "SyncBatchNorm";

    /// <summary>vars: input (N x C x ...), weight, bias, <see cref="Settings"/>.</summary>
    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (x, weight, bias, s) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (Settings)vars[3]);
        var input = x.to_type(ScalarType.Float32);
        var dims = ReducedDims(input);
        var local = input.to_type(ScalarType.Float64);
        var stats = cat(new[] { local.sum(dims), local.square().sum(dims),
            full(1, input.numel() / input.shape[1], ScalarType.Float64, input.device) });
        s.Group.AllReduce(stats, "the synchronised batch-norm statistics");
        long channels = input.shape[1];
        var count = stats[2 * channels].item<double>();
        var mean = stats.narrow(0, 0, channels) / count;
        var variance = (stats.narrow(0, channels, channels) / count - mean.square()).clamp_min(0);
        using (no_grad())
        {
            s.RunningMean.mul_(1 - s.Momentum).add_(mean.to_type(ScalarType.Float32) * s.Momentum);
            s.RunningVariance.mul_(1 - s.Momentum).add_(variance.to_type(ScalarType.Float32) * (s.Momentum * count
                / Math.Max(1, count - 1)));
        }
        var shape = ChannelShape(input);
        var mean32 = mean.to_type(ScalarType.Float32).view(shape);
        var invstd = (variance + s.Epsilon).rsqrt().to_type(ScalarType.Float32).view(shape);
        ctx.save_for_backward(new List<Tensor> { input, weight, mean32, invstd });
        ctx.save_data("settings", s);
        ctx.save_data("count", count);
        ctx.save_data("dtype", x.dtype);
        return ((input - mean32) * invstd * weight.view(shape) + bias.view(shape)).to_type(x.dtype);
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        var (input, weight, mean, invstd) = (saved[0], saved[1], saved[2], saved[3]);
        var s = (Settings)ctx.get_data("settings");
        var count = (double)ctx.get_data("count");
        var g = gradOutput.to_type(ScalarType.Float32);
        var dims = ReducedDims(input);
        var centred = input - mean;
        var sumDy = g.sum(dims);
        var sumDyCentred = (g * centred).sum(dims);
        var gradWeight = sumDyCentred * invstd.flatten();
        var gradBias = sumDy.clone();
        var both = cat(new[] { sumDy, sumDyCentred });
        s.Group.AllReduce(both, "the synchronised batch-norm gradients");
        long channels = input.shape[1];
        var shape = ChannelShape(input);
        var meanDy = (both.narrow(0, 0, channels) / count).view(shape);
        var meanDyCentred = (both.narrow(0, channels, channels) / count).view(shape);
        var gradInput = (g - meanDy - centred * invstd.square() * meanDyCentred) * invstd * weight.view(shape);
        return new List<Tensor> { gradInput.to_type((ScalarType)ctx.get_data("dtype")), gradWeight, gradBias, null! };
    }

    private static long[] ReducedDims(Tensor x) =>
        Enumerable.Range(0, (int)x.dim()).Where(d => d != 1).Select(d => (long)d).ToArray();

    private static long[] ChannelShape(Tensor x)
    {
        var shape = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
        shape[1] = -1;
        return shape;
    }
}
