using System.Diagnostics;

namespace Segmentation.Models;

/// <summary>
/// Where a training step's time goes, by part: while <see cref="Record"/> runs an action on this thread, each <see
/// cref="Time"/> scope adds its wall time to its part's total (a part may hold others: the pixel decoder's forward
/// holds its deformable sampling). Outside a recording a scope costs one thread-static read. CPU kernels run on the
/// calling thread, so the wall time of a scope is its work; on a GPU a scope would time the launches only.
/// </summary>
internal static class StepProfile
{
    [ThreadStatic] private static Dictionary<string, double>? seconds;

    /// <summary>A scope that adds its time to <paramref name="part"/> while a recording runs (nothing
    /// otherwise).</summary>
    public static Scope Time(string part) => seconds is null ? default : new Scope(part, Stopwatch.GetTimestamp());

    /// <summary>Runs <paramref name="action"/> and returns the seconds of each part it timed.</summary>
    public static Dictionary<string, double> Record(Action action)
    {
        var outer = seconds;
        seconds = new Dictionary<string, double>(StringComparer.Ordinal);
        try
        {
            action();
            return seconds;
        }
        finally { seconds = outer; }
    }

    /// <summary>One timed scope.</summary>
    public readonly struct Scope(string? part, long start) : IDisposable
    {
        /// <inheritdoc />
        public void Dispose()
        {
            if (part is null || seconds is not { } totals) return;
            totals[part] = totals.GetValueOrDefault(part) + Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
    }
}
