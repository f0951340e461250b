using TorchSharp;
using System.Diagnostics;
using static TorchSharp.torch;

namespace Segmentation.Distributed;

/// <summary>A process of a distributed run could not reach the others, or they it.</summary>
public class DistributedException : SegmentationException
{
    /// <summary>Creates the exception.</summary>
    public DistributedException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>
/// The processes of one data-parallel run and the collectives between them, as PyTorch's <c>ProcessGroup</c>: each
/// process has a <see cref="Rank"/> in [0, <see cref="WorldSize"/>) and all of them call the same collectives in the
/// same order. Two engines sit behind it: MPI (<see cref="Mpi"/>: CPU tensors, and the start-up of every run that
/// <c>mpirun</c> launched) and NCCL (<see cref="Nccl"/>: CUDA tensors). A collective that gets no answer within
/// <see cref="Timeout"/> ends with a <see cref="DistributedException"/> naming this rank and the operation, never a
/// hang.
/// </summary>
public abstract class ProcessGroup : IDisposable
{
    /// <summary>This process's number, 0 to <see cref="WorldSize"/> - 1; rank 0 writes the run folder.</summary>
    public int Rank { get; protected init; }
    /// <summary>Processes in the run.</summary>
    public int WorldSize { get; protected init; } = 1;
    /// <summary>This process's number among those on its machine (it picks the GPU, cuda:LocalRank).</summary>
    public int LocalRank { get; protected init; }
    /// <summary>How long a collective may wait for the other processes before it gives up.</summary>
    public TimeSpan Timeout { get; init; } = DefaultTimeout;
    /// <summary>"mpi" or "nccl".</summary>
    public abstract string Backend { get; }
    /// <summary>Whether this is rank 0, the process that writes files and reports.</summary>
    public bool IsMain => Rank == 0;

    /// <summary>The default of <see cref="Timeout"/>: five minutes, long enough for a slow validation pass or a
    /// checkpoint on a network drive.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(5);

    /// <summary>Sums <paramref name="tensor"/> over every process, in place (contiguous float32, float64 or int64;
    /// on the CPU for MPI, on CUDA for NCCL; the other device is staged through a copy).</summary>
    /// <param name="tensor">The values; every rank passes the same shape and type.</param>
    /// <param name="what">What is being reduced, for the timeout's message ("gradients of step 12").</param>
    public abstract void AllReduce(Tensor tensor, string what = "all-reduce");

    /// <summary>Overwrites <paramref name="tensor"/> on every rank with rank <paramref name="root"/>'s
    /// values.</summary>
    public abstract void Broadcast(Tensor tensor, int root = 0, string what = "broadcast");

    /// <summary>Sums host values over every process, in place (counts up to 2^53 stay exact).</summary>
    public void AllReduce(double[] values, string what = "all-reduce") =>
        OnHostValues(values, t => AllReduce(t, what));

    /// <summary>Overwrites host values on every rank with rank <paramref name="root"/>'s.</summary>
    public void Broadcast(double[] values, string what = "broadcast", int root = 0) =>
        OnHostValues(values, t => Broadcast(t, root, what));

    /// <summary>Runs a collective on a float64 tensor of <paramref name="values"/> and copies the result
    /// back.</summary>
    private static void OnHostValues(double[] values, Action<Tensor> collective)
    {
        if (values.Length == 0) return;
        using var scope = NewDisposeScope();
        var t = tensor(values, ScalarType.Float64);
        collective(t);
        t.data<double>().CopyTo(values, 0);
    }

    /// <summary>Waits until every process has arrived here.</summary>
    public void Barrier(string what = "barrier") => AllReduce(new double[] { 1 }, what);

    /// <summary>Text for messages: "rank 1 of 2".</summary>
    public override string ToString() => $"rank {Rank} of {WorldSize} ({Backend})";

    /// <summary>
    /// Ends this process's part in a run that finished normally (MPI_Finalize waits for every process to get here).
    /// After an error, dispose without closing: the process then leaves at once and the launcher ends the others.
    /// </summary>
    public virtual void Close() { }

    /// <summary>Releases the engine's resources.</summary>
    public virtual void Dispose() => GC.SuppressFinalize(this);

