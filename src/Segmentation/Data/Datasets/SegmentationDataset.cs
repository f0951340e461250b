using System.Collections.Concurrent;

namespace Segmentation.Data;

/// <summary>Something that produces samples by index.</summary>
internal interface ISampleSource
{
    int Count { get; }
    string NameOf(int index);
    Sample Load(int index);
}

/// <summary>A source read from files: their paths (for fingerprints) and image sizes from the headers.</summary>
internal interface IFileSource : ISampleSource
{
    IEnumerable<string> PathsOf(int index);
    (int, int) ImageSize(int index);
}

/// <summary>
/// Image–mask pairs with a <see cref="DatasetDescription"/>: from folders, from a list of paths, or the built-in
/// <c>shapes</c>. Samples are decoded on demand (thread-safe), so loaders can read in parallel.
/// </summary>
public sealed class SegmentationDataset
{
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

    internal SegmentationDataset(ISampleSource source, int[] indices, DatasetDescription description, string report,
        IReadOnlyList<string> warnings, string origin)
    {
        this.source = source; this.indices = indices;
        Description = description; DetectionReport = report; Warnings = warnings; Origin = origin;
    }

    /// <summary>Number of samples.</summary>
    public int Count => indices.Length;

    /// <summary>The name (file stem) of sample <paramref name="index"/>.</summary>
    public string NameOf(int index) => source.NameOf(indices[index]);

