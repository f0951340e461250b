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
    /// One thread per core that the last minute's load average leaves free (at least 1, at most the cores this process
    /// may use), and why, in words. The load is read from <c>/proc/loadavg</c>; where there is none, every core.
    /// </summary>
    public static (int Threads, string Reason) Auto()
    {
        int cores = Environment.ProcessorCount;
        var load = LoadAverage();
        if (load is not { } l)
            return (cores, $"{cores} core(s)");
        int free = Math.Clamp((int)Math.Floor(cores - l + 0.5), 1, cores);
        return (free, free == cores ? $"{cores} core(s), load {l:F1}"
            : $"{cores} core(s), load {l:F1}: {cores - free} busy with other work");
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
