using System.Collections.Concurrent;

namespace Segmentation.Data;

/// <summary>
/// Works out what a folder's masks mean (encoding, classes, names, colours, image channels) from the masks themselves
/// and the options, and says how in one line. Every mask is scanned, up to 1000 of them (evenly spaced), in parallel.
/// </summary>
internal static class LabelDetection
{
    /// <summary>What the scan of the masks found: the kinds of mask files (with one file of each) and the gray
    /// values.</summary>
    private sealed record Scan(ConcurrentDictionary<RawMaskKind, string> Kinds, MaskHistogram Histogram, int Scanned,
        bool Done)
    {
        /// <summary>Colours seen in colour masks (packed RGB), up to <see cref="MaxColours"/>, for the message that
        /// asks for a palette.</summary>
        public ConcurrentDictionary<int, byte> Colours { get; } = new();
        public const int MaxColours = 64;
    }

    /// <summary>The description of <paramref name="pairs"/>' labels, and the report line that says how it was
    /// found.</summary>
    public static (DatasetDescription, string) Detect(List<(string Image, string Mask, string Stem)> pairs,
        DatasetOptions o, ImageReader reader, string origin)
    {
        if (o.Description is { } given)
        {
            given.Validate();
            return (given,
                $"{origin}: {pairs.Count} pairs; labels as given: {given.Encoding}, {given.Classes} classes, ignore "
                    + $"index {given.IgnoreIndex}");
        }
        if (o.IgnoreIndex < 0 || o.IgnoreIndex > 255)
            throw new OptionsException($"Ignore index {o.IgnoreIndex} must be between 0 and 255.");
        if (o.Classes is < 1 or > 255)
            throw new OptionsException($"Class count {o.Classes} must be between 1 and 255.");
        var survey = o.InChannels is null ? ImageChannels.Of(pairs.Select(p => p.Image).ToList(), reader) : null;
        int channels = o.InChannels ?? survey!.Channels;
        IReadOnlyList<ClassPalette.Entry>? palette = o.PaletteFile is null ? null : ClassPalette.Load(o.PaletteFile);
        var scan = ScanMasks(pairs, o, palette, reader);
        var encoding = ChooseEncoding(o, palette, scan, origin);
        var (d, detail) = Describe(encoding, o, palette, scan, origin);
        d = Named(d, o, palette, encoding) with { IgnoreIndex = o.IgnoreIndex, InChannels = channels };
        try { d.Validate(); }
        catch (OptionsException e) { throw new DataException($"{origin}: {e.Message}", origin); }

        string how = o.Encoding == MaskEncoding.Auto ? "detected" : "given";
        string scannedText = scan.Done ? $"; scanned {scan.Scanned} of {pairs.Count} masks" : "";
        var report =
            $"{origin}: {pairs.Count} pairs; masks {how}: {detail}; {d.Classes} classes "
                + $"({string.Join(", ", d.ClassNames.Take(12))}{(d.Classes > 12 ? ", ..." : "")}); ignore index "
                + $"{d.IgnoreIndex}; {survey?.Describe() ?? $"{channels}-channel images (--in-channels)"}{scannedText}";
        return (d, report);
    }

    /// <summary>Reads the masks when the encoding or the class count has to be found from them.</summary>
    private static Scan ScanMasks(List<(string Image, string Mask, string Stem)> pairs, DatasetOptions o,
        IReadOnlyList<ClassPalette.Entry>? palette, ImageReader reader)
    {
        // Every mask: a sample can miss a label (0/1 masks alternating by file looked like one class when every 10th
        // was read), and reading a mask's histogram is cheap next to the full data check that decodes them all anyway.
        var scanned = Enumerable.Range(0, pairs.Count).ToList();
        var kinds = new ConcurrentDictionary<RawMaskKind, string>();
        var histogram = new MaskHistogram();
        bool needValues = o.Encoding is MaskEncoding.Auto or MaskEncoding.Index or MaskEncoding.IndexedPng
            && o.Classes is null && palette is null;
        if (o.Encoding != MaskEncoding.Auto && !needValues) return new Scan(kinds, histogram, 0, false);
        var scan = new Scan(kinds, histogram, scanned.Count, true);
        try
        {
            Parallel.ForEach(scanned, i =>
            {
                var raw = reader.ReadMask(pairs[i].Mask);
                kinds.TryAdd(raw.Kind, pairs[i].Mask);
                if (raw.Kind != RawMaskKind.Rgb) histogram.Add(raw.Values, pairs[i].Mask);
                else if (scan.Colours.Count < Scan.MaxColours)
                    foreach (int colour in raw.Values.Distinct().Take(Scan.MaxColours)) scan.Colours.TryAdd(colour, 0);
            });
        }
        catch (AggregateException e) when (e.InnerExceptions.OfType<DataException>().Any())
        {
            // The caller gets the file's own error, not the parallel loop's wrapper.
            var bad = e.InnerExceptions.OfType<DataException>().OrderBy(x => x.FilePath, StringComparer.Ordinal)
                .ToList();
            if (bad.Count == 1) throw bad[0];
            var others = string.Join(", ", bad.Skip(1).Take(5).Select(x => Path.GetFileName(x.FilePath)))
                + (bad.Count > 6 ? ", ..." : "");
            throw new DataException($"{bad.Count} masks cannot be read: {bad[0].Message} (and {others})",
                bad[0].FilePath, e);
        }
        return scan;
    }

