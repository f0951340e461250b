using System.Collections.Concurrent;

namespace Segmentation.Data;

/// <summary>Something that produces samples by index.</summary>
internal interface ISampleSource
{
    int Count { get; }
    string NameOf(int index);
    Sample Load(int index);
}

/// <summary>How a folder data set is read.</summary>
public sealed record DatasetOptions
{
    /// <summary>Mask encoding; <see cref="MaskEncoding.Auto"/> detects it from the masks.</summary>
    public MaskEncoding Encoding { get; init; } = MaskEncoding.Auto;
    /// <summary>Number of classes; null infers it (largest label + 1, or the palette's classes).</summary>
    public int? Classes { get; init; }
    /// <summary>Label ignored by losses and metrics.</summary>
    public int IgnoreIndex { get; init; } = Labels.Ignore;
    /// <summary>Palette file (CSV or JSON) with class names and colours; required for RGB masks.</summary>
    public string? PaletteFile { get; init; }
    /// <summary>Class names; null uses the palette's or defaults.</summary>
    public string[]? ClassNames { get; init; }
    /// <summary>Image channels for the model; null: 1 when the first image is gray, else 3.</summary>
    public int? InChannels { get; init; }
    /// <summary>Skip images without a mask (and masks without an image) instead of failing; each is listed in <see cref="SegmentationDataset.Warnings"/>.</summary>
    public bool SkipUnpaired { get; init; }
    /// <summary>
    /// For binary masks: gray values at or above this are class 1, the rest class 0 (for masks saved lossily, e.g. as
    /// JPEG). Null accepts only 0 and 255 (or 0 and 1).
    /// </summary>
    public int? BinaryThreshold { get; init; }
    /// <summary>Largest width x height of an image or mask, checked from the header before decoding.</summary>
    public long MaxPixels { get; init; } = ImageReader.DefaultMaxPixels;
    /// <summary>Use this description (e.g. a checkpoint's) instead of detecting one; the other label options are then ignored.</summary>
    public DatasetDescription? Description { get; init; }
}

/// <summary>Class statistics of a data set's masks, for class weights.</summary>
/// <param name="ClassPixels">Pixels of each class.</param>
/// <param name="PixelsOfImagesWithClass">For each class, all valid pixels of the images in which it appears.</param>
/// <param name="IgnoredPixels">Pixels at the ignore index.</param>
public sealed record ClassStatistics(long[] ClassPixels, long[] PixelsOfImagesWithClass, long IgnoredPixels);

/// <summary>
/// Image–mask pairs with a <see cref="DatasetDescription"/>: from folders, from a list of paths, or the built-in
/// <c>shapes</c>. Samples are decoded on demand (thread-safe), so loaders can read in parallel.
/// </summary>
public sealed class SegmentationDataset
{
    private static readonly string[] ImageExtensions = { ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".tga", ".webp", ".pbm" };
    private readonly ISampleSource source;
    private readonly int[] indices;

    /// <summary>What the labels mean.</summary>
    public DatasetDescription Description { get; }
    /// <summary>One line saying what was detected (encoding, classes, ignore index) and from how many masks.</summary>
    public string DetectionReport { get; }
    /// <summary>Files that were skipped, and other things a user should see before training.</summary>
    public IReadOnlyList<string> Warnings { get; }
    /// <summary>Where it came from: a folder, "builtin:shapes", or "pairs".</summary>
    public string Origin { get; }

    private SegmentationDataset(ISampleSource source, int[] indices, DatasetDescription description, string report, IReadOnlyList<string> warnings, string origin)
    {
        this.source = source; this.indices = indices;
        Description = description; DetectionReport = report; Warnings = warnings; Origin = origin;
    }

    /// <summary>Number of samples.</summary>
    public int Count => indices.Length;

    /// <summary>The name (file stem) of sample <paramref name="index"/>.</summary>
    public string NameOf(int index) => source.NameOf(indices[index]);

