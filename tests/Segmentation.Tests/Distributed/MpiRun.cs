using System.Diagnostics;
using System.Text;

namespace Segmentation.Tests.Distributed;

/// <summary>A test that needs Open MPI's mpirun (.ci/run installs it); skipped where it is absent.</summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute()
    {
        if (MpiRun.Mpirun is null) Skip = "Open MPI's mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)";
    }
}

/// <summary>Runs the segment tool (the copy beside the tests) as a child process, alone or under mpirun.</summary>
internal static class MpiRun
{
    public static readonly string? Mpirun = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')
        .Select(d => Path.Combine(d, "mpirun")).FirstOrDefault(File.Exists);

    public static string Segment => Path.Combine(AppContext.BaseDirectory, "segment.dll");

    /// <summary>Starts <paramref name="file"/>; the caller waits.</summary>
    public static (Process Process, StringBuilder Output) Start(string file, IEnumerable<string> args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true,
            UseShellExecute = false };
        foreach (var a in args) start.ArgumentList.Add(a);
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        start.Environment["SEGMENTATION_KERNEL_CACHE"] = "off";
        var output = new StringBuilder();
        var p = new Process { StartInfo = start };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return (p, output);
    }

    /// <summary>Runs to the end (at most <paramref name="timeoutSeconds"/>); returns the exit code and all
    /// output.</summary>
    public static (int Code, string Output) Run(string file, IEnumerable<string> args, int timeoutSeconds = 300)
    {
        var (p, output) = Start(file, args);
        using (p)
        {
            if (!p.WaitForExit(timeoutSeconds * 1000))
            {
                p.Kill(entireProcessTree: true);
                throw new TimeoutException($"{file} {string.Join(" ", args)} ran past {timeoutSeconds} s:\n{output}");
            }
            p.WaitForExit();
            lock (output) return (p.ExitCode, output.ToString());
        }
    }

    /// <summary>segment with <paramref name="args"/> in one process.</summary>
    public static (int Code, string Output) Segment1(params string[] args) =>
        Run("dotnet", new[] { Segment }.Concat(args));

    /// <summary>The processes whose environment says they are rank <paramref name="rank"/> of an MPI job started
    /// by the process <paramref name="launcher"/>.</summary>
    public static int[] RankProcesses(int launcher, int rank)
    {
        var found = new List<int>();
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid) || pid == launcher) continue;
            try
            {
                var env = File.ReadAllText(Path.Combine(dir, "environ")).Split('\0');
                if (env.Contains($"OMPI_COMM_WORLD_RANK={rank}") && IsDescendant(pid, launcher)) found.Add(pid);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return found.ToArray();
    }

    private static bool IsDescendant(int pid, int ancestor)
    {
        for (int p = pid, guard = 0; p > 1 && guard < 64; guard++)
        {
            var stat = File.ReadAllText($"/proc/{p}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            p = int.Parse(fields[1]);
            if (p == ancestor) return true;
        }
        return false;
    }
}
