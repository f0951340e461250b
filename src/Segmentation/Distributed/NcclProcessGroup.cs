using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Distributed;

/// <summary>
/// The NCCL engine: collectives are queued on the default CUDA stream, the stream libtorch queues on, so they are
/// ordered with the step's kernels and cost the host no wait. A watchdog thread follows each collective with a CUDA
/// event; one still running after <see cref="ProcessGroup.Timeout"/> aborts the communicator (NCCL's way out of a
/// collective whose peer is gone), and the next collective throws naming this rank.
/// </summary>
internal sealed class NcclProcessGroup : ProcessGroup
{
    private readonly nint comm;
    private readonly nint done;
    private readonly Thread? watchdog;
    private readonly object gate = new();
    private DateTime? pendingSince;
    private string pendingWhat = "";
    private string? failure;
    private volatile bool disposed;

    public NcclProcessGroup(int rank, int worldSize, int localRank, string? masterAddress, int masterPort,
        TimeSpan timeout, bool useMpi = false)
    {
        Timeout = timeout; Rank = rank; WorldSize = worldSize; LocalRank = localRank;
        NcclNative.Load();
        NcclNative.SetDevice(localRank);
        var id = rank == 0 ? NcclNative.NewId() : default;
        if (worldSize > 1) id = ShareId(id, useMpi, masterAddress, masterPort);
        comm = NcclNative.InitRank(worldSize, id, rank);
        done = NcclNative.NewEvent();
        if (done != 0)
        {
            watchdog = new Thread(Watch) { IsBackground = true, Name = "segmentation-nccl-watchdog" };
            watchdog.Start();
        }
    }

    public override string Backend => "nccl";

    /// <summary>NCCL's version, for reports.</summary>
    public static string Version => NcclNative.Version();

    private unsafe NcclNative.UniqueId ShareId(NcclNative.UniqueId id, bool useMpi, string? address, int port)
    {
        var bytes = new byte[128];
        new ReadOnlySpan<byte>(id.Bytes, 128).CopyTo(bytes);
        if (useMpi)
        {
            using var mpi = new MpiProcessGroup(Timeout);
            using var t = tensor(bytes);
            mpi.Broadcast(t, 0, "NCCL's unique id");
            t.data<byte>().CopyTo(bytes, 0);
        }
        else bytes = TcpRendezvous.Share(bytes, Rank, WorldSize, address ?? throw new OptionsException(
            "MASTER_ADDR is not set: the NCCL processes of a run started without mpirun meet at MASTER_ADDR:"
                + "MASTER_PORT (torchrun sets both)."), port, Timeout);
        var shared = new NcclNative.UniqueId();
        new ReadOnlySpan<byte>(bytes).CopyTo(new Span<byte>(shared.Bytes, 128));
        return shared;
    }

    public override void AllReduce(Tensor tensor, string what = "all-reduce") =>
        Enqueue(tensor, what, (p, n, type) => NcclNative.AllReduce(p, n, type, comm), writeBack: true);

    public override void Broadcast(Tensor tensor, int root = 0, string what = "broadcast") =>
        Enqueue(tensor, what, (p, n, type) => NcclNative.Broadcast(p, n, type, root, comm), writeBack: Rank != root);

    private void Enqueue(Tensor tensor, string what, Action<nint, long, int> call, bool writeBack)
    {
        if (failure is { } f) throw new DistributedException(f);
        if (!tensor.is_contiguous())
            throw new ArgumentException("Collectives take contiguous tensors.", nameof(tensor));
        int type = tensor.dtype switch
        {
            ScalarType.Float32 => NcclNative.Float32, ScalarType.Float64 => NcclNative.Float64, ScalarType.Int64
                => NcclNative.Int64,
            ScalarType.Byte => NcclNative.Uint8,
            _ => throw new ArgumentException($"Collectives take float32, float64, int64 or uint8 tensors; got "
                + $"{tensor.dtype}."),
        };
        if (tensor.device_type == DeviceType.CUDA)
        {
            call(TensorMemory.Pointer(tensor), tensor.numel(), type);
            Follow(what);
            return;
        }
        using var device = tensor.to(new Device(DeviceType.CUDA, LocalRank));
        call(TensorMemory.Pointer(device), device.numel(), type);
        Follow(what);
        if (writeBack) using (no_grad()) tensor.copy_(device.cpu());
        if (failure is { } late) throw new DistributedException(late);
    }

    /// <summary>Hands the collective just queued to the watchdog.</summary>
    private void Follow(string what)
    {
        if (done == 0) return;
        NcclNative.Record(done);
        lock (gate) { pendingSince ??= DateTime.UtcNow; pendingWhat = what; }
    }

    private void Watch()
    {
        while (!disposed)
        {
            Thread.Sleep(100);
            lock (gate)
            {
                if (pendingSince is not { } since) continue;
                if (NcclNative.Done(done)) { pendingSince = null; continue; }
                if (DateTime.UtcNow - since < Timeout) continue;
                failure = $"{this}: {pendingWhat} got no answer from the other process(es) within "
                    + $"{Timeout.TotalSeconds:0} s; a process of the run died or hangs. The NCCL communicator was "
                    + "aborted.";
                NcclNative.Abort(comm);
                return;
            }
        }
    }

    public override void Dispose()
    {
        disposed = true;
        watchdog?.Join();
        if (failure is null) NcclNative.Destroy(comm);
        base.Dispose();
    }
}
