using System.Globalization;
using System.Text.Json.Nodes;

namespace Segmentation.Data;

/// <summary>What is segmented.</summary>
public enum SegmentationTaskKind
{
    /// <summary>A class per pixel.</summary>
    Semantic,
    /// <summary>Every object its own mask (counted objects of one kind: nuclei, parts, buildings).</summary>
    Instance,
    /// <summary>Objects of thing classes by instance, stuff classes by region.</summary>
    Panoptic,
}

/// <summary>
/// How instance data becomes a per-pixel target, and predictions become objects again. The model predicts, per pixel,
/// the data's classes plus one more, the boundary of an object (the Data Science Bowl 2018 winners' targets:
/// background, object interior, object boundary); <c>InstanceDecoder</c> turns its output into objects with a seeded
/// watershed. Other targets (distance maps, Cellpose's flows) would be further settings behind the same task.
/// </summary>
public sealed record InstanceSettings
{
    /// <summary>Pixels of an object within this many pixels (8-connected) of another object or of the background are
    /// its boundary.</summary>
    public int BoundaryWidth { get; init; } = 2;
    /// <summary>Loss weight of the boundary class (the other classes weigh 1) when no class weights are
    /// given.</summary>
    public double BoundaryWeight { get; init; } = 2;
    /// <summary>Smallest predicted object kept, in pixels.</summary>
    public int MinSize { get; init; } = 8;
    /// <summary>Smallest interior region that seeds an object, in pixels.</summary>
    public int MinSeedSize { get; init; } = 4;
    /// <summary>Seeds are the pixels whose probability of a thing class is at least this (StarDist's probability
    /// threshold); null: the pixels whose best class is a thing class (the argmax). Higher splits touching objects
    /// more readily.</summary>
    public double? SeedThreshold { get; init; }
    /// <summary>For each class before the boundary: whether it is a thing class (counted objects). Instance data:
    /// background no, object yes.</summary>
    public bool[] Things { get; init; } = { false, true };

    /// <summary>Throws <see cref="OptionsException"/> when a setting is out of range for a model of
    /// <paramref name="classes"/> classes (the boundary last).</summary>
    public void Validate(int classes)
    {
        ValidateSizes();
        if (Things.Length != classes - 1 || !Things.Contains(true))
            throw new OptionsException($"{Things.Length} thing flags for a model of {classes} classes (the last the "
                + $"boundary): give one per class before it, and at least one thing class.");
    }

    /// <summary>Throws <see cref="OptionsException"/> when a width, weight or size is out of range (what the flags
    /// set, before the data says how many classes there are).</summary>
    public void ValidateSizes()
    {
        if (BoundaryWidth is < 1 or > 16)
            throw new OptionsException($"Boundary width {BoundaryWidth}: it must be 1 to 16 pixels.");
        if (!(BoundaryWeight > 0 && BoundaryWeight <= 100))
            throw new OptionsException($"Boundary weight {BoundaryWeight}: it must be above 0 and at most 100.");
        if (MinSize < 1 || MinSeedSize < 1)
            throw new OptionsException($"Minimum object size {MinSize} and seed size {MinSeedSize} must be at least "
                + $"1.");
        if (SeedThreshold is { } t && !(t > 0 && t < 1))
            throw new OptionsException($"Seed threshold {t}: expected a probability above 0 and below 1.");
    }

    /// <summary>"boundary 2 px (weight 2), objects of 8 px or more".</summary>
    public override string ToString() => $"boundary {BoundaryWidth} px (weight "
        + $"{BoundaryWeight.ToString(CultureInfo.InvariantCulture)}), objects of {MinSize} px or more, seeds of "
        + $"{MinSeedSize} px or more"
        + (SeedThreshold is { } t ? $" where P(object) >= {t.ToString(CultureInfo.InvariantCulture)}" : "");