    /// <summary>Decodes sample <paramref name="index"/>, checking its labels; throws <see cref="DataException"/> naming the file.</summary>
    public Sample Load(int index)
    {
        if ((uint)index >= (uint)indices.Length) throw new ArgumentOutOfRangeException(nameof(index), $"Sample {index} of a data set of {indices.Length}.");
        return source.Load(indices[index]);
    }

    /// <summary>
    /// Decodes every sample (headers, sizes, pixels, labels) in parallel, so a run starts on good data or not at all:
    /// one bad file surfaces now, not in epoch 2. Throws one <see cref="DataException"/> listing every bad file (the
    /// first ten by name). <paramref name="progress"/> gets the count checked so far, on the calling thread.
    /// </summary>
    public void Validate(IProgress<int>? progress = null, CancellationToken cancellation = default)
    {
        var failures = new ConcurrentBag<(int Index, DataException Error)>();
        int done = 0;
        var work = Task.Run(() => Parallel.For(0, Count, new ParallelOptions { CancellationToken = cancellation }, i =>
        {
            try { Load(i); }
            catch (DataException e) { failures.Add((i, e)); }
            Interlocked.Increment(ref done);
        }), cancellation);
        // Progress goes out on the caller's thread, a few times a second.
        while (!work.Wait(250)) progress?.Report(Volatile.Read(ref done));
        work.GetAwaiter().GetResult();
        progress?.Report(Count);
        if (failures.IsEmpty) return;
        var sorted = failures.OrderBy(f => f.Index).ToList();
        throw new DataException($"{Origin}: {sorted.Count} of {Count} samples cannot be used:{Environment.NewLine}"
            + string.Join(Environment.NewLine, sorted.Take(10).Select(f => "  " + f.Error.Message))
            + (sorted.Count > 10 ? $"{Environment.NewLine}  ... and {sorted.Count - 10} more" : ""), sorted[0].Error.FilePath);
    }

