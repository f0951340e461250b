using System.Runtime.InteropServices;

namespace Segmentation.Training;

/// <summary>
/// glibc's malloc hands large blocks back to the OS after each training step (they are mmapped, or trimmed from the
/// heap top) and faults them in again on the next one. Keeping them makes a CPU training step much faster.
/// <see cref="Apply"/> does this through <c>mallopt</c>, on Linux with glibc only; it is process-wide, so the trainer
/// calls it once when <see cref="TrainerOptions.ManageProcessMemory"/> is on (the CLI turns it on). Setting the
/// environment
/// variable <c>SEGMENTATION_MALLOC_TUNING=0</c> turns it off everywhere, and an explicit <c>GLIBC_TUNABLES</c>
/// with malloc settings is left to win.
/// </summary>
internal static class AllocatorTuning
{
    private const int M_TRIM_THRESHOLD = -1;
    private const int M_MMAP_MAX = -4;

    /// <summary>mallopt settings are process-wide and made once: the outcome is computed once, thread-safely, and never
    /// changes.</summary>
    private static readonly Lazy<(bool Applied, string Status)> outcome =
        new(Tune, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>What <see cref="Apply"/> did ("not applied" before it ran), for logs.</summary>
    public static string Status => outcome.IsValueCreated ? outcome.Value.Status : "not applied";

    /// <summary>
    /// Keeps freed memory in the process: no mmap for large blocks (M_MMAP_MAX = 0) and no trimming of the heap
    /// (M_TRIM_THRESHOLD = 2 GiB). Peak resident memory grows somewhat (freed blocks stay mapped for reuse).
    /// Returns true when the settings were applied now or before.
    /// </summary>
    public static bool Apply() => outcome.Value.Applied;

    private static (bool, string) Tune()
    {
        if (Environment.GetEnvironmentVariable("SEGMENTATION_MALLOC_TUNING") == "0")
            return (false, "off (SEGMENTATION_MALLOC_TUNING=0)");
        if (!OperatingSystem.IsLinux()) return (false, "not applied (not Linux)");
        if ((Environment.GetEnvironmentVariable("GLIBC_TUNABLES") ?? "").Contains("glibc.malloc",
            StringComparison.Ordinal))
            return (false, "not applied (GLIBC_TUNABLES sets malloc)");
        try
        {
            bool ok = mallopt(M_MMAP_MAX, 0) == 1 & mallopt(M_TRIM_THRESHOLD, int.MaxValue) == 1;
            return (ok, ok ? "applied (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)" : "refused by mallopt");
        }
        catch (Exception e) when (e is DllNotFoundException || e is EntryPointNotFoundException)
        {
            return (false, "not applied (no glibc mallopt)");
        }
    }

    /// <summary>
    /// Hands the free memory that <see cref="Apply"/> keeps in the process back to the OS (<c>malloc_trim(0)</c>), so
    /// resident memory falls to what is live. The trainer calls it once per epoch: the next step faults its buffers in
    /// again once, instead of on every step as glibc's default would. Does nothing unless the tuning was applied.
    /// </summary>
    public static void ReleaseFreeMemory()
    {
        if (!outcome.IsValueCreated || !outcome.Value.Applied) return;
        try { malloc_trim(0); }
        catch (Exception e) when (e is DllNotFoundException || e is EntryPointNotFoundException) { }
    }

    [DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int malloc_trim(nuint pad);

    [DllImport("libc", EntryPoint = "mallopt")]
    private static extern int mallopt(int param, int value);
}