    /// <summary>The encoding asked for, or the one the masks show; refuses colour masks read as gray and stray
    /// labels.</summary>
    private static MaskEncoding ChooseEncoding(DatasetOptions o, IReadOnlyList<ClassPalette.Entry>? palette, Scan scan,
        string origin)
    {
        var kinds = scan.Kinds;
        var encoding = o.Encoding;
        if (encoding == MaskEncoding.Auto)
        {
            if (kinds.ContainsKey(RawMaskKind.Rgb) || palette is not null) encoding = MaskEncoding.Palette;
            else if (kinds.ContainsKey(RawMaskKind.Indexed) && !kinds.ContainsKey(RawMaskKind.Gray)) encoding =
                MaskEncoding.IndexedPng;
            else encoding = o.BinaryThreshold is not null || scan.Histogram.LooksBinary(o.IgnoreIndex, o.Classes,
                origin) ? MaskEncoding.Binary : MaskEncoding.Index;
        }
        if (encoding is MaskEncoding.Index or MaskEncoding.IndexedPng or MaskEncoding.Binary
            && kinds.TryGetValue(RawMaskKind.Rgb, out var colourMask))
            throw new DataException($"{colourMask}: the mask is a colour image, but the mask encoding is "
                + $"{encoding.ToString().ToLowerInvariant()}, which reads gray values; for colour masks use the "
                + $"palette encoding with a palette file (--mask palette --palette classes.csv).", colourMask);
        if (encoding is MaskEncoding.Index or MaskEncoding.IndexedPng && o.Classes is null && palette is null)
            scan.Histogram.RefuseAccidentalLabels(o.IgnoreIndex, origin);
        return encoding;
    }

    /// <summary>The description for <paramref name="encoding"/> (classes, colour map, threshold) and how to say
    /// it.</summary>
    private static (DatasetDescription, string) Describe(MaskEncoding encoding, DatasetOptions o,
        IReadOnlyList<ClassPalette.Entry>? palette, Scan scan, string origin)
    {
        var grayValues = scan.Histogram.Values;
        switch (encoding)
        {
            case MaskEncoding.Palette:
                if (palette is null)
                {
                    var colours = scan.Colours.Keys.Order().Select(c => $"#{c:x6}").ToList();
                    throw new DataException($"{scan.Kinds.GetValueOrDefault(RawMaskKind.Rgb, origin)}: the masks are "
                        + $"colour images; give a palette file that maps each colour to a class (--palette "
                        + $"classes.csv, DatasetOptions.PaletteFile; CSV: index,name,r,g,b)."
                        + (colours.Count == 0 ? "" : $" Colours found: {string.Join(", ", colours.Take(16))}"
                            + $"{(colours.Count > 16 ? ", ..." : "")}."),
                        scan.Kinds.GetValueOrDefault(RawMaskKind.Rgb));
                }
                var d = ClassPalette.ToDescription(palette, o.IgnoreIndex, o.PaletteFile!);
                return (d, $"RGB palette from {Path.GetFileName(o.PaletteFile)} ({d.ColorToLabel!.Count} colours)");
            case MaskEncoding.Binary:
                string detail = o.BinaryThreshold is { } t ? $"binary, gray values >= {t} -> class 1"
                    : grayValues.Contains(255) || grayValues.Contains(65535) ? "binary 0/255 -> classes 0/1"
                    : "binary 0/1";
                return (new DatasetDescription { Classes = 2, Encoding = MaskEncoding.Binary,
                    BinaryThreshold = o.BinaryThreshold }, detail);
            default:
                int classes = o.Classes ?? palette?.Count(e => e.Index != o.IgnoreIndex)
                    ?? InferClasses(grayValues, o.IgnoreIndex, origin);
                return (new DatasetDescription { Classes = classes, Encoding = encoding },
                    encoding == MaskEncoding.IndexedPng ? "indexed PNG (palette index = class)"
                        : "gray value = class index");
        }
    }

    /// <summary>Class names and colours: given, the palette's when it lists exactly the classes, else the
    /// defaults.</summary>
    private static DatasetDescription Named(DatasetDescription d, DatasetOptions o,
        IReadOnlyList<ClassPalette.Entry>? palette, MaskEncoding encoding)
    {
        var (defaultNames, defaultColors) = DatasetDescription.Defaults(d.Classes, encoding == MaskEncoding.Binary);
        var classes = palette?.Where(e => e.Index != o.IgnoreIndex).OrderBy(e => e.Index).ToList();
        bool paletteFits = classes is not null && classes.Count == d.Classes;
        var names = o.ClassNames ?? (d.ClassNames.Length == d.Classes ? d.ClassNames
            : paletteFits && encoding != MaskEncoding.Binary ? classes!.Select(e => e.Name).ToArray() : defaultNames);
        var colors = d.ClassColors.Length == d.Classes ? d.ClassColors : paletteFits ? classes!.Select(e => e.Color)
            .ToArray() : defaultColors;
        return d with { ClassNames = names, ClassColors = colors };
    }

    private static int InferClasses(ICollection<int> values, int ignoreIndex, string origin)
    {
        var labels = values.Where(v => v != ignoreIndex).ToList();
        if (labels.Count == 0)
            throw new DataException($"{origin}: every mask pixel is the ignore index {ignoreIndex}; there is nothing "
                + $"to learn.", origin);
        int max = labels.Max();
        if (max >= 255 || max >= ignoreIndex && ignoreIndex < 255)
            throw new DataException($"{origin}: masks hold label {max}, above the ignore index {ignoreIndex}; give "
                + $"the class count and ignore index explicitly, or the right mask encoding.", origin);
        return max + 1;
    }
}
