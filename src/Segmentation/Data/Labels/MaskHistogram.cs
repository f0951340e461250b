using System.Globalization;

namespace Segmentation.Data;

/// <summary>
/// Pixel counts of each gray value over the masks scanned, with the files each value occurs in: what mask detection
/// decides from. Counts, not only the set of values, so that a stray pixel or a lossy save cannot become a class.
/// </summary>
internal sealed class MaskHistogram
{
    /// <summary>A label below this share of the labelled pixels is suspicious (1 in 10,000).</summary>
    public const double RareShare = 1e-4;
    /// <summary>More distinct labels than this are not taken as classes without an explicit class count.</summary>
    public const int MaxDetectedClasses = 64;

    private readonly object gate = new();
    private readonly Dictionary<int, (long Pixels, int Files, string First)> counts = new();
    private string? only1, only255, both; // a file holding 1 but not 255, 255 but not 1, and both

    /// <summary>The distinct values seen.</summary>
    public ICollection<int> Values { get { lock (gate) return counts.Keys.ToList(); } }

    /// <summary>Adds one mask's values.</summary>
    public void Add(int[] values, string file)
    {
        var local = new Dictionary<int, long>();
        foreach (var v in values) local[v] = local.GetValueOrDefault(v) + 1;
        bool has1 = local.ContainsKey(1), has255 = local.ContainsKey(255);
        lock (gate)
        {
            foreach (var (v, n) in local)
                counts[v] = counts.TryGetValue(v, out var c) ? (c.Pixels + n, c.Files + 1, c.First) : (n, 1, file);
            if (has1 && has255) both ??= file;
            else if (has1) only1 ??= file;
            else if (has255) only255 ??= file;
        }
    }

    /// <summary>
    /// True for binary masks (0 and 255, or 0 and 65535, in every file). Masks that hold 0/1 in some files and 0/255 in
    /// others, and never 1 and 255 together, are refused: binary masks saved two ways and class-index masks whose 255
    /// is the ignore label cannot be told apart, and guessing wrong drops the foreground of one set.
    /// </summary>
    public bool LooksBinary(int ignoreIndex, int? classes, string origin)
    {
        if (classes is not (null or 2)) return false;
        // an ignore label other than 255 is not a class value
        var values = Values.Where(v => v != ignoreIndex || v == 255).ToHashSet();
        if (values.Contains(255) && values.All(v => v is 0 or 255)) return true;
        if (values.Contains(65535) && values.All(v => v is 0 or 65535)) return true;
        if (values.All(v => v is 0 or 1 or 255) && only1 is not null && only255 is not null && both is null)
            throw new DataException($"{origin}: the masks mix two binary encodings: {only255} holds 0 and 255, "
                + $"{only1} holds 0 and 1, and no mask holds both 1 and 255. "
                + $"Read as class-index masks (255 = ignore index {ignoreIndex}) the foreground of the 0/255 masks "
                + $"would be dropped. Say which it is: --mask binary (1 and 255 are both the foreground) or --mask "
                + $"index (255 is ignored).", only255);
        return false;
    }

    /// <summary>
    /// Refuses labels that look accidental rather than like classes: values at a tiny share of the pixels (a stray
    /// pixel, or the smeared edges of a lossy save) and more distinct values than a class map has. The message names
    /// the values, where they occur, and what to do.
    /// </summary>
    public void RefuseAccidentalLabels(int ignoreIndex, string origin)
    {
        List<(int Value, long Pixels, int Files, string First)> labels;
        lock (gate) labels = counts.Where(kv => kv.Key != ignoreIndex)
            .Select(kv => (kv.Key, kv.Value.Pixels, kv.Value.Files, kv.Value.First)).OrderBy(x => x.Key).ToList();
        long labelled = labels.Sum(l => l.Pixels);
        if (labelled == 0) return; // nothing to learn: reported where the classes are counted
        var rare = labels.Where(l => l.Pixels < labelled * RareShare
            || (l.Pixels <= 4 && l.Files == 1 && labels.Count > 1)).ToList();
        if (rare.Count == 0 && labels.Count <= MaxDetectedClasses) return;

        string Share(long n) => (100.0 * n / labelled).ToString(n * 1000 < labelled ? "0.####" : "0.#",
            CultureInfo.InvariantCulture) + "%";
        // Dark and bright clusters with a few values smeared between them: a black-and-white mask after a lossy save.
        long dark = labels.Where(l => l.Value <= 32).Sum(l => l.Pixels), bright = labels.Where(l => l.Value >= 223)
            .Sum(l => l.Pixels);
        bool lossyBinary = labels.Count > 2 && labels[^1].Value >= 223 && dark >= labelled / 100
            && bright >= labelled / 100 && dark + bright >= labelled * 0.9;
        if (lossyBinary)
            throw new DataException($"{origin}: the masks look like binary masks saved lossily (JPEG?): gray values "
                + $"up to 32 cover {Share(dark)} of the pixels, values from 223 up {Share(bright)}, and "
                + $"{labels.Count(l => l.Value is > 32 and < 223)} values in between the rest (e.g. "
                + $"{Example(rare.Count > 0 ? rare : labels)}). "
                + "Read them as binary with a threshold (--mask binary --binary-threshold 128), or save the masks as "
                + "PNG.", labels[0].First);
        if (labels.Count > MaxDetectedClasses)
            throw new DataException($"{origin}: the masks hold {labels.Count} distinct gray values (e.g. "
                + $"{Example(labels)}): more than {MaxDetectedClasses}, so they look like photographs or lossy saves, "
                + $"not class indices. If they are classes, give the class count (--classes); for binary masks use "
                + $"--mask binary --binary-threshold 128.", labels[0].First);
        int max = labels[^1].Value;
        var present = labels.Select(l => l.Value).ToHashSet();
        var gaps = Enumerable.Range(0, max).Where(v => !present.Contains(v) && v != ignoreIndex).ToList();
        var listed = rare.Take(4).Select(r =>
            $"label {r.Value} occurs at {r.Pixels} pixel(s) in {r.Files} mask(s) ({r.First}), {Share(r.Pixels)} of "
                + $"the labelled pixels");
        var more = rare.Count > 4 ? $"; and {rare.Count - 4} more such labels" : "";
        throw new DataException($"{origin}: {string.Join("; ", listed)}{more}"
            + (gaps.Count > 0 ? $"; labels {Ranges(gaps)} never occur" : "")
            + $". Stray values would become classes ({max + 1} in all). Fix the masks, or give the class count "
            + $"(--classes) if these labels are real classes.", rare[0].First);
    }

    private static string Example(IEnumerable<(int Value, long Pixels, int Files, string First)> labels) =>
        string.Join(", ", labels.Take(3).Select(l => $"{l.Value} at {l.Pixels} pixel(s) in {l.First}"));

    private static string Ranges(List<int> values)
    {
        var parts = new List<string>();
        for (int i = 0; i < values.Count;)
        {
            int j = i;
            while (j + 1 < values.Count && values[j + 1] == values[j] + 1) j++;
            parts.Add(i == j ? $"{values[i]}" : $"{values[i]}-{values[j]}");
            i = j + 1;
        }
        return string.Join(", ", parts);
    }
}
