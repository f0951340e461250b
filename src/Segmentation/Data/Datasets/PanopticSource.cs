using System.Collections.Concurrent;

namespace Segmentation.Data;

/// <summary>
/// Panoptic data decoded on demand: <c>DIR/images/A.png</c>, <c>DIR/masks/A.png</c> (object numbers, 16-bit) and
/// <c>DIR/classes/A.png</c> (a class per pixel, read as semantic masks are: index, palette, indexed PNG). Thing
/// classes are counted objects; a thing pixel without an object number is void (ignored), and an object number on a
/// stuff pixel is an error that names the file.
/// </summary>
internal sealed class PanopticSource : IFileSource
{
    private readonly List<(string Image, string Mask, string Stem)> entries;
    private readonly Dictionary<string, string> classFiles;
    private readonly DatasetDescription description;
    private readonly ImageReader reader;

    private PanopticSource(List<(string Image, string Mask, string Stem)> entries,
        Dictionary<string, string> classFiles, DatasetDescription description, ImageReader reader)
    {
        this.entries = entries; this.classFiles = classFiles; this.description = description; this.reader = reader;
    }

    public int Count => entries.Count;
    public string NameOf(int index) => entries[index].Stem;
    public (int, int) ImageSize(int index) => reader.Identify(entries[index].Image);

    public IEnumerable<string> PathsOf(int index)
    {
        yield return entries[index].Image;
        yield return entries[index].Mask;
        yield return classFiles[entries[index].Stem];
    }

    public Sample Load(int index)
    {
        var (imagePath, maskPath, stem) = entries[index];
        var image = reader.ReadImage(imagePath, description.InChannels);
        var (ids, classes) = Labels(index, image.Width, image.Height);
        var things = description.Instances!.Things;
        for (int i = 0; i < ids.Length; i++)
        {
            byte c = classes[i];
            if (c == Data.Labels.Ignore) { ids[i] = 0; continue; }
            if (ids[i] != 0 && !things[c])
                throw new DataException($"{maskPath}: object {ids[i]} lies on class {c} "
                    + $"({description.ClassNames[c]}) in {classFiles[stem]}, a stuff class; objects belong to thing "
                    + $"classes ({string.Join(", ", Enumerable.Range(0, things.Length).Where(t => things[t]))}).",
                    maskPath);
            if (ids[i] == 0 && things[c]) classes[i] = Data.Labels.Ignore; // a thing pixel of no object: void
        }
        return new Sample(image, classes, stem, ids);
    }

    /// <summary>The object numbers and the class mask of sample <paramref name="index"/>.</summary>
    private (ushort[] Ids, byte[] Classes) Labels(int index, int width, int height)
    {
        var (_, maskPath, stem) = entries[index];
        var raw = reader.ReadMask(maskPath);
        var classPath = classFiles[stem];
        var rawClasses = reader.ReadMask(classPath, paletteIndices: description.Encoding != MaskEncoding.Palette);
        foreach (var (r, path) in new[] { (raw, maskPath), (rawClasses, classPath) })
            if (r.Width != width || r.Height != height)
                throw new DataException($"{path}: {r.Width}x{r.Height}, but its image is {width}x{height}.", path);
        return (InstanceMasks.FromIds(raw, maskPath), MaskDecoder.Decode(rawClasses, description.ClassMasks(),
            classPath));
    }

    /// <summary>Opens <paramref name="dir"/> as panoptic data: the classes detected from the class masks as for
    /// semantic data, the thing classes given or found.</summary>
    public static SegmentationDataset Open(string dir, DatasetOptions o)
    {
        var warnings = new List<string>();
        var entries = FilePairs.Read(dir, o, warnings);
        string classesDir = Path.Combine(dir, "classes");
        if (!Directory.Exists(classesDir))
            throw new DataException($"{dir}: panoptic data needs classes/ (a class mask per image) beside images/ and "
                + "masks/ (object numbers).", dir);
        var classFiles = FilePairs.Index(classesDir);
        if (entries.FirstOrDefault(e => !classFiles.ContainsKey(e.Stem)) is { Stem: not null } missing)
            throw new DataException($"{classesDir}: no class mask for {Path.GetFileName(missing.Image)}.", classesDir);
        var reader = new ImageReader(o.MaxPixels);
        var d = o.Description;
        string report;
        if (d is null)
        {
            var pairs = entries.Select(e => (e.Image, classFiles[e.Stem], e.Stem)).ToList();
            var (classes, detected) = LabelDetection.Detect(pairs, o with { Task = SegmentationTaskKind.Semantic },
                reader, dir);
            var things = o.ThingClasses is { } given ? Flags(given, classes.Classes, dir)
                : FindThings(entries, classFiles, classes, reader, dir, warnings);
            d = (o.Instances ?? new InstanceSettings()).DescribePanoptic(classes, things);
            string found = o.ThingClasses is null ? " (found from the object masks)" : "";
            report = $"{detected}; panoptic: things {string.Join(", ", Named(d, true))}, stuff "
                + $"{string.Join(", ", Named(d, false))}{found}; {d.Instances}";
        }
        else report = $"{dir}: {entries.Count} images, panoptic data as described: {d}";
        d.Validate();
        var src = new PanopticSource(entries, classFiles, d, reader);
        return new SegmentationDataset(src, Enumerable.Range(0, entries.Count).ToArray(), d, report, warnings, dir);
    }