    /// <summary>
    /// A fingerprint of the files behind this data set (paths, sizes, modification times) and its description; null for
    /// generated data. Equal fingerprints mean <see cref="Validate"/> need not run again.
    /// </summary>
    public string? Fingerprint()
    {
        if (source is not FileSource files) return null;
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        void Add(string text) => hash.AppendData(System.Text.Encoding.UTF8.GetBytes(text + "\n"));
        Add(Description.ToJson().ToJsonString());
        foreach (var i in indices)
            foreach (var path in files.PathsOf(i))
            {
                var info = new FileInfo(path);
                Add($"{Path.GetFullPath(path)}|{(info.Exists ? info.Length : -1)}|{(info.Exists ? info.LastWriteTimeUtc.Ticks : 0)}");
            }
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    /// <summary>
    /// The one image size every sample has, read from the file headers (no decoding), or null when sizes differ
    /// (then samples cannot share a batch without a resize or crop).
    /// </summary>
    public (int Width, int Height)? UniformSize()
    {
        if (source is ShapesSource)
        {
            if (Count == 0) return null;
            var first = Load(0).Image; // generated at one size
            return (first.Width, first.Height);
        }
        if (source is not FileSource files) return null;
        var sizes = new ConcurrentDictionary<(int, int), byte>();
        Parallel.ForEach(indices, i => sizes.TryAdd(files.ImageSize(i), 0));
        return sizes.Count == 1 ? sizes.Keys.First() : null;
    }

    /// <summary>A data set over some of this one's samples.</summary>
    public SegmentationDataset Subset(IEnumerable<int> which)
    {
        var picked = which.Select(i => (uint)i < (uint)indices.Length ? indices[i] : throw new ArgumentOutOfRangeException(nameof(which), $"Sample {i} of {indices.Length}.")).ToArray();
        return new SegmentationDataset(source, picked, Description, DetectionReport, Warnings, Origin);
    }

    private SegmentationDataset WithOrigin(string origin) => new(source, indices, Description, DetectionReport, Warnings, origin);

    /// <summary>A seeded random split: <paramref name="trainFraction"/> of the samples for training, the rest for validation.</summary>
    public (SegmentationDataset Train, SegmentationDataset Val) Split(double trainFraction, int seed = 0)
    {
        if (!(trainFraction > 0 && trainFraction < 1)) throw new OptionsException($"Train fraction {trainFraction} must be between 0 and 1 (exclusive).");
        if (Count < 2) throw new DataException($"{Origin}: {Count} sample(s) cannot be split into training and validation sets.");
        var order = Enumerable.Range(0, Count).ToArray();
        new Random(seed).Shuffle(order);
        int train = Math.Clamp((int)Math.Round(Count * trainFraction), 1, Count - 1);
        string split = $"{Origin}#split={trainFraction.ToString(System.Globalization.CultureInfo.InvariantCulture)},{seed}";
        return (Subset(order[..train].Order()).WithOrigin(split + ",train"), Subset(order[train..].Order()).WithOrigin(split + ",val"));
    }

    /// <summary>The built-in synthetic shapes (background, circle, rectangle, triangle).</summary>
    public static SegmentationDataset Shapes(ShapesOptions? options = null)
    {
        var o = options ?? new ShapesOptions();
        var src = new ShapesSource(o);
        return new SegmentationDataset(src, Enumerable.Range(0, src.Count).ToArray(), ShapesSource.Description(o.Channels),
            $"builtin:shapes: {o.Count} images {o.Size}x{o.Size}, 4 classes (background, circle, rectangle, triangle), seed {o.Seed}", Array.Empty<string>(),
            $"builtin:shapes?count={o.Count}&size={o.Size}&seed={o.Seed}&channels={o.Channels}&maxShapes={o.MaxShapes}");
    }

    /// <summary>
    /// Re-opens a data set from its <see cref="Origin"/>: <c>builtin:shapes?count=..&amp;size=..&amp;seed=..</c>, a folder
    /// (with <c>images/</c> and <c>masks/</c>), either followed by <c>#split=FRACTION,SEED,train|val</c>.
    /// </summary>
    public static SegmentationDataset FromOrigin(string origin, DatasetOptions? options = null)
    {
        var hash = origin.LastIndexOf("#split=", StringComparison.Ordinal);
        if (hash >= 0)
        {
            var parts = origin[(hash + 7)..].Split(',');
            if (parts.Length != 3 || !double.TryParse(parts[0], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var fraction)
                || !int.TryParse(parts[1], out var seed) || parts[2] is not ("train" or "val"))
                throw new OptionsException($"Data '{origin}': the split suffix must read #split=FRACTION,SEED,train|val.");
            var (train, val) = FromOrigin(origin[..hash], options).Split(fraction, seed);
            return parts[2] == "train" ? train : val;
        }
        if (origin.StartsWith("builtin:shapes", StringComparison.OrdinalIgnoreCase))
        {
            var o = new ShapesOptions();
            var q = origin.IndexOf('?');
            if (q >= 0)
                foreach (var kv in origin[(q + 1)..].Split('&', StringSplitOptions.RemoveEmptyEntries))
                {
                    var pair = kv.Split('=');
                    if (pair.Length != 2 || !int.TryParse(pair[1], out var v)) throw new OptionsException($"Data '{origin}': '{kv}' is not NAME=INTEGER.");
                    o = pair[0].ToLowerInvariant() switch
                    {
                        "count" => o with { Count = v }, "size" => o with { Size = v }, "seed" => o with { Seed = v },
                        "channels" => o with { Channels = v }, "maxshapes" => o with { MaxShapes = v },
                        _ => throw new OptionsException($"Data '{origin}': unknown setting '{pair[0]}' (count, size, seed, channels, maxShapes)."),
                    };
                }
            else if (origin.Length != "builtin:shapes".Length) throw new OptionsException($"Data '{origin}': the built-in data set is builtin:shapes.");
            return Shapes(o);
        }
        return FromFolder(origin, options);
    }

    /// <summary>
    /// Opens <c>DIR/images</c> + <c>DIR/masks</c>, paired by file stem (extensions ignored, case-insensitive).
    /// For <c>DIR/train</c> + <c>DIR/val</c> use <see cref="FromSplitFolders"/>.
    /// </summary>
    public static SegmentationDataset FromFolder(string dir, DatasetOptions? options = null)
    {
        var o = options ?? new DatasetOptions();
        var warnings = new List<string>();
        var pairs = PairFolder(dir, o, warnings);
        var reader = new ImageReader(o.MaxPixels);
        var (description, report) = Detect(pairs, o, reader, dir);
        return Create(pairs, description, report, warnings, reader, dir);
    }

    /// <summary>
    /// Opens <c>DIR/train/{images,masks}</c> and <c>DIR/val/{images,masks}</c>; the encoding is detected once over
    /// both, so they share one description.
    /// </summary>
    public static (SegmentationDataset Train, SegmentationDataset Val) FromSplitFolders(string dir, DatasetOptions? options = null)
    {
        var o = options ?? new DatasetOptions();
        var warnings = new List<string>();
        var train = PairFolder(Path.Combine(dir, "train"), o, warnings);
        var val = PairFolder(Path.Combine(dir, "val"), o, warnings);
        var reader = new ImageReader(o.MaxPixels);
        var (description, report) = Detect(train.Concat(val).ToList(), o, reader, dir);
        return (Create(train, description, report, warnings, reader, Path.Combine(dir, "train")),
                Create(val, description, report, warnings, reader, Path.Combine(dir, "val")));
    }

    /// <summary>True when <paramref name="dir"/> has <c>train/</c> and <c>val/</c> folders.</summary>
    public static bool HasSplitFolders(string dir) => Directory.Exists(Path.Combine(dir, "train")) && Directory.Exists(Path.Combine(dir, "val"));

    /// <summary>From an explicit list of (image, mask) paths.</summary>
    public static SegmentationDataset FromPairs(IEnumerable<(string Image, string Mask)> pairs, DatasetOptions? options = null)
    {
        var o = options ?? new DatasetOptions();
        var list = pairs.Select(p => (p.Image, p.Mask, Path.GetFileNameWithoutExtension(p.Image))).ToList();
        if (list.Count == 0) throw new DataException("The list of image–mask pairs is empty.");
        foreach (var (image, mask, _) in list)
        {
            if (!File.Exists(image)) throw new DataException($"{image}: image file not found.", image);
            if (!File.Exists(mask)) throw new DataException($"{mask}: mask file not found.", mask);
        }
        var reader = new ImageReader(o.MaxPixels);
        var (description, report) = Detect(list, o, reader, "pairs");
        return Create(list, description, report, new List<string>(), reader, "pairs");
    }

    /// <summary>Counts the pixels of each class over all masks (in parallel), for class weights.</summary>
    public ClassStatistics ComputeClassStatistics(int maxDegreeOfParallelism = -1)
    {
        int n = Description.Classes;
        var pixels = new long[n]; var imagePixels = new long[n]; long ignored = 0;
        var gate = new object();
        Parallel.For(0, Count, new ParallelOptions { MaxDegreeOfParallelism = maxDegreeOfParallelism }, i =>
        {
            var mask = Load(i).Mask;
            var counts = new long[256];
            foreach (var v in mask) counts[v]++;
            long valid = 0;
            for (int c = 0; c < n; c++) valid += counts[c];
            lock (gate)
            {
                for (int c = 0; c < n; c++)
                    if (counts[c] > 0) { pixels[c] += counts[c]; imagePixels[c] += valid; }
                ignored += counts[Labels.Ignore];
            }
        });
        return new ClassStatistics(pixels, imagePixels, ignored);
    }

    private static SegmentationDataset Create(List<(string Image, string Mask, string Stem)> pairs, DatasetDescription d, string report, List<string> warnings, ImageReader reader, string origin)
    {
        var src = new FileSource(pairs, d, reader);
        return new SegmentationDataset(src, Enumerable.Range(0, pairs.Count).ToArray(), d, report, warnings, origin);
    }

    private static List<(string Image, string Mask, string Stem)> PairFolder(string dir, DatasetOptions o, List<string> warnings)
    {
        if (!Directory.Exists(dir)) throw new DataException($"{dir}: data folder not found.", dir);
        string imagesDir = Path.Combine(dir, "images"), masksDir = Path.Combine(dir, "masks");
        if (!Directory.Exists(imagesDir) || !Directory.Exists(masksDir))
            throw new DataException(HasSplitFolders(dir)
                ? $"{dir}: has train/ and val/ folders; open it with FromSplitFolders (the CLI does this by itself)."
                : $"{dir}: expected the folders images/ and masks/ (or train/ and val/, each holding images/ and masks/).", dir);
        var images = Index(imagesDir);
        var masks = Index(masksDir);
        var noMask = images.Keys.Where(k => !masks.ContainsKey(k)).Order(StringComparer.OrdinalIgnoreCase).ToList();
        var noImage = masks.Keys.Where(k => !images.ContainsKey(k)).Order(StringComparer.OrdinalIgnoreCase).ToList();
        if (noMask.Count + noImage.Count > 0)
        {
            string List(List<string> stems, Dictionary<string, string> files) =>
                string.Join(", ", stems.Take(5).Select(s => Path.GetFileName(files[s]))) + (stems.Count > 5 ? $" and {stems.Count - 5} more" : "");
            var parts = new List<string>();
            if (noMask.Count > 0) parts.Add($"{noMask.Count} image(s) without a mask in {masksDir}: {List(noMask, images)}");
            if (noImage.Count > 0) parts.Add($"{noImage.Count} mask(s) without an image in {imagesDir}: {List(noImage, masks)}");
            if (!o.SkipUnpaired)
                throw new DataException($"{dir}: unpaired files: {string.Join("; ", parts)}. Pairs share a file name (the extension may differ); skip them with the skip-unpaired option.", dir);
            warnings.AddRange(parts.Select(p => $"skipped {p}"));
        }
        var pairs = images.Keys.Where(masks.ContainsKey).Order(StringComparer.Ordinal)
            .Select(k => (images[k], masks[k], Path.GetFileNameWithoutExtension(images[k]))).ToList();
        if (pairs.Count == 0) throw new DataException($"{dir}: no image–mask pairs found (images: {images.Count}, masks: {masks.Count}).", dir);
        return pairs;
    }

    private static Dictionary<string, string> Index(string folder)
    {
        var result = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var file in Directory.EnumerateFiles(folder))
        {
            if (!ImageExtensions.Contains(Path.GetExtension(file).ToLowerInvariant())) continue;
            var stem = Path.GetFileNameWithoutExtension(file);
            if (!result.TryAdd(stem, file))
                throw new DataException($"{folder}: two files share the name '{stem}' ({Path.GetFileName(result[stem])} and {Path.GetFileName(file)}); pairs are matched by name, so keep one.", file);
        }
        return result;
    }

