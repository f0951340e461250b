using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Distributed;

/// <summary>The MPI engine: every collective is non-blocking (MPI_Iallreduce, MPI_Ibcast) and waited for with a
/// deadline, so a lost process ends the wait with a message instead of a hang.</summary>
internal sealed unsafe class MpiProcessGroup : ProcessGroup
{
    private const int Chunk = 1 << 28; // elements per MPI call (an int count)

    public MpiProcessGroup(TimeSpan timeout)
    {
        Timeout = timeout;
        (Rank, WorldSize) = MpiNative.Init();
        LocalRank = LaunchEnvironment.Detect()?.LocalRank ?? 0;
    }

    public override string Backend => "mpi";

    public override void Close() => MpiNative.Shutdown();

    public override void AllReduce(Tensor tensor, string what = "all-reduce") =>
        OnHost(tensor, host => Run(host, what, (p, n, type) => MpiNative.StartAllReduce((void*)p, n, type,
            MpiNative.Sum)), writeBack: true);

    public override void Broadcast(Tensor tensor, int root = 0, string what = "broadcast") =>
        OnHost(tensor, host => Run(host, what, (p, n, type) => MpiNative.StartBroadcast((void*)p, n, type, root)),
            writeBack: Rank != root);

    /// <summary>CPU tensors as they are; others through a host copy.</summary>
    private static void OnHost(Tensor tensor, Action<Tensor> action, bool writeBack)
    {
        if (!tensor.is_contiguous())
            throw new ArgumentException("Collectives take contiguous tensors.", nameof(tensor));
        if (tensor.device_type == DeviceType.CPU) { action(tensor); return; }
        using var host = tensor.cpu();
        action(host);
        if (writeBack) using (no_grad()) tensor.copy_(host);
    }

    private void Run(Tensor t, string what, Func<nint, int, nint, nint> start)
    {
        var (type, size) = TypeOf(t);
        byte* data = (byte*)TensorMemory.Pointer(t);
        for (long offset = 0; offset < t.numel(); offset += Chunk)
        {
            int n = (int)Math.Min(Chunk, t.numel() - offset);
            nint request = start((nint)(data + offset * size), n, type);
            WaitFor(() => MpiNative.Test(ref request), what);
        }
    }

    private static (nint Type, int Size) TypeOf(Tensor t) => t.dtype switch
    {
        ScalarType.Float32 => (MpiNative.Float32, 4),
        ScalarType.Float64 => (MpiNative.Float64, 8),
        ScalarType.Int64 => (MpiNative.Int64, 8),
        ScalarType.Byte => (MpiNative.Byte, 1),
        _ => throw new ArgumentException($"Collectives take float32, float64, int64 or uint8 tensors; got {t.dtype}."),
    };
}

/// <summary>Where a contiguous tensor's first element is (host or device memory).</summary>
internal static class TensorMemory
{
    public static nint Pointer(Tensor t) => t.dtype switch
    {
        ScalarType.Float32 => t.storage<float>().data_ptr() + (nint)(t.storage_offset() * 4),
        ScalarType.Float64 => t.storage<double>().data_ptr() + (nint)(t.storage_offset() * 8),
        ScalarType.Int64 => t.storage<long>().data_ptr() + (nint)(t.storage_offset() * 8),
        ScalarType.Byte => t.storage<byte>().data_ptr() + (nint)t.storage_offset(),
        _ => throw new ArgumentException($"Collectives take float32, float64, int64 or uint8 tensors; got {t.dtype}."),
    };
}
