using System.Runtime.InteropServices;

namespace Segmentation.Distributed;

/// <summary>
/// NCCL's calls, bound at run time to <c>libnccl.so.2</c> (the CUDA install's, or PyTorch's
/// <c>nvidia-nccl</c> package on the library path), and the one CUDA runtime call NCCL needs before it starts
/// (<c>cudaSetDevice</c>).
/// </summary>
internal static unsafe class NcclNative
{
    /// <summary>ncclUniqueId: 128 opaque bytes, made by rank 0 and handed to the others.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct UniqueId { public fixed byte Bytes[128]; }

    public const int Float32 = 7, Float64 = 8, Int64 = 4, Uint8 = 1, OpSum = 0;
    private static readonly object Gate = new();
    private static nint library;
    private static delegate* unmanaged<UniqueId*, int> getUniqueId;
    private static delegate* unmanaged<nint*, int, UniqueId, int, int> commInitRank;
    private static delegate* unmanaged<void*, void*, nuint, int, int, nint, nint, int> allReduce;
    private static delegate* unmanaged<void*, void*, nuint, int, int, nint, nint, int> broadcast;
    private static delegate* unmanaged<nint, int> commDestroy, commAbort;
    private static delegate* unmanaged<int, byte*> errorString;
    private static delegate* unmanaged<int*, int> getVersion;
    private static delegate* unmanaged<int, int> cudaSetDevice;
    private static delegate* unmanaged<nint*, uint, int> eventCreate;
    private static delegate* unmanaged<nint, nint, int> eventRecord;
    private static delegate* unmanaged<nint, int> eventQuery;

    /// <summary>Opens NCCL (once).</summary>
    public static void Load()
    {
        lock (Gate)
        {
            if (library != 0) return;
            var handle = Open(new[] { Environment.GetEnvironmentVariable("SEGMENTATION_NCCL"), "libnccl.so.2",
                "libnccl.so" }) ?? throw new DistributedException("NCCL was not found (libnccl.so.2): install it with "
                    + "CUDA, or put PyTorch's nvidia/nccl/lib on LD_LIBRARY_PATH, or name the file in "
                    + "SEGMENTATION_NCCL.");
            nint Symbol(nint lib, string name) => NativeLibrary.TryGetExport(lib, name, out var p) ? p
                : throw new DistributedException($"libnccl.so.2 has no '{name}' (NCCL 2.x is needed).");
            getUniqueId = (delegate* unmanaged<UniqueId*, int>)Symbol(handle, "ncclGetUniqueId");
            commInitRank = (delegate* unmanaged<nint*, int, UniqueId, int, int>)Symbol(handle, "ncclCommInitRank");
            allReduce = (delegate* unmanaged<void*, void*, nuint, int, int, nint, nint, int>)Symbol(handle,
                "ncclAllReduce");
            broadcast = (delegate* unmanaged<void*, void*, nuint, int, int, nint, nint, int>)Symbol(handle,
                "ncclBroadcast");
            commDestroy = (delegate* unmanaged<nint, int>)Symbol(handle, "ncclCommDestroy");
            commAbort = (delegate* unmanaged<nint, int>)Symbol(handle, "ncclCommAbort");
            errorString = (delegate* unmanaged<int, byte*>)Symbol(handle, "ncclGetErrorString");
            getVersion = (delegate* unmanaged<int*, int>)Symbol(handle, "ncclGetVersion");
            var cudart = Open(new[] { "libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0" });
            if (cudart is { } c && NativeLibrary.TryGetExport(c, "cudaSetDevice", out var set)
                && NativeLibrary.TryGetExport(c, "cudaEventCreateWithFlags", out var create)
                && NativeLibrary.TryGetExport(c, "cudaEventRecord", out var record)
                && NativeLibrary.TryGetExport(c, "cudaEventQuery", out var query))
            {
                cudaSetDevice = (delegate* unmanaged<int, int>)set;
                eventCreate = (delegate* unmanaged<nint*, uint, int>)create;
                eventRecord = (delegate* unmanaged<nint, nint, int>)record;
                eventQuery = (delegate* unmanaged<nint, int>)query;
            }
            library = handle;
        }
    }

    private static nint? Open(IEnumerable<string?> names)
    {
        foreach (var name in names)
            if (name is not null && NativeLibrary.TryLoad(name, out var h)) return h;
        return null;
    }

    /// <summary>NCCL's version as 2.x.y.</summary>
    public static string Version()
    {
        Load();
        int v;
        Check(getVersion(&v), "ncclGetVersion");
        return v >= 10000 ? $"{v / 10000}.{v / 100 % 100}.{v % 100}" : $"{v / 1000}.{v / 100 % 10}.{v % 100}";
    }

    public static UniqueId NewId()
    {
        Load();
        UniqueId id;
        Check(getUniqueId(&id), "ncclGetUniqueId");
        return id;
    }

    /// <summary>Makes cuda:<paramref name="device"/> this thread's device (NCCL binds a communicator to it).</summary>
    public static void SetDevice(int device)
    {
        Load();
        if (cudaSetDevice is not null && cudaSetDevice(device) is var code && code != 0)
            throw new DistributedException($"cudaSetDevice({device}) failed with CUDA error {code}.");
    }

    /// <summary>Whether the CUDA runtime's events are at hand (the watchdog needs them).</summary>
    public static bool HasEvents => eventCreate is not null;

    /// <summary>A CUDA event without timing (0 when the runtime was not found).</summary>
    public static nint NewEvent()
    {
        nint e = 0;
        if (eventCreate is not null && eventCreate(&e, 2 /* cudaEventDisableTiming */) != 0) e = 0;
        return e;
    }

    /// <summary>Records <paramref name="e"/> on the default stream, after the work queued so far.</summary>
    public static void Record(nint e) { if (e != 0) eventRecord(e, 0); }

    /// <summary>Whether the work before <paramref name="e"/>'s last record is done.</summary>
    public static bool Done(nint e) => e == 0 || eventQuery(e) != 600 /* cudaErrorNotReady */;

    public static nint InitRank(int worldSize, UniqueId id, int rank)
    {
        nint comm;
        Check(commInitRank(&comm, worldSize, id, rank), "ncclCommInitRank");
        return comm;
    }

    public static void AllReduce(nint data, long count, int type, nint comm) =>
        Check(allReduce((void*)data, (void*)data, (nuint)count, type, OpSum, comm, 0), "ncclAllReduce");

    public static void Broadcast(nint data, long count, int type, int root, nint comm) =>
        Check(broadcast((void*)data, (void*)data, (nuint)count, type, root, comm, 0), "ncclBroadcast");

    public static void Destroy(nint comm) => commDestroy(comm);
    public static void Abort(nint comm) => commAbort(comm);

    private static void Check(int code, string call)
    {
        if (code != 0)
            throw new DistributedException($"{call} failed: NCCL error {code} "
                + $"({Marshal.PtrToStringAnsi((nint)errorString(code))}).");
    }
}
