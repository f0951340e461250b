using System.Diagnostics;
using Segmentation.Distributed;
using Segmentation.Models;
using Segmentation.Training;

namespace Segmentation.Cli;

/// <summary>
/// How <c>segment train</c> becomes one process of a data-parallel run: <c>--nproc N</c> starts N copies of itself
/// under Open MPI's <c>mpirun</c>; a process that a launcher started (mpirun, torchrun, srun) joins the run its
/// variables describe.
/// </summary>
internal static class DistributedLaunch
{
    /// <summary>
    /// <c>--nproc N</c> (N above 1) outside any launcher: runs this same command in N processes under mpirun and
    /// returns its exit code; null when there is nothing to start (no --nproc, or already under a launcher).
    /// </summary>
    public static int? Relaunch(int? processes, int? batch = null)
    {
        if (processes is null || LaunchEnvironment.Detect() is not null) return null;
        int cores = Environment.ProcessorCount;
        if (processes < 1 || processes > cores)
            throw new OptionsException($"--nproc is {processes}; this machine has {cores} core(s), and each process "
                + $"needs one: give 1 to {cores}.");
        if (processes == 1) return null;
        if (batch is { } b && b % processes != 0)
            throw new OptionsException($"--batch-size {b} is the global batch of {processes} processes and must divide "
                + $"among them; use a multiple of {processes}.");
        var mpirun = FindOnPath("mpirun") ?? throw new OptionsException("--nproc starts its processes with Open MPI's "
            + "mpirun, which is not installed (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev).");
        // mpirun dies with this process (a killed launcher must not leave its ranks training): setpriv's parent-death
        // signal, SIGTERM, which mpirun passes on to the ranks
        var setpriv = FindOnPath("setpriv");
        var start = new ProcessStartInfo(setpriv ?? mpirun) { UseShellExecute = false };
        if (setpriv is not null) foreach (var a in new[] { "--pdeathsig", "TERM", mpirun }) start.ArgumentList.Add(a);
        foreach (var a in MpirunArguments(processes.Value)) start.ArgumentList.Add(a);
        var own = OwnCommandLine().ToList();
        foreach (var a in own) start.ArgumentList.Add(a);
        if (!own.Any(a => a == "--out" || a.StartsWith("--out=", StringComparison.Ordinal)))
        {
            // every process must write to, or read from, the same run folder: name the default once, here
            start.ArgumentList.Add("--out");
            start.ArgumentList.Add(Path.Combine("runs", DateTime.Now.ToString("yyyyMMdd-HHmmss",
                System.Globalization.CultureInfo.InvariantCulture)));
        }
        // mpirun gives each rank a pseudo-terminal for its output, and .NET greets a terminal with keypad codes
        // (ESC[?1h ESC=) that would land before --json's line: the ranks' terminal is a dumb one
        start.Environment["TERM"] = "dumb";
        if (Environment.UserName == "root")
        {
            // Open MPI refuses to run as root unless told twice; containers often run as root
            start.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
            start.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        }
        using var child = Process.Start(start) ?? throw new SegmentationException($"{mpirun} did not start.");
        child.WaitForExit();
        return child.ExitCode;
    }

    /// <summary>mpirun's flags for N processes on this machine: no core binding (each process runs libtorch's own
    /// threads), and as many processes as asked whatever the slot count.</summary>
    internal static string[] MpirunArguments(int processes) =>
        new[] { "-np", processes.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind-to", "none",
            "--oversubscribe" };

    /// <summary>This process's command line without --nproc: the executable (and the tool's .dll under
    /// dotnet) and the arguments.</summary>
    private static IEnumerable<string> OwnCommandLine()
    {
        var args = Environment.GetCommandLineArgs();
        var exe = Environment.ProcessPath ?? throw new SegmentationException("This process's executable is unknown.");
        yield return exe;
        if (Path.GetFileNameWithoutExtension(exe) == "dotnet") yield return args[0];
        for (int i = 1; i < args.Length; i++)
        {
            if (args[i] == "--nproc") { i++; continue; }
            if (args[i].StartsWith("--nproc=", StringComparison.Ordinal)) continue;
            yield return args[i];
        }
    }

    private static string? FindOnPath(string name) => (Environment.GetEnvironmentVariable("PATH") ?? "")
        .Split(':', StringSplitOptions.RemoveEmptyEntries).Select(d => Path.Combine(d, name))
            .FirstOrDefault(File.Exists);

    /// <summary>The process group of a launched process (null: not launched as part of a run).</summary>
    public static ProcessGroup? Join(string device, string backend, double timeoutSeconds)
    {
        if (!(timeoutSeconds > 0))
            throw new OptionsException($"--dist-timeout is {timeoutSeconds}; it must be a positive number of seconds.");
        var env = LaunchEnvironment.Detect();
        if (env is null) return null;
        var resolved = Devices.Resolve(OwnDevice(device, env));
        return ProcessGroup.Create(env, resolved, backend, TimeSpan.FromSeconds(timeoutSeconds));
    }

    /// <summary>cuda becomes cuda:LOCAL_RANK, one GPU per process; an explicit cuda:N is kept.</summary>
    private static string OwnDevice(string device, LaunchEnvironment env)
    {
        var d = Devices.Resolve(device);
        return d.type == TorchSharp.DeviceType.CUDA && !device.Contains(':') ? $"cuda:{env.LocalRank}" : device;
    }

    /// <summary>The trainer's options for this process: the group, its GPU, and on the CPU the machine's cores shared
    /// among its processes unless --threads says otherwise.</summary>
    public static TrainerOptions Apply(TrainerOptions options, TrainerOptions asked, ProcessGroup group, TextWriter log)
    {
        var env = LaunchEnvironment.Detect()!;
        options = options with { Device = OwnDevice(options.Device, env),
            Distribution = options.Distribution with { ProcessGroup = group } };
        if (asked.Threads is null && Devices.Resolve(options.Device).type == TorchSharp.DeviceType.CPU)
        {
            int threads = Math.Max(1, Environment.ProcessorCount / Math.Max(1, env.LocalWorldSize));
            log.WriteLine($"threads: {threads} per process ({Environment.ProcessorCount} cores, {env.LocalWorldSize} "
                + "processes on this machine)");
            options = options with { Threads = threads };
        }
        log.WriteLine($"global batch {options.BatchSize}: {options.BatchSize / group.WorldSize} per process"
            + (options.Distribution.SyncBatchNorm ? ", batch norm synchronised" : ""));
        return options;
    }
}
