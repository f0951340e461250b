using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Segmentation.Distributed;

/// <summary>
/// Averages the gradients of every process after the backward pass, as PyTorch's DistributedDataParallel does: the
/// parameters in reverse order (roughly the order backward finishes them), in flat buckets of at most
/// <see cref="BucketBytes"/>, each bucket one all-reduce, then divided by the world size. Each gradient is a view of
/// its bucket (DDP's <c>gradient_as_bucket_view</c>): backward accumulates straight into the buckets, so the reduction
/// copies nothing. Parameters that do not train (a frozen encoder) are left out on every rank alike, and the buckets
/// are rebuilt when that set changes.
/// </summary>
internal sealed class GradientReducer : IDisposable
{
    /// <summary>DDP's default bucket cap, 25 MiB.</summary>
    public const long BucketBytes = 25L << 20;

    private readonly ProcessGroup group;
    private readonly Parameter[] parameters;
    private List<Bucket> buckets = new();
    private Parameter[] bucketed = Array.Empty<Parameter>();

    private sealed record Bucket(Tensor Flat, List<(Parameter Parameter, long Offset)> Members);

    public GradientReducer(ProcessGroup group, IEnumerable<Parameter> parameters)
    {
        this.group = group;
        this.parameters = parameters.Reverse().ToArray();
    }

    /// <summary>All-reduces made by each <see cref="Reduce"/>.</summary>
    public int Buckets => buckets.Count;

    /// <summary>Bytes of gradient reduced by each <see cref="Reduce"/> (the scaling model's input).</summary>
    public long Bytes => buckets.Sum(b => b.Flat.numel() * b.Flat.element_size());

    /// <summary>Replaces every gradient by its mean over the processes.</summary>
    /// <param name="what">Which step this is, for a timeout's message.</param>
    public void Reduce(string what)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var training = parameters.Where(p => p.requires_grad).ToArray();
        if (!training.SequenceEqual(bucketed)) Rebuild(training);
        foreach (var b in buckets)
        {
            foreach (var (p, offset) in b.Members) AdoptGradient(b, p, offset);
            group.AllReduce(b.Flat, $"the gradient all-reduce of {what}");
            if (group.WorldSize > 1) b.Flat.div_(group.WorldSize);
        }
    }

    /// <summary>Makes the parameter's gradient the view of its bucket (once, or after something replaced
    /// it).</summary>
    private static void AdoptGradient(Bucket b, Parameter p, long offset)
    {
        var view = b.Flat.narrow(0, offset, p.numel()).view_as(p);
        var grad = p.grad;
        if (grad is not null && TensorMemory.Pointer(grad) == TensorMemory.Pointer(view)) return;
        if (grad is null) view.zero_(); else view.copy_(grad);
        p.grad = view;
    }

    private void Rebuild(Parameter[] training)
    {
        DisposeBuckets();
        buckets = new List<Bucket>();
        for (int start = 0; start < training.Length;)
        {
            int end = start;
            long size = 0;
            var type = training[start].dtype;
            while (end < training.Length && training[end].dtype == type
                && (end == start || size + ByteSize(training[end]) <= BucketBytes))
                size += ByteSize(training[end++]);
            var members = new List<(Parameter, long)>();
            long offset = 0;
            for (int i = start; i < end; i++) { members.Add((training[i], offset)); offset += training[i].numel(); }
            var flat = zeros(new[] { offset }, type, training[start].device).DetachFromDisposeScope();
            buckets.Add(new Bucket(flat, members));
            start = end;
        }
        bucketed = training;
    }

    private static long ByteSize(Tensor t) => t.numel() * t.element_size();

    private void DisposeBuckets()
    {
        foreach (var b in buckets) b.Flat.Dispose();
    }

    public void Dispose() => DisposeBuckets();
}
