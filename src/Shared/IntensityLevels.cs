namespace Segmentation.Shared;

/// <summary>
/// Per-image intensity normalisation, computed on the decoded pixels of the whole image (before any crop), the same
/// way by the TorchSharp side (training, evaluation, prediction) and by <c>Segmentation.Onnx</c>: one copy of the
/// rule, compiled into both.
/// </summary>
/// <remarks>
/// A scheme turns an image into an offset and a scale, both in units of the full scale (255 for 8-bit samples, 65535
/// for 16-bit ones), so that the model sees <c>((pixel / full - offset) / scale - mean[c]) / std[c]</c> (the
/// per-channel mean and std come after, and are 0 and 1
/// for the per-image schemes). The statistics are taken over every channel at once, so a colour image keeps its
/// colour balance (StarDist's <c>axis_norm=(0,1,2)</c>).
/// <list type="bullet">
/// <item><c>fixed</c>: offset 0, scale 1 (only the per-channel mean and std).</item>
/// <item><c>percentile LOW HIGH</c>: StarDist's <c>normalize(x, 1, 99.8)</c>: offset the LOW-th percentile, scale the
/// HIGH-th less the LOW-th; percentiles as numpy's default (linear between the two nearest ranks); not clipped.</item>
/// <item><c>zscore</c>: nnU-Net's per-image z-score: offset the mean, scale the standard deviation.</item>
/// </list>
/// The scale is at least one gray level (1 / full scale), so a flat image does not divide by zero.
/// </remarks>
internal static class IntensityLevels
{
    /// <summary>The scheme names as checkpoints and ONNX metadata record them.</summary>
    public const string Fixed = "fixed", Percentile = "percentile", ZScore = "zscore";

    /// <summary>StarDist's defaults.</summary>
    public const double DefaultLow = 1, DefaultHigh = 99.8;

    /// <summary>How many pixels of each 8-bit value the image holds, over all channels.</summary>
    public static long[] Histogram(ReadOnlySpan<byte> pixels)
    {
        // four partial histograms: consecutive equal bytes (flat backgrounds) would otherwise serialise on one counter
        var h = new long[4 * 256];
        int i = 0;
        for (; i + 4 <= pixels.Length; i += 4)
        {
            h[pixels[i]]++; h[256 + pixels[i + 1]]++; h[512 + pixels[i + 2]]++; h[768 + pixels[i + 3]]++;
        }
        for (; i < pixels.Length; i++) h[pixels[i]]++;
        var total = new long[256];
        for (int v = 0; v < 256; v++) total[v] = h[v] + h[256 + v] + h[512 + v] + h[768 + v];
        return total;
    }

    /// <summary>How many samples of each 16-bit value the image holds, over all channels; as long as the largest
    /// value present needs (at least 256), so that 12-bit microscopy keeps a 4096-entry histogram.</summary>
    public static long[] Histogram(ReadOnlySpan<ushort> samples)
    {
        int max = 255;
        foreach (var v in samples) if (v > max) max = v;
        var h = new long[max + 1];
        foreach (var v in samples) h[v]++;
        return h;
    }

    /// <summary>The <paramref name="q"/>-th percentile (0 to 100) of the values a histogram counts, as numpy's
    /// <c>percentile</c> computes it by default: rank q/100 x (n - 1), linear between the two nearest values.</summary>
    public static double PercentileOf(long[] histogram, double q)
    {
        long n = 0;
        foreach (var c in histogram) n += c;
        if (n == 0) return 0;
        double rank = q / 100 * (n - 1);
        long below = (long)Math.Floor(rank);
        double frac = rank - below;
        int lo = ValueAtRank(histogram, below), hi = frac > 0 ? ValueAtRank(histogram, below + 1) : lo;
        return lo + frac * (hi - lo);
    }

    /// <summary>The value of the sorted pixels at 0-based <paramref name="rank"/>.</summary>
    private static int ValueAtRank(long[] histogram, long rank)
    {
        long seen = 0;
        for (int v = 0; v < histogram.Length; v++)
        {
            seen += histogram[v];
            if (seen > rank) return v;
        }
        return histogram.Length - 1;
    }

    /// <summary>Mean and (population) standard deviation of the values a histogram counts.</summary>
    public static (double Mean, double Std) MeanStd(long[] histogram)
    {
        double n = 0, sum = 0, squares = 0;
        for (int v = 0; v < histogram.Length; v++)
        {
            n += histogram[v]; sum += (double)v * histogram[v]; squares += (double)v * v * histogram[v];
        }
        if (n == 0) return (0, 0);
        double mean = sum / n;
        return (mean, Math.Sqrt(Math.Max(0, squares / n - mean * mean)));
    }

    /// <summary>The offset and scale (units of <paramref name="fullScale"/>: 255 for 8-bit samples, 65535 for 16-bit)
    /// of an image under <paramref name="scheme"/>, from its histogram.</summary>
    public static (float Offset, float Scale) Of(string scheme, long[] histogram, double low = DefaultLow,
        double high = DefaultHigh, int fullScale = 255)
    {
        switch (scheme)
        {
            case Fixed: return (0f, 1f);
            case Percentile:
            {
                double lo = PercentileOf(histogram, low), hi = PercentileOf(histogram, high);
                return ((float)(lo / fullScale), (float)(Math.Max(hi - lo, 1) / fullScale));
            }
            case ZScore:
            {
                var (mean, std) = MeanStd(histogram);
                return ((float)(mean / fullScale), (float)(Math.Max(std, 1) / fullScale));
            }
            default: throw new ArgumentException($"Unknown intensity scheme '{scheme}' ({Fixed}, {Percentile}, "
                + $"{ZScore}).", nameof(scheme));
        }
    }

    /// <summary>The offset and scale of 8-bit pixels (any channel count) under <paramref name="scheme"/>.</summary>
    public static (float Offset, float Scale) Of(string scheme, ReadOnlySpan<byte> pixels, double low = DefaultLow,
        double high = DefaultHigh) => scheme == Fixed ? (0f, 1f) : Of(scheme, Histogram(pixels), low, high);

    /// <summary>The offset and scale of 16-bit samples (any channel count) under <paramref name="scheme"/>, in units
    /// of 65535.</summary>
    public static (float Offset, float Scale) Of(string scheme, ReadOnlySpan<ushort> samples,
        double low = DefaultLow, double high = DefaultHigh) => scheme == Fixed ? (0f, 1f)
        : Of(scheme, Histogram(samples), low, high, ushort.MaxValue);

    /// <summary>A scheme as ONNX metadata writes it: <c>fixed</c>, <c>zscore</c>, or <c>percentile 1
    /// 99.8</c>.</summary>
    public static string Format(string scheme, double low, double high) => scheme == Percentile
        ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{Percentile} {low:R} {high:R}") : scheme;

    /// <summary>Reads what <see cref="Format"/> wrote; a <see cref="FormatException"/> for anything else.</summary>
    public static (string Scheme, double Low, double High) Parse(string text)
    {
        var parts = text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (parts is [Fixed] or [ZScore]) return (parts[0], DefaultLow, DefaultHigh);
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        if (parts is [Percentile, var l, var h]
            && double.TryParse(l, System.Globalization.NumberStyles.Float, inv, out var low)
            && double.TryParse(h, System.Globalization.NumberStyles.Float, inv, out var high)
            && low >= 0 && high <= 100 && low < high)
            return (Percentile, low, high);
        throw new FormatException($"expected '{Fixed}', '{ZScore}' or '{Percentile} LOW HIGH' with 0 <= LOW < HIGH "
            + "<= 100");
    }
}
