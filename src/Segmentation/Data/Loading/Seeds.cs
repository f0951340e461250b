namespace Segmentation.Data;

/// <summary>
/// Derives seeds from (seed, epoch, position, ...) with SplitMix64. Unlike <see cref="HashCode"/>, which .NET
/// randomises per process, the result is the same in every process and release, so a data order, an augmentation
/// or a synthetic image can be reproduced by a later run (resume) or on another machine.
/// </summary>
internal static class Seeds
{
    /// <summary>A well-mixed 31-bit seed for <see cref="Random(int)"/> from the given values.</summary>
    public static int Mix(params ReadOnlySpan<int> values)
    {
        ulong h = 0x9E3779B97F4A7C15UL;
        foreach (var v in values) h = SplitMix(h ^ (uint)v);
        return (int)(h >> 33);
    }

    private static ulong SplitMix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