    /// <summary>As JSON (checkpoints, ONNX metadata).</summary>
    public JsonObject ToJson() => new()
    {
        ["boundaryWidth"] = BoundaryWidth, ["boundaryWeight"] = BoundaryWeight, ["minSize"] = MinSize,
        ["minSeedSize"] = MinSeedSize, ["things"] = new JsonArray(Things.Select(t => (JsonNode?)t).ToArray()),
        ["seedThreshold"] = SeedThreshold,
    };

    /// <summary>From <see cref="ToJson"/>'s output.</summary>
    public static InstanceSettings FromJson(JsonObject o) => new()
    {
        BoundaryWidth = o["boundaryWidth"]!.GetValue<int>(), BoundaryWeight = o["boundaryWeight"]!.GetValue<double>(),
        MinSize = o["minSize"]!.GetValue<int>(), MinSeedSize = o["minSeedSize"]!.GetValue<int>(),
        Things = o["things"]!.AsArray().Select(t => t!.GetValue<bool>()).ToArray(),
        SeedThreshold = o["seedThreshold"]?.GetValue<double>(),
    };

    /// <summary>
    /// The description of panoptic data: the class masks' classes (<paramref name="classes"/>, with their names,
    /// colours, encoding and ignore index), <paramref name="things"/> flagging the counted ones, and the boundary class
    /// after them.
    /// </summary>
    public DatasetDescription DescribePanoptic(DatasetDescription classes, bool[] things) => classes with
    {
        Classes = classes.Classes + 1, ClassNames = classes.ClassNames.Append("boundary").ToArray(),
        ClassColors = classes.ClassColors.Append(new Rgb(230, 25, 75)).ToArray(),
        Task = SegmentationTaskKind.Panoptic, Instances = this with { Things = things },
    };

    /// <summary>The description of plain instance data: background, object and boundary.</summary>
    public DatasetDescription Describe(int inChannels) => new()
    {
        Classes = 3, ClassNames = new[] { "background", "object", "boundary" },
        ClassColors = new[] { new Rgb(0, 0, 0), new Rgb(255, 200, 0), new Rgb(230, 25, 75) },
        IgnoreIndex = Labels.Ignore, Encoding = MaskEncoding.InstanceIds, InChannels = inChannels,
        Task = SegmentationTaskKind.Instance, Instances = this with { Things = new[] { false, true } },
    };
}

/// <summary>The per-pixel target of instance data.</summary>
public static class InstanceTargets
{
    /// <summary>
    /// The class mask with the boundary class written over each object's boundary: pixels of an object that have
    /// another object or the background within <paramref name="width"/> pixels (a square window; the image edge is no
    /// boundary). Ignored pixels stay ignored. <paramref name="count"/> images of <paramref name="height"/> x
    /// <paramref name="width"/> pixels lie one after another.
    /// </summary>
    public static byte[] Make(byte[] mask, ushort[] instances, int count, int height, int imageWidth, int width,
        byte boundaryClass)
    {
        var target = (byte[])mask.Clone();
        int n = height * imageWidth;
        var low = new ushort[n]; var high = new ushort[n];
        var rowLow = new ushort[n]; var rowHigh = new ushort[n];
        for (int b = 0; b < count; b++)
        {
            var ids = instances.AsSpan(b * n, n);
            // separable minimum and maximum over the (2w+1)^2 window: an object pixel is boundary when they differ
            for (int y = 0; y < height; y++)
                for (int x = 0; x < imageWidth; x++)
                {
                    ushort lo = ushort.MaxValue, hi = 0;
                    for (int k = Math.Max(0, x - width); k <= Math.Min(imageWidth - 1, x + width); k++)
                    {
                        ushort v = ids[y * imageWidth + k];
                        if (v < lo) lo = v;
                        if (v > hi) hi = v;
                    }
                    rowLow[y * imageWidth + x] = lo; rowHigh[y * imageWidth + x] = hi;
                }
            for (int y = 0; y < height; y++)
                for (int x = 0; x < imageWidth; x++)
                {
                    ushort lo = ushort.MaxValue, hi = 0;
                    for (int k = Math.Max(0, y - width); k <= Math.Min(height - 1, y + width); k++)
                    {
                        int i = k * imageWidth + x;
                        if (rowLow[i] < lo) lo = rowLow[i];
                        if (rowHigh[i] > hi) hi = rowHigh[i];
                    }
                    int p = y * imageWidth + x;
                    if (ids[p] != 0 && (lo != hi) && target[b * n + p] != Labels.Ignore) target[b * n + p] =
                        boundaryClass;
                }
        }
        return target;
    }
}