    /// <summary>Resolves the encoding, classes and channels by reading the masks (all, up to 1000, in parallel).</summary>
    private static (DatasetDescription, string) Detect(List<(string Image, string Mask, string Stem)> pairs, DatasetOptions o, ImageReader reader, string origin)
    {
        if (o.Description is { } given)
        {
            given.Validate();
            return (given, $"{origin}: {pairs.Count} pairs; labels as given: {given.Encoding}, {given.Classes} classes, ignore index {given.IgnoreIndex}");
        }
        if (o.IgnoreIndex < 0 || o.IgnoreIndex > 255) throw new OptionsException($"Ignore index {o.IgnoreIndex} must be between 0 and 255.");
        if (o.Classes is < 1 or > 255) throw new OptionsException($"Class count {o.Classes} must be between 1 and 255.");
        int channels = o.InChannels ?? (reader.ReadImage(pairs[0].Image, 3) is var first && IsGray(first) ? 1 : 3);

        IReadOnlyList<ClassPalette.Entry>? palette = o.PaletteFile is null ? null : ClassPalette.Load(o.PaletteFile);
        int step = Math.Max(1, pairs.Count / 1000);
        var scanned = Enumerable.Range(0, pairs.Count).Where(i => i % step == 0).ToList();
        var kinds = new ConcurrentDictionary<RawMaskKind, string>();
        var histogram = new MaskHistogram();
        bool needValues = o.Encoding is MaskEncoding.Auto or MaskEncoding.Index or MaskEncoding.IndexedPng && o.Classes is null && palette is null;
        if (o.Encoding == MaskEncoding.Auto || needValues)
        {
            try
            {
                Parallel.ForEach(scanned, i =>
                {
                    var raw = reader.ReadMask(pairs[i].Mask);
                    kinds.TryAdd(raw.Kind, pairs[i].Mask);
                    if (raw.Kind != RawMaskKind.Rgb) histogram.Add(raw.Values, pairs[i].Mask);
                });
            }
            catch (AggregateException e) when (e.InnerExceptions.OfType<DataException>().Any())
            {
                // The caller gets the file's own error, not the parallel loop's wrapper.
                var bad = e.InnerExceptions.OfType<DataException>().OrderBy(x => x.FilePath, StringComparer.Ordinal).ToList();
                if (bad.Count == 1) throw bad[0];
                throw new DataException($"{bad.Count} masks cannot be read: {bad[0].Message} (and {string.Join(", ", bad.Skip(1).Take(5).Select(x => Path.GetFileName(x.FilePath)))}{(bad.Count > 6 ? ", ..." : "")})", bad[0].FilePath, e);
            }
        }
        var grayValues = histogram.Values;

        var encoding = o.Encoding;
        if (encoding == MaskEncoding.Auto)
        {
            if (kinds.ContainsKey(RawMaskKind.Rgb)) encoding = MaskEncoding.Palette;
            else if (palette is not null) encoding = MaskEncoding.Palette;
            else if (kinds.ContainsKey(RawMaskKind.Indexed) && !kinds.ContainsKey(RawMaskKind.Gray)) encoding = MaskEncoding.IndexedPng;
            else encoding = o.BinaryThreshold is not null || histogram.LooksBinary(o.IgnoreIndex, o.Classes, origin) ? MaskEncoding.Binary : MaskEncoding.Index;
        }
        if (encoding is MaskEncoding.Index or MaskEncoding.IndexedPng or MaskEncoding.Binary && kinds.TryGetValue(RawMaskKind.Rgb, out var colourMask))
            throw new DataException($"{colourMask}: the mask is a colour image, but the mask encoding is {encoding.ToString().ToLowerInvariant()}, which reads gray values; for colour masks use the palette encoding with a palette file (--mask palette --palette classes.csv).", colourMask);
        if (encoding is MaskEncoding.Index or MaskEncoding.IndexedPng && o.Classes is null && palette is null)
            histogram.RefuseAccidentalLabels(o.IgnoreIndex, origin);

        DatasetDescription d;
        string detail;
        switch (encoding)
        {
            case MaskEncoding.Palette:
                if (palette is null)
                    throw new DataException($"{kinds.GetValueOrDefault(RawMaskKind.Rgb, origin)}: the masks are colour images; give a palette file (CSV: index,name,r,g,b) that maps each colour to a class.", kinds.GetValueOrDefault(RawMaskKind.Rgb));
                d = ClassPalette.ToDescription(palette, o.IgnoreIndex, o.PaletteFile!);
                detail = $"RGB palette from {Path.GetFileName(o.PaletteFile)} ({d.ColorToLabel!.Count} colours)";
                break;
            case MaskEncoding.Binary:
                d = new DatasetDescription { Classes = 2, Encoding = MaskEncoding.Binary, BinaryThreshold = o.BinaryThreshold };
                detail = o.BinaryThreshold is { } t ? $"binary, gray values >= {t} -> class 1" : grayValues.Contains(255) || grayValues.Contains(65535) ? "binary 0/255 -> classes 0/1" : "binary 0/1";
                break;
            default:
                int classes = o.Classes ?? palette?.Count(e => e.Index != o.IgnoreIndex) ?? InferClasses(grayValues, o.IgnoreIndex, origin);
                d = new DatasetDescription { Classes = classes, Encoding = encoding };
                detail = encoding == MaskEncoding.IndexedPng ? "indexed PNG (palette index = class)" : "gray value = class index";
                break;
        }

        var (defaultNames, defaultColors) = DatasetDescription.Defaults(d.Classes, encoding == MaskEncoding.Binary);
        var names = o.ClassNames ?? (d.ClassNames.Length == d.Classes ? d.ClassNames : palette is not null && encoding != MaskEncoding.Binary && palette.Count(e => e.Index != o.IgnoreIndex) == d.Classes
            ? palette.Where(e => e.Index != o.IgnoreIndex).OrderBy(e => e.Index).Select(e => e.Name).ToArray() : defaultNames);
        var colors = d.ClassColors.Length == d.Classes ? d.ClassColors : palette is not null && palette.Count(e => e.Index != o.IgnoreIndex) == d.Classes
            ? palette.Where(e => e.Index != o.IgnoreIndex).OrderBy(e => e.Index).Select(e => e.Color).ToArray() : defaultColors;
        d = d with { ClassNames = names, ClassColors = colors, IgnoreIndex = o.IgnoreIndex, InChannels = channels };
        try { d.Validate(); }
        catch (OptionsException e) { throw new DataException($"{origin}: {e.Message}", origin); }

        string how = o.Encoding == MaskEncoding.Auto ? "detected" : "given";
        string scannedText = o.Encoding == MaskEncoding.Auto || needValues ? $"; scanned {scanned.Count} of {pairs.Count} masks" : "";
        var report = $"{origin}: {pairs.Count} pairs; masks {how}: {detail}; {d.Classes} classes ({string.Join(", ", d.ClassNames.Take(12))}{(d.Classes > 12 ? ", ..." : "")}); ignore index {d.IgnoreIndex}; {channels}-channel images{scannedText}";
        return (d, report);
    }

