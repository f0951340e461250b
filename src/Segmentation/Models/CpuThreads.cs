using System.Globalization;
using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>
/// How many threads libtorch computes with on the CPU (its intra-op pool, one per process). libtorch starts with one
/// per core; on a machine where other work already keeps cores busy that oversubscribes them, and a step can take
/// several times as long as at one thread. <see cref="Auto"/> counts the cores the machine's load leaves free.
/// </summary>
public static class CpuThreads
{
    /// <summary>
    /// One thread per core that other processes leave free now (at least 1, at most the cores this process may use),
    /// and why, in words. What is busy now is measured, not read from the load average: the one-minute average still
    /// counts a process that ended seconds ago (the tail of a finished build or run), and halved the threads of whole
    /// trainings. The machine's CPU time (<c>/proc/stat</c>) less this process's own (<c>/proc/self/stat</c>) is
    /// sampled
    /// over <see cref="SampleMilliseconds"/>; where /proc cannot be read, every core.
    /// </summary>
    public static (int Threads, string Reason) Auto()
    {
        int cores = Environment.ProcessorCount;
        if (BusyCores() is not { } busy)
            return (cores, $"{cores} core(s)");
        int free = Math.Clamp((int)Math.Floor(cores - busy + 0.5), 1, cores);
        return (free, free == cores ? $"{cores} core(s), {busy:F1} busy with other work now"
            : $"{cores} core(s): {busy:F1} busy with other work now");
    }

    /// <summary>How long <see cref="BusyCores"/> samples the machine.</summary>
    public const int SampleMilliseconds = 500;

    /// <summary>Cores other processes kept busy over the last <see cref="SampleMilliseconds"/>, or null where /proc
    /// cannot be read.</summary>
    public static double? BusyCores()
    {
        var before = (Machine: MachineTicks(), Own: OwnTicks());
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Thread.Sleep(SampleMilliseconds);
        var after = (Machine: MachineTicks(), Own: OwnTicks());
        if (before.Machine is not var (busy0, total0) || after.Machine is not var (busy1, total1)
            || before.Own is not { } own0 || after.Own is not { } own1 || total1 <= total0) return null;
        // ticks of all cores together: the share busy, times the cores, less this process's own share
        double share = (busy1 - busy0 - (own1 - own0)) / (double)(total1 - total0);
        return Math.Max(0, share * Environment.ProcessorCount);
    }

    /// <summary>Busy and total clock ticks of all cores since boot (<c>/proc/stat</c>'s cpu line).</summary>
    private static (long Busy, long Total)? MachineTicks()
    {
        try
        {
            var line = File.ReadLines("/proc/stat").FirstOrDefault(l => l.StartsWith("cpu ", StringComparison.Ordinal));
            if (line is null) return null;
            var v = line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
                .Select(t => long.Parse(t, CultureInfo.InvariantCulture)).ToArray();
            long idle = v[3] + (v.Length > 4 ? v[4] : 0); // idle and iowait
            long total = v.Take(Math.Min(v.Length, 8)).Sum(); // user..steal (guest time is counted in user)
            return (total - idle, total);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException
            or IndexOutOfRangeException or OverflowException) { return null; }
    }

    /// <summary>This process's user and system clock ticks (<c>/proc/self/stat</c>).</summary>
    private static long? OwnTicks()
    {
        try
        {
            var text = File.ReadAllText("/proc/self/stat");
            var fields = text[(text.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12],
                CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException
            or IndexOutOfRangeException or ArgumentOutOfRangeException or OverflowException) { return null; }
    }

    /// <summary>The one-minute load average (<c>/proc/loadavg</c>), or null where it cannot be read.</summary>
    public static double? LoadAverage()
    {
        try
        {
            var first = File.ReadAllText("/proc/loadavg").Split(' ')[0];
            return double.TryParse(first, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>Sets libtorch's CPU threads for this process (they are process-wide) when <paramref name="threads"/>
    /// is given; an error for less than 1.</summary>
    public static void Apply(int? threads)
    {
        if (threads is not { } t) return;
        if (t < 1) throw new OptionsException($"Threads is {t}; it must be at least 1.");
        if (get_num_threads() != t) set_num_threads(t);
    }
}