/// <summary>Reads instance masks: a number per object in one file, or one binary file per object.</summary>
internal static class InstanceMasks
{
    /// <summary>Object numbers from a decoded mask file: 16-bit gray (0..65535) or 8-bit gray / indexed under 255
    /// objects.</summary>
    public static ushort[] FromIds(RawMask raw, string path)
    {
        if (raw.Kind == RawMaskKind.Rgb)
            throw new DataException($"{path}: a colour mask; instance masks hold one number per object (0 for the "
                + "background) as gray values. Save them as 16-bit gray PNGs (the format of StarDist and Cellpose).",
                path);
        var ids = new ushort[raw.Values.Length];
        int max = 0;
        for (int i = 0; i < ids.Length; i++) { int v = raw.Values[i]; ids[i] = (ushort)v; if (v > max) max = v; }
        if (raw.Bits == 8 && max == 255)
        {
            int at = raw.Values.Count(v => v == 255);
            throw new DataException($"{path}: an 8-bit instance mask that uses its last number, 255 (at {at} pixels): "
                + "with 255 objects or more the numbers may have wrapped round and two objects would share one. Save "
                + "the mask as a 16-bit PNG.", path);
        }
        return ids;
    }

    /// <summary>
    /// The Data Science Bowl layout: one binary PNG per object in <paramref name="folder"/>, numbered 1..N in the
    /// ordinal order of their file names. Overlapping objects are refused (the pixel count is named).
    /// </summary>
    public static ushort[] FromObjectFiles(string folder, int width, int height, ImageReader reader)
    {
        var files = Directory.Exists(folder) ? ImageFiles.In(folder)
            : throw new DataException($"{folder}: mask folder not found.", folder);
        if (files.Count > ushort.MaxValue)
            throw new DataException($"{folder}: {files.Count} objects; at most {ushort.MaxValue} fit one image.",
                folder);
        var ids = new ushort[width * height];
        long overlap = 0; string? firstOverlap = null;
        for (int k = 0; k < files.Count; k++)
        {
            var raw = reader.ReadMask(files[k]);
            if (raw.Width != width || raw.Height != height)
                throw new DataException($"{files[k]}: {raw.Width}x{raw.Height}, but its image is {width}x{height}.",
                    files[k]);
            if (raw.Kind == RawMaskKind.Rgb)
                throw new DataException($"{files[k]}: a colour image; an object mask is binary (0 and 255).", files[k]);
            for (int i = 0; i < ids.Length; i++)
            {
                int v = raw.Values[i];
                if (v == 0) continue;
                if (v != 255 && v != 1 && v != 65535)
                    throw new DataException($"{files[k]}: value {v}; an object mask holds only 0 and 255 (or 0 and 1).",
                        files[k]);
                if (ids[i] != 0) { overlap++; firstOverlap ??= $"{Path.GetFileName(files[ids[i] - 1])} and "
                    + $"{Path.GetFileName(files[k])}"; continue; }
                ids[i] = (ushort)(k + 1);
            }
        }
        if (overlap > 0)
            throw new DataException($"{folder}: objects overlap on {overlap} pixel(s) (first {firstOverlap}); an "
                + "instance mask gives each pixel one object. Fix the masks, or write them as one 16-bit ID mask "
                + "that settles each pixel.", folder);
        return ids;
    }
}