    private static IEnumerable<string> Named(DatasetDescription d, bool things) =>
        Enumerable.Range(0, d.Classes - 1).Where(c => d.Instances!.Things[c] == things).Select(c => d.ClassNames[c]);

    private static bool[] Flags(int[] classes, int count, string dir)
    {
        var flags = new bool[count];
        foreach (var c in classes)
            flags[(uint)c < (uint)count ? c : throw new OptionsException($"{dir}: thing class {c}, but the class "
                + $"masks have {count} classes (0-{count - 1}).")] = true;
        return flags;
    }

    /// <summary>
    /// The classes whose pixels carry object numbers, over every image (in parallel). A thing class's pixels without an
    /// object number become void, so the evidence is weighed: a class made a thing by one object in one image is
    /// refused (a stray object number would void every other pixel of it: give --things), and a thing class most of
    /// whose pixels carry no object number gets a warning with the share that becomes void.
    /// </summary>
    private static bool[] FindThings(List<(string Image, string Mask, string Stem)> entries,
        Dictionary<string, string> classFiles, DatasetDescription classes, ImageReader reader, string dir,
        List<string> warnings)
    {
        int n = classes.Classes;
        var objects = new long[n];
        var images = new long[n];
        var withIds = new long[n];
        var without = new long[n];
        var first = new string?[n];
        var gate = new object();
        Parallel.ForEach(entries, e =>
        {
            var ids = InstanceMasks.FromIds(reader.ReadMask(e.Mask), e.Mask);
            var raw = reader.ReadMask(classFiles[e.Stem], paletteIndices: classes.Encoding != MaskEncoding.Palette);
            var labels = MaskDecoder.Decode(raw, classes, classFiles[e.Stem]);
            if (labels.Length != ids.Length)
                throw new DataException($"{classFiles[e.Stem]}: its size differs from {e.Mask}'s.", e.Mask);
            var seen = new HashSet<(byte, int)>();
            var on = new long[n];
            var off = new long[n];
            for (int i = 0; i < ids.Length; i++)
            {
                if (labels[i] >= n) continue; // ignored
                if (ids[i] != 0) { on[labels[i]]++; seen.Add((labels[i], ids[i])); }
                else off[labels[i]]++;
            }
            lock (gate)
                for (int c = 0; c < n; c++)
                {
                    withIds[c] += on[c]; without[c] += off[c];
                    int count = seen.Count(x => x.Item1 == c);
                    if (count == 0) continue;
                    objects[c] += count; images[c]++;
                    if (first[c] is null || string.CompareOrdinal(e.Mask, first[c]) < 0) first[c] = e.Mask;
                }
        });
        if (objects.All(o => o == 0))
            throw new DataException($"{dir}: no object numbers on any class: panoptic data needs objects (masks/); "
                + "for classes alone, train semantic segmentation.", dir);
        var flags = new bool[n];
        for (int c = 0; c < n; c++)
        {
            if (objects[c] == 0) continue;
            flags[c] = true;
            double voided = without[c] / (double)Math.Max(1, without[c] + withIds[c]);
            string name = $"class {c} ({classes.ClassNames[c]})";
            if (objects[c] == 1 && entries.Count > 1 && without[c] > withIds[c])
                throw new DataException($"{dir}: {name} would be a thing class on the evidence of one object, in "
                    + $"{first[c]}, and its other {without[c]:N0} pixels ({voided:P1}), which carry no object number, "
                    + "would become void. If that object number is stray, remove it; else say the thing classes "
                    + "(--things, DatasetOptions.ThingClasses).", first[c]!);
            if (voided > 0.5)
                warnings.Add($"warning: {name} is a thing class ({objects[c]} object(s) in {images[c]} image(s), first "
                    + $"in {first[c]}), but {voided:P1} of its pixels carry no object number and become void "
                    + "(ignored in training and scoring); if it is stuff, say the thing classes (--things).");
        }
        return flags;
    }
}
