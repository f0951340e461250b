using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Segmentation.Distributed;

/// <summary>
/// Averages the gradients of every process after the backward pass, as PyTorch's DistributedDataParallel does: the
/// parameters in reverse order (roughly the order backward finishes them), packed into flat buckets of at most
/// <see cref="BucketBytes"/>, each bucket one all-reduce, then divided by the world size. Parameters without a
/// gradient (a frozen encoder) are left out on every rank alike.
/// </summary>
internal sealed class GradientReducer
{
    /// <summary>DDP's default bucket cap, 25 MiB.</summary>
    public const long BucketBytes = 25L << 20;

    private readonly ProcessGroup group;
    private readonly Parameter[] parameters;

    public GradientReducer(ProcessGroup group, IEnumerable<Parameter> parameters)
    {
        this.group = group;
        this.parameters = parameters.Reverse().ToArray();
    }

    /// <summary>All-reduces made by the latest <see cref="Reduce"/>.</summary>
    public int LastBuckets { get; private set; }

    /// <summary>Bytes of gradient reduced by the latest <see cref="Reduce"/> (the scaling model's input).</summary>
    public long LastBytes { get; private set; }

    /// <summary>Replaces every gradient by its mean over the processes.</summary>
    /// <param name="what">Which step this is, for a timeout's message.</param>
    public void Reduce(string what)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var grads = parameters.Select(p => p.grad).Where(g => g is not null).Select(g => g!).ToList();
        int buckets = 0;
        long bytes = 0;
        for (int start = 0; start < grads.Count;)
        {
            int end = start;
            long size = 0;
            while (end < grads.Count && (end == start || (size + Bytes(grads[end]) <= BucketBytes
                && grads[end].dtype == grads[start].dtype)))
                size += Bytes(grads[end++]);
            var bucket = grads.GetRange(start, end - start);
            var flat = bucket.Count == 1 ? bucket[0].flatten().clone() : cat(bucket.Select(g => g.flatten())
                .ToList());
            group.AllReduce(flat, $"the gradient all-reduce of {what}");
            flat.div_(group.WorldSize);
            long offset = 0;
            foreach (var g in bucket)
            {
                g.copy_(flat.narrow(0, offset, g.numel()).view_as(g));
                offset += g.numel();
            }
            buckets++;
            bytes += size;
            start = end;
        }
        (LastBuckets, LastBytes) = (buckets, bytes);
    }

    private static long Bytes(Tensor t) => t.numel() * t.element_size();
}