    /// <summary>
    /// The process group of an MPI job (started by <c>mpirun -np N</c>, or <c>srun</c> with an Open MPI built for
    /// Slurm): CPU tensors go through MPI itself, CUDA tensors through a copy to the host.
    /// </summary>
    public static ProcessGroup Mpi(TimeSpan? timeout = null) => new MpiProcessGroup(timeout ?? DefaultTimeout);

    /// <summary>
    /// A NCCL process group for CUDA tensors on cuda:<paramref name="localRank"/>: NCCL's unique id goes from rank 0 to
    /// the others through MPI (when this is an MPI job) or through a TCP rendezvous at
    /// <paramref name="masterAddress"/>:<paramref name="masterPort"/> (torchrun's MASTER_ADDR and MASTER_PORT).
    /// </summary>
    public static ProcessGroup Nccl(int rank, int worldSize, int localRank, string? masterAddress = null,
        int masterPort = 29500, TimeSpan? timeout = null) =>
        new NcclProcessGroup(rank, worldSize, localRank, masterAddress, masterPort, timeout ?? DefaultTimeout);

    /// <summary>
    /// The process group the environment describes (<see cref="LaunchEnvironment.Detect()"/>: mpirun, torchrun's
    /// variables, Slurm's srun), on <paramref name="device"/>'s engine (<paramref name="backend"/> "auto": NCCL for
    /// CUDA, MPI for the CPU); null when this process was not launched as part of a distributed run.
    /// </summary>
    public static ProcessGroup? FromEnvironment(Device device, string backend = "auto", TimeSpan? timeout = null)
    {
        var env = LaunchEnvironment.Detect();
        if (env is null) return null;
        return Create(env, device, backend, timeout ?? DefaultTimeout);
    }

    internal static ProcessGroup Create(LaunchEnvironment env, Device device, string backend, TimeSpan timeout)
    {
        string chosen = backend switch
        {
            "auto" => device.type == DeviceType.CUDA ? "nccl" : "mpi",
            "mpi" or "nccl" => backend,
            _ => throw new OptionsException($"Distributed backend '{backend}' is not known; use auto, mpi or nccl."),
        };
        if (chosen == "nccl" && device.type != DeviceType.CUDA)
            throw new OptionsException($"NCCL reduces CUDA tensors; the device is {device}. Use the MPI backend on "
                + "the CPU (--dist-backend mpi, or auto).");
        if (chosen == "mpi" && !env.ByMpi)
            throw new OptionsException($"This process was started by {env.Launcher} (rank {env.Rank} of "
                + $"{env.WorldSize}), which gives no MPI job: on the CPU the processes talk through MPI, so start them "
                + "with mpirun -np N (or segment train --nproc N); torchrun's variables serve the NCCL backend on "
                + "GPUs.");
        var group = chosen == "mpi" ? (ProcessGroup)new MpiProcessGroup(timeout)
            : new NcclProcessGroup(env.Rank, env.WorldSize, env.LocalRank, env.MasterAddress, env.MasterPort, timeout,
                useMpi: env.ByMpi);
        if (group.Rank != env.Rank || group.WorldSize != env.WorldSize)
            throw new DistributedException($"{env.Launcher} says rank {env.Rank} of {env.WorldSize}, MPI says rank "
                + $"{group.Rank} of {group.WorldSize}: the processes were started by two different launchers.");
        return group;
    }

    /// <summary>Waits for <paramref name="done"/> until <see cref="Timeout"/>, spinning (the wait drives MPI's
    /// progress); throws naming the operation when it passes.</summary>
    private protected void WaitFor(Func<bool> done, string what)
    {
        var clock = Stopwatch.StartNew();
        long spins = 0;
        while (!done())
        {
            if (clock.Elapsed > Timeout)
                throw new DistributedException($"{this}: {what} got no answer from the other process(es) within "
                    + $"{Timeout.TotalSeconds:0} s; a process of the run died or hangs (the launcher's log names a "
                    + "process that died).");
            if (++spins < 200_000 || clock.ElapsedMilliseconds < 1000) Thread.Yield(); else Thread.Sleep(1);
        }
    }
}