    private static int InferClasses(ICollection<int> values, int ignoreIndex, string origin)
    {
        var labels = values.Where(v => v != ignoreIndex).ToList();
        if (labels.Count == 0) throw new DataException($"{origin}: every mask pixel is the ignore index {ignoreIndex}; there is nothing to learn.", origin);
        int max = labels.Max();
        if (max >= 255 || max >= ignoreIndex && ignoreIndex < 255)
            throw new DataException($"{origin}: masks hold label {max}, above the ignore index {ignoreIndex}; give the class count and ignore index explicitly, or the right mask encoding.", origin);
        return max + 1;
    }

    private static bool IsGray(ImageBuffer rgb)
    {
        var p = rgb.Pixels;
        for (int i = 0; i < p.Length; i += 3)
            if (p[i] != p[i + 1] || p[i + 1] != p[i + 2]) return false;
        return true;
    }

    private sealed class FileSource : ISampleSource
    {
        private readonly List<(string Image, string Mask, string Stem)> pairs;
        private readonly DatasetDescription description;
        private readonly ImageReader reader;

        public FileSource(List<(string Image, string Mask, string Stem)> pairs, DatasetDescription description, ImageReader reader)
        {
            this.pairs = pairs; this.description = description; this.reader = reader;
        }

        public int Count => pairs.Count;
        public string NameOf(int index) => pairs[index].Stem;
        public IEnumerable<string> PathsOf(int index) { yield return pairs[index].Image; yield return pairs[index].Mask; }
        public (int, int) ImageSize(int index) => reader.Identify(pairs[index].Image);

        public Sample Load(int index)
        {
            var (imagePath, maskPath, stem) = pairs[index];
            var image = reader.ReadImage(imagePath, description.InChannels);
            var raw = reader.ReadMask(maskPath, paletteIndices: description.Encoding != MaskEncoding.Palette);
            if (raw.Width != image.Width || raw.Height != image.Height)
                throw new DataException($"{maskPath}: mask is {raw.Width}x{raw.Height} but its image {imagePath} is {image.Width}x{image.Height}; they must match.", maskPath);
            return new Sample(image, MaskDecoder.Decode(raw, description, maskPath), stem);
        }
    }
}
