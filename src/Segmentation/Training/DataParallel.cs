using Segmentation.Distributed;
using Segmentation.Models;
using Segmentation.Models.Layers;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>
/// The trainer's data-parallel strategy: what the processes of a run exchange (the starting weights, each step's
/// gradients, the epoch's losses, the time-limit decisions), and each one's share of the data. Without a process group
/// every exchange is the identity, so the loop and the step never ask whether the run is distributed.
/// </summary>
internal sealed class DataParallel : IDisposable
{
    private readonly GradientReducer? reducer;

    /// <summary>The processes (null: this process alone).</summary>
    public ProcessGroup? Group { get; }
    /// <summary>How many processes train together (1 alone).</summary>
    public int WorldSize => Group?.WorldSize ?? 1;
    /// <summary>This process's rank (0 alone).</summary>
    public int Rank => Group?.Rank ?? 0;
    /// <summary>Whether this process writes the run folder (rank 0).</summary>
    public bool IsMain => Group is not { IsMain: false };

    /// <summary>The strategy for <paramref name="model"/>'s training: with a group (at world size 1 too: the same
    /// work, to measure what it costs), a gradient reducer over its parameters and, when asked, batch norm over the
    /// global batch.</summary>
    public DataParallel(ProcessGroup? group, SegmentationModel model, bool syncBatchNorm)
    {
        Group = group;
        if (group is null) return;
        reducer = new GradientReducer(group, model.parameters());
        if (syncBatchNorm)
            foreach (var bn in model.modules().OfType<BatchNorm>()) bn.Sync = group; // a no-op at world size 1
    }

    /// <summary>Every process takes rank 0's weights and buffers (at the start, as DDP does, and before each
    /// evaluation, so batch-norm statistics kept per process agree).</summary>
    public void BroadcastModel(SegmentationModel model, string what)
    {
        if (Group is null) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var sameType in model.state_dict().Values.GroupBy(t => t.dtype))
        {
            var tensors = sameType.ToList();
            var flat = cat(tensors.Select(t => t.flatten()).ToList());
            Group.Broadcast(flat, 0, what);
            long offset = 0;
            foreach (var t in tensors)
            {
                t.copy_(flat.narrow(0, offset, t.numel()).view_as(t));
                offset += t.numel();
            }
        }
    }

    /// <summary>Averages the step's gradients over the processes.</summary>
    public void ReduceGradients(string step) => reducer?.Reduce(step);

    /// <summary>Sums <paramref name="values"/> over the processes, in place.</summary>
    public void Sum(double[] values, string what) => Group?.AllReduce(values, what);

    /// <summary>Every process takes rank 0's <paramref name="values"/>, in place.</summary>
    public void FromMain(double[] values, string what) => Group?.Broadcast(values, what);

    /// <summary>Whether <paramref name="value"/> holds on any process (all then act alike).</summary>
    public bool Any(bool value, string what)
    {
        var up = new[] { value ? 1.0 : 0 };
        Sum(up, what);
        return up[0] > 0;
    }

    /// <inheritdoc />
    public void Dispose() => reducer?.Dispose();
}
