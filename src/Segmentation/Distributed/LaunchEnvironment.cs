namespace Segmentation.Distributed;

/// <summary>
/// Where this process sits in a distributed run, as its launcher told it through the environment: Open MPI's
/// <c>mpirun</c> (<c>OMPI_COMM_WORLD_RANK</c>, <c>_SIZE</c>, <c>_LOCAL_RANK</c>), torchrun and other schedulers that
/// set its variables (<c>RANK</c>, <c>WORLD_SIZE</c>, <c>LOCAL_RANK</c>, <c>MASTER_ADDR</c>, <c>MASTER_PORT</c>),
/// or Slurm's <c>srun</c> (<c>SLURM_PROCID</c>, <c>SLURM_NTASKS</c>, <c>SLURM_LOCALID</c>).
/// </summary>
/// <param name="Launcher">"mpirun", "torchrun" or "srun".</param>
/// <param name="Rank">This process's rank.</param>
/// <param name="WorldSize">Processes in the run.</param>
/// <param name="LocalRank">This process's rank on its machine.</param>
/// <param name="LocalWorldSize">Processes on this machine.</param>
/// <param name="MasterAddress">The rendezvous host (torchrun's MASTER_ADDR), if given.</param>
/// <param name="MasterPort">The rendezvous port (MASTER_PORT; 29500 when not given).</param>
public sealed record LaunchEnvironment(string Launcher, int Rank, int WorldSize, int LocalRank, int LocalWorldSize,
    string? MasterAddress, int MasterPort)
{
    /// <summary>Whether the processes form an MPI job (mpirun, or srun, whose Open MPI reads Slurm's PMI).</summary>
    public bool ByMpi => Launcher is "mpirun" or "srun";

    /// <summary>The environment of this process (null: not launched as part of a distributed run).</summary>
    public static LaunchEnvironment? Detect() => Detect(Environment.GetEnvironmentVariable);

    /// <summary>The same from any variable source (tests pass a dictionary).</summary>
    public static LaunchEnvironment? Detect(Func<string, string?> variable)
    {
        int? Int(string name)
        {
            var text = variable(name);
            if (text is null) return null;
            return int.TryParse(text, out var v) && v >= 0 ? v
                : throw new OptionsException($"The environment variable {name} is '{text}'; expected a whole number "
                    + "of 0 or more.");
        }
        string? master = variable("MASTER_ADDR");
        int port = Int("MASTER_PORT") ?? 29500;
        LaunchEnvironment? env = null;
        if (Int("OMPI_COMM_WORLD_SIZE") is { } ompiSize)
            env = new("mpirun", Int("OMPI_COMM_WORLD_RANK") ?? 0, ompiSize, Int("OMPI_COMM_WORLD_LOCAL_RANK") ?? 0,
                Int("OMPI_COMM_WORLD_LOCAL_SIZE") ?? ompiSize, master, port);
        else if (Int("WORLD_SIZE") is { } size)
            env = new("torchrun", Int("RANK") ?? throw new OptionsException("WORLD_SIZE is set but RANK is not; "
                + "a launcher that sets one sets both."), size, Int("LOCAL_RANK") ?? 0, Int("LOCAL_WORLD_SIZE") ?? size,
                master, port);
        else if (variable("SLURM_STEP_ID") is not null && Int("SLURM_NTASKS") is { } tasks && tasks > 1)
            env = new("srun", Int("SLURM_PROCID") ?? 0, tasks, Int("SLURM_LOCALID") ?? 0,
                Int("SLURM_NTASKS_PER_NODE") ?? tasks, master, port);
        if (env is null) return null;
        if (env.WorldSize < 1 || env.Rank >= env.WorldSize)
            throw new OptionsException($"{env.Launcher} says rank {env.Rank} of {env.WorldSize}; a rank is in [0, "
                + "world size).");
        return env;
    }
}
