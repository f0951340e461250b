using System.Runtime.InteropServices;

namespace Segmentation.Training;

/// <summary>
/// glibc's malloc hands large blocks back to the OS after each training step (they are mmapped, or trimmed from the
/// heap top) and faults them in again on the next one. Keeping them makes a CPU training step much faster.
/// <see cref="Apply"/> does this through <c>mallopt</c>, on Linux with glibc only; it is process-wide, so the trainer
/// calls it once when <see cref="TrainerOptions.TuneAllocator"/> is on (the default). Setting the environment
/// variable <c>SEGMENTATION_MALLOC_TUNING=0</c> turns it off everywhere, and an explicit <c>GLIBC_TUNABLES</c>
/// with malloc settings is left to win.
/// </summary>
public static class AllocatorTuning
{
    private const int M_TRIM_THRESHOLD = -1;
    private const int M_MMAP_MAX = -4;
    private static int applied;

    /// <summary>What <see cref="Apply"/> did, for logs.</summary>
    public static string Status { get; private set; } = "not applied";

    /// <summary>
    /// Keeps freed memory in the process: no mmap for large blocks (M_MMAP_MAX = 0) and no trimming of the heap
    /// (M_TRIM_THRESHOLD = 16 GiB). Peak resident memory grows somewhat (freed blocks stay mapped for reuse).
    /// Returns true when the settings were applied now or before.
    /// </summary>
    public static bool Apply()
    {
        if (Interlocked.Exchange(ref applied, 1) == 1) return Status.StartsWith("applied", StringComparison.Ordinal);
        if (Environment.GetEnvironmentVariable("SEGMENTATION_MALLOC_TUNING") == "0") { Status = "off (SEGMENTATION_MALLOC_TUNING=0)"; return false; }
        if (!OperatingSystem.IsLinux()) { Status = "not applied (not Linux)"; return false; }
        if ((Environment.GetEnvironmentVariable("GLIBC_TUNABLES") ?? "").Contains("glibc.malloc", StringComparison.Ordinal))
        { Status = "not applied (GLIBC_TUNABLES sets malloc)"; return false; }
        try
        {
            bool ok = mallopt(M_MMAP_MAX, 0) == 1 & mallopt(M_TRIM_THRESHOLD, int.MaxValue) == 1;
            Status = ok ? "applied (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)" : "refused by mallopt";
            return ok;
        }
        catch (Exception e) when (e is DllNotFoundException || e is EntryPointNotFoundException)
        {
            Status = "not applied (no glibc mallopt)";
            return false;
        }
    }

    /// <summary>
    /// Hands the free memory that <see cref="Apply"/> keeps in the process back to the OS (<c>malloc_trim(0)</c>), so
    /// resident memory falls to what is live. The trainer calls it once per epoch: the next step faults its buffers in
    /// again once, instead of on every step as glibc's default would. Does nothing unless the tuning was applied.
    /// </summary>
    public static void ReleaseFreeMemory()
    {
        if (Volatile.Read(ref applied) == 0 || !Status.StartsWith("applied", StringComparison.Ordinal)) return;
        try { malloc_trim(0); }
        catch (Exception e) when (e is DllNotFoundException || e is EntryPointNotFoundException) { }
    }

    [DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int malloc_trim(nuint pad);

    [DllImport("libc", EntryPoint = "mallopt")]
    private static extern int mallopt(int param, int value);
}