    /// <summary>Decodes sample <paramref name="index"/>, checking its labels; throws <see cref="DataException"/> naming
    /// the file.</summary>
    public Sample Load(int index)
    {
        if ((uint)index >= (uint)indices.Length) throw new ArgumentOutOfRangeException(nameof(index),
            $"Sample {index} of a data set of {indices.Length}.");
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
            + (sorted.Count > 10 ? $"{Environment.NewLine}  ... and {sorted.Count - 10} more" : ""),
            sorted[0].Error.FilePath);
    }

    /// <summary>
    /// A fingerprint of the files behind this data set (paths, sizes, modification times) and its description; null for
    /// generated data. Equal fingerprints mean <see cref="Validate"/> need not run again.
    /// </summary>
    public string? Fingerprint()
    {
        if (source is not IFileSource files) return null;
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(
            System.Security.Cryptography.HashAlgorithmName.SHA256);
        void Add(string text) => hash.AppendData(System.Text.Encoding.UTF8.GetBytes(text + "\n"));
        Add(Description.ToJson().ToJsonString());
        foreach (var i in indices)
            foreach (var path in files.PathsOf(i))
            {
                var info = new FileInfo(path);
                Add($"{Path.GetFullPath(path)}|{(info.Exists ? info.Length : -1)}|"
                    + $"{(info.Exists ? info.LastWriteTimeUtc.Ticks : 0)}");
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
        if (HeaderSizes() is not { Length: > 0 } sizes) return null;
        return sizes.All(s => s == sizes[0]) ? sizes[0] : null;
    }

    /// <summary>Pixels of all images together, from the file headers (generated data: its one size); what validating
    /// on whole images costs.</summary>
    public long TotalPixels()
    {
        if (HeaderSizes() is { } sizes) return sizes.Sum(s => (long)s.Width * s.Height);
        return UniformSize() is var (w, h) ? (long)w * h * Count : 0;
    }

    private int? imageBits;

    /// <summary>Bits a sample of the images, from the files (<see cref="ImageReader.SampleBits"/>, read once, in
    /// parallel): 16 when any image is a 16-bit PNG or a TIFF of more than 8 bits a sample, else 8 (and 8 for
    /// generated data). Recorded with the normalisation in checkpoints and ONNX metadata.</summary>
    public int ImageBits()
    {
        if (imageBits is { } known) return known;
        if (source is not IFileSource files) return 8;
        var reader = new ImageReader(long.MaxValue);
        int wide = 0;
        Parallel.For(0, indices.Length, (i, loop) =>
        {
            if (reader.SampleBits(files.PathsOf(indices[i]).First()) != 16) return;
            Interlocked.Exchange(ref wide, 1);
            loop.Stop();
        });
        return (imageBits = wide == 1 ? 16 : 8).Value;
    }

    private (int Width, int Height)[]? headerSizes;

    /// <summary>Each sample's image size from its file's header, read once (in parallel) for the size checks; null for
    /// data sets not read from files.</summary>
    private (int Width, int Height)[]? HeaderSizes()
    {
        if (source is not IFileSource files) return null;
        if (headerSizes is { } known) return known;
        var sizes = new (int Width, int Height)[indices.Length];
        Parallel.For(0, indices.Length, i => sizes[i] = files.ImageSize(indices[i]));
        return headerSizes = sizes;
    }

    /// <summary>
    /// The image with the shortest side, from the file headers (no decoding): its path, width and height; null for
    /// data sets not read from files. (Generated data has one size: <see cref="UniformSize"/>.)
    /// </summary>
    public (string File, int Width, int Height)? SmallestImage() => SizeExtremes()?.Smallest;

    /// <summary>From the file headers: the image with the shortest side, and, when sizes differ, the first image and
    /// the first of another size; null for data sets not read from files.</summary>
    public ((string File, int Width, int Height) Smallest, (string File, int Width, int Height)[] Differing)?
        SizeExtremes()
    {
        if (source is not IFileSource files || HeaderSizes() is not { Length: > 0 } sizes) return null;
        (string, int, int) At(int i) => (files.PathsOf(indices[i]).First(), sizes[i].Width, sizes[i].Height);
        int smallest = Enumerable.Range(0, sizes.Length).MinBy(i => Math.Min(sizes[i].Width, sizes[i].Height));
        int other = Array.FindIndex(sizes, s => s != sizes[0]);
        return (At(smallest), other < 0 ? Array.Empty<(string, int, int)>() : new[] { At(0), At(other) });
    }

    /// <summary>A data set over some of this one's samples.</summary>
    public SegmentationDataset Subset(IEnumerable<int> which)
    {
        var picked = which.Select(i => (uint)i < (uint)indices.Length ? indices[i]
            : throw new ArgumentOutOfRangeException(nameof(which), $"Sample {i} of {indices.Length}.")).ToArray();
        return new SegmentationDataset(source, picked, Description, DetectionReport, Warnings, Origin);
    }

    private SegmentationDataset WithOrigin(string origin) => new(source, indices, Description, DetectionReport,
        Warnings, origin);

    /// <summary>A seeded random split: <paramref name="trainFraction"/> of the samples for training, the rest for
    /// validation.</summary>
    public (SegmentationDataset Train, SegmentationDataset Val) Split(double trainFraction, int seed = 0)
    {
        if (!(trainFraction > 0 && trainFraction < 1))
            throw new OptionsException($"Train fraction {trainFraction} must be between 0 and 1 (exclusive).");
        if (Count < 2)
            throw new DataException($"{Origin}: {Count} sample(s) cannot be split into training and validation sets.");
        var order = Enumerable.Range(0, Count).ToArray();
        new Random(seed).Shuffle(order);
        int train = Math.Clamp((int)Math.Round(Count * trainFraction), 1, Count - 1);
        string split =
            $"{Origin}#split={trainFraction.ToString(System.Globalization.CultureInfo.InvariantCulture)},{seed}";
        return (Subset(order[..train].Order()).WithOrigin(split + ",train"), Subset(order[train..].Order())
            .WithOrigin(split + ",val"));
    }

    /// <summary>The built-in synthetic shapes (background, circle, rectangle, triangle).</summary>
    /// <param name="options">Size, count, seed; <see cref="ShapesOptions.Instances"/> for instance data.</param>
    /// <param name="instances">For instance data: the boundary target and decoding (null: the defaults).</param>
    public static SegmentationDataset Shapes(ShapesOptions? options = null, InstanceSettings? instances = null)
    {
        var o = options ?? new ShapesOptions();
        var src = new ShapesSource(o);
        if (o.Panoptic)
            return new SegmentationDataset(src, Enumerable.Range(0, src.Count).ToArray(),
                ShapesSource.PanopticDescription(o.Channels, instances ?? new InstanceSettings()),
                $"builtin:shapes: {o.Count} images {o.Size}x{o.Size} of touching round and oval objects (panoptic "
                    + $"data: "
                    + $"background stuff, round and oval things, boundary), seed {o.Seed}", Array.Empty<string>(),
                $"builtin:shapes?count={o.Count}&size={o.Size}&seed={o.Seed}&channels={o.Channels}"
                    + $"&maxShapes={o.MaxShapes}&panoptic=1");
        if (o.Instances)
            return new SegmentationDataset(src, Enumerable.Range(0, src.Count).ToArray(),
                (instances ?? new InstanceSettings()).Describe(o.Channels),
                $"builtin:shapes: {o.Count} images {o.Size}x{o.Size} of touching objects (instance data: background, "
                    + $"object, boundary), seed {o.Seed}", Array.Empty<string>(),
                $"builtin:shapes?count={o.Count}&size={o.Size}&seed={o.Seed}&channels={o.Channels}"
                    + $"&maxShapes={o.MaxShapes}&instances=1");
        return new SegmentationDataset(src, Enumerable.Range(0, src.Count).ToArray(),
            ShapesSource.Description(o.Channels),
            $"builtin:shapes: {o.Count} images {o.Size}x{o.Size}, 4 classes (background, circle, rectangle, "
                + $"triangle), seed {o.Seed}", Array.Empty<string>(),
            $"builtin:shapes?count={o.Count}&size={o.Size}&seed={o.Seed}"
                + $"&channels={o.Channels}&maxShapes={o.MaxShapes}");
    }

    /// <summary>
    /// Re-opens a data set from its <see cref="Origin"/>: <c>builtin:shapes?count=..&amp;size=..&amp;seed=..</c>, a
    /// folder
    /// (with <c>images/</c> and <c>masks/</c>), either followed by <c>#split=FRACTION,SEED,train|val</c>.
    /// </summary>
    public static SegmentationDataset FromOrigin(string origin, DatasetOptions? options = null)
    {
        var hash = origin.LastIndexOf("#split=", StringComparison.Ordinal);
        if (hash >= 0)
        {
            var parts = origin[(hash + 7)..].Split(',');
            if (parts.Length != 3 || !double.TryParse(parts[0], System.Globalization.NumberStyles.Float,
                System.Globalization.CultureInfo.InvariantCulture, out var fraction)
                || !int.TryParse(parts[1], out var seed) || parts[2] is not ("train" or "val"))
                throw new OptionsException($"Data '{origin}': the split suffix must read "
                    + $"#split=FRACTION,SEED,train|val.");
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
                    if (pair.Length != 2 || !int.TryParse(pair[1], out var v))
                        throw new OptionsException($"Data '{origin}': '{kv}' is not NAME=INTEGER.");
                    o = pair[0].ToLowerInvariant() switch
                    {
                        "count" => o with { Count = v }, "size" => o with { Size = v }, "seed" => o with { Seed = v },
                        "channels" => o with { Channels = v }, "maxshapes" => o with { MaxShapes = v },
                        "instances" => o with { Instances = v != 0 },
                        "panoptic" => o with { Panoptic = v != 0 },
                        _ => throw new OptionsException($"Data '{origin}': unknown setting '{pair[0]}' (count, size, "
                            + $"seed, channels, maxShapes, instances, panoptic)."),
                    };
                }
            else if (origin.Length != "builtin:shapes".Length)
                throw new OptionsException($"Data '{origin}': the built-in data set is builtin:shapes.");
            if (options?.TaskKind == SegmentationTaskKind.Instance) o = o with { Instances = true };
            if (options?.TaskKind == SegmentationTaskKind.Panoptic) o = o with { Panoptic = true };
            return Shapes(o, options?.Description?.Instances ?? options?.Instances);
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
        if (o.TaskKind != SegmentationTaskKind.Semantic) return FromInstanceFolder(dir, o);
        var warnings = new List<string>();
        var pairs = FilePairs.Read(dir, o, warnings);
        var reader = new ImageReader(o.MaxPixels);
        var (description, report) = LabelDetection.Detect(pairs, o, reader, dir);
        return Create(pairs, description, report, warnings, reader, dir);
    }

    /// <summary>
    /// Opens <c>DIR/train/{images,masks}</c> and <c>DIR/val/{images,masks}</c>; the encoding is detected once over
    /// both, so they share one description.
    /// </summary>
    public static (SegmentationDataset Train, SegmentationDataset Val) FromSplitFolders(string dir,
        DatasetOptions? options = null)
    {
        var o = options ?? new DatasetOptions();
        if (o.TaskKind != SegmentationTaskKind.Semantic)
        {
            var trainSet = FromInstanceFolder(Path.Combine(dir, "train"), o);
            return (trainSet, FromInstanceFolder(Path.Combine(dir, "val"),
                o with { Description = trainSet.Description }));
        }
        var warnings = new List<string>();
        var train = FilePairs.Read(Path.Combine(dir, "train"), o, warnings);
        var val = FilePairs.Read(Path.Combine(dir, "val"), o, warnings);
        var reader = new ImageReader(o.MaxPixels);
        var (description, report) = LabelDetection.Detect(train.Concat(val).ToList(), o, reader, dir);
        return (Create(train, description, report, warnings, reader, Path.Combine(dir, "train")),
                Create(val, description, report, warnings, reader, Path.Combine(dir, "val")));
    }

    /// <summary>True when <paramref name="dir"/> has <c>train/</c> and <c>val/</c> folders.</summary>
    public static bool HasSplitFolders(string dir) => Directory.Exists(Path.Combine(dir, "train"))
        && Directory.Exists(Path.Combine(dir, "val"));

    /// <summary>From an explicit list of (image, mask) paths.</summary>
    public static SegmentationDataset FromPairs(IEnumerable<(string Image, string Mask)> pairs,
        DatasetOptions? options = null)
    {
        var o = options ?? new DatasetOptions();
        if (o.TaskKind != SegmentationTaskKind.Semantic)
            throw new OptionsException("Instance data is read from a folder (FromFolder), not from a list of pairs.");
        var list = pairs.Select(p => (p.Image, p.Mask, Path.GetFileNameWithoutExtension(p.Image))).ToList();
        if (list.Count == 0) throw new DataException("The list of image–mask pairs is empty.");
        foreach (var (image, mask, _) in list)
        {
            if (!File.Exists(image)) throw new DataException($"{image}: image file not found.", image);
            if (!File.Exists(mask)) throw new DataException($"{mask}: mask file not found.", mask);
        }
        var reader = new ImageReader(o.MaxPixels);
        var (description, report) = LabelDetection.Detect(list, o, reader, "pairs");
        return Create(list, description, report, new List<string>(), reader, "pairs");
    }

    /// <summary>Counts the pixels of each class over all masks (in parallel), for class weights; for instance data,
    /// over the targets the model learns (the boundary class included).</summary>
    public ClassStatistics ComputeClassStatistics(int maxDegreeOfParallelism = -1)
    {
        int n = Description.Classes;
        var pixels = new long[n]; var imagePixels = new long[n]; long ignored = 0;
        var gate = new object();
        var boundary = Description.Instances;
        Parallel.For(0, Count, new ParallelOptions { MaxDegreeOfParallelism = maxDegreeOfParallelism }, i =>
        {
            var sample = Load(i);
            // instance data: the boundary class the model learns, as the task makes it per batch
            var mask = sample.Instances is { } ids && boundary is not null ? InstanceTargets.Make(sample.Mask, ids, 1,
                sample.Height, sample.Width, boundary.BoundaryWidth, (byte)boundary.Things.Length) : sample.Mask;
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

    /// <summary>
    /// Instance data from <paramref name="dir"/>: <c>images/</c> with <c>masks/</c> of object numbers (16-bit PNG;
    /// 8-bit under 255 objects), or the Data Science Bowl layout (<c>ID/images/ID.png</c>, <c>ID/masks/*.png</c>). The
    /// description is <see cref="InstanceSettings.Describe"/>'s (or the options' own).
    /// </summary>
    public static SegmentationDataset FromInstanceFolder(string dir, DatasetOptions? options = null)
    {
        var o = options ?? new DatasetOptions { Task = SegmentationTaskKind.Instance };
        if (o.TaskKind == SegmentationTaskKind.Panoptic) return PanopticSource.Open(dir, o);
        var warnings = new List<string>();
        var entries = InstanceSource.Entries(dir, o, warnings);
        var reader = new ImageReader(o.MaxPixels);
        var survey = o.Description?.InChannels is null && o.InChannels is null
            ? ImageChannels.Of(entries.Select(e => e.Image).ToList(), reader) : null;
        int channels = o.Description?.InChannels ?? o.InChannels ?? survey!.Channels;
        var d = o.Description ?? (o.Instances ?? new InstanceSettings()).Describe(channels);
        d.Validate();
        var src = new InstanceSource(entries, d, reader);
        string layout = src.PerObjectFiles ? "one binary mask per object (Data Science Bowl layout)"
            : "object-number masks";
        return new SegmentationDataset(src, Enumerable.Range(0, entries.Count).ToArray(), d,
            $"{dir}: {entries.Count} images, instance data ({layout}); model classes background, object, boundary; "
                + $"{d.Instances}; {survey?.Describe() ?? $"{d.InChannels}-channel images (as given)"}", warnings, dir);
    }

    private static SegmentationDataset Create(List<(string Image, string Mask, string Stem)> pairs,
        DatasetDescription d, string report, List<string> warnings, ImageReader reader, string origin)
    {
        var src = new FileSource(pairs, d, reader);
        return new SegmentationDataset(src, Enumerable.Range(0, pairs.Count).ToArray(), d, report, warnings, origin);
    }
}
