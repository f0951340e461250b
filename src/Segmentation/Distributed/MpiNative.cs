using System.Runtime.InteropServices;

namespace Segmentation.Distributed;

/// <summary>
/// The few MPI calls the library makes, bound at run time to Open MPI's <c>libmpi.so.40</c> (Debian's
/// <c>libopenmpi-dev</c>/<c>openmpi-bin</c>, and most clusters' Open MPI 4 and 5). Handles (communicator, types,
/// operations) are Open MPI's: addresses of its predefined objects. The library is opened with <c>RTLD_GLOBAL</c>, as
/// Open MPI's own plug-ins need.
/// </summary>
internal static unsafe class MpiNative
{
    private const int ThreadMultiple = 3, Success = 0;
    private static readonly object Gate = new();
    private static nint library;
    private static delegate* unmanaged<int*, int> initialized, finalized;
    private static delegate* unmanaged<int*, byte***, int, int*, int> initThread;
    private static delegate* unmanaged<nint, int*, int> commRank, commSize;
    private static delegate* unmanaged<void*, void*, int, nint, nint, nint, nint*, int> iallreduce;
    private static delegate* unmanaged<void*, int, nint, int, nint, nint*, int> ibcast;
    private static delegate* unmanaged<nint*, int*, void*, int> test;
    private static delegate* unmanaged<nint, int, int> abort;
    private static delegate* unmanaged<int> finalize;

    /// <summary>MPI_COMM_WORLD.</summary>
    public static nint World { get; private set; }
    /// <summary>MPI_FLOAT, MPI_DOUBLE, MPI_INT64_T, MPI_BYTE.</summary>
    public static nint Float32, Float64, Int64, Byte;
    /// <summary>MPI_SUM, MPI_MAX.</summary>
    public static nint Sum, Max;

    /// <summary>The names the library is looked for under, in order.</summary>
    public static readonly string[] LibraryNames = { "libmpi.so.40", "libmpi.so" };

    /// <summary>Why MPI cannot be used here (null: it can).</summary>
    public static string? Unavailable()
    {
        try { Load(); return null; }
        catch (DistributedException e) { return e.Message; }
    }

    /// <summary>Opens the library and binds the calls (once).</summary>
    public static void Load()
    {
        lock (Gate)
        {
            if (library != 0) return;
            nint handle = 0;
            foreach (var name in LibraryNames)
                if ((handle = dlopen(name, RtldNow | RtldGlobal)) != 0) break;
            if (handle == 0)
                throw new DistributedException("MPI is not installed: libmpi.so.40 (Open MPI) was not found. Install "
                    + "Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev) or load your cluster's "
                    + "Open MPI module.");
            nint Symbol(string name) => NativeLibrary.TryGetExport(handle, name, out var p) ? p
                : throw new DistributedException($"The MPI library found has no '{name}': the library speaks Open "
                    + "MPI's interface (Open MPI 4 or 5); MPICH and Intel MPI are not supported yet.");
            initialized = (delegate* unmanaged<int*, int>)Symbol("MPI_Initialized");
            finalized = (delegate* unmanaged<int*, int>)Symbol("MPI_Finalized");
            initThread = (delegate* unmanaged<int*, byte***, int, int*, int>)Symbol("MPI_Init_thread");
            commRank = (delegate* unmanaged<nint, int*, int>)Symbol("MPI_Comm_rank");
            commSize = (delegate* unmanaged<nint, int*, int>)Symbol("MPI_Comm_size");
            iallreduce = (delegate* unmanaged<void*, void*, int, nint, nint, nint, nint*, int>)Symbol(
                "MPI_Iallreduce");
            ibcast = (delegate* unmanaged<void*, int, nint, int, nint, nint*, int>)Symbol("MPI_Ibcast");
            test = (delegate* unmanaged<nint*, int*, void*, int>)Symbol("MPI_Test");
            abort = (delegate* unmanaged<nint, int, int>)Symbol("MPI_Abort");
            finalize = (delegate* unmanaged<int>)Symbol("MPI_Finalize");
            World = Symbol("ompi_mpi_comm_world");
            Float32 = Symbol("ompi_mpi_float"); Float64 = Symbol("ompi_mpi_double");
            Int64 = Symbol("ompi_mpi_int64_t"); Byte = Symbol("ompi_mpi_byte");
            Sum = Symbol("ompi_mpi_op_sum"); Max = Symbol("ompi_mpi_op_max");
            library = handle;
        }
    }

    /// <summary>Initialises MPI once per process (any thread may call it: autograd runs synchronised batch norm's
    /// backward on its own threads); returns (rank,
    /// size) in MPI_COMM_WORLD.</summary>
    public static (int Rank, int Size) Init()
    {
        Load();
        int flag, provided, rank, size;
        Check(initialized(&flag), "MPI_Initialized");
        if (flag == 0) Check(initThread(null, null, ThreadMultiple, &provided), "MPI_Init_thread");
        Check(commRank(World, &rank), "MPI_Comm_rank");
        Check(commSize(World, &size), "MPI_Comm_size");
        return (rank, size);
    }

    /// <summary>Starts an in-place all-reduce of <paramref name="count"/> values at <paramref
    /// name="buffer"/>.</summary>
    public static nint StartAllReduce(void* buffer, int count, nint type, nint op)
    {
        nint request;
        Check(iallreduce((void*)1 /* MPI_IN_PLACE */, buffer, count, type, op, World, &request), "MPI_Iallreduce");
        return request;
    }

    /// <summary>Starts a broadcast from <paramref name="root"/>.</summary>
    public static nint StartBroadcast(void* buffer, int count, nint type, int root)
    {
        nint request;
        Check(ibcast(buffer, count, type, root, World, &request), "MPI_Ibcast");
        return request;
    }

    /// <summary>Whether the request is done (it is freed when it is).</summary>
    public static bool Test(ref nint request)
    {
        int flag;
        fixed (nint* r = &request) Check(test(r, &flag, null), "MPI_Test");
        return flag != 0;
    }

    /// <summary>Ends every process of the job (MPI_Abort) with <paramref name="code"/>.</summary>
    public static void Abort(int code) => abort(World, code);

    /// <summary>Finalises MPI if it was initialised and is not yet finalised.</summary>
    public static void Shutdown()
    {
        if (library == 0) return;
        int flag, done;
        initialized(&flag); finalized(&done);
        if (flag != 0 && done == 0) finalize();
    }

    private static void Check(int code, string call)
    {
        if (code != Success) throw new DistributedException($"{call} failed with MPI error {code}.");
    }

    private const int RtldNow = 2, RtldGlobal = 0x100;
    [DllImport("libc", EntryPoint = "dlopen")]
    private static extern nint dlopen(string file, int mode);
}
