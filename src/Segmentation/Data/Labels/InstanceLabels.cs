using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

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

/// <summary>What an instance model predicts besides the classes (<see cref="InstanceSettings.Target"/>).</summary>
public enum InstanceTarget
{
    /// <summary>The classes and the boundary class only: objects are seeded from their interiors and flooded in
    /// the order of P(object).</summary>
    Boundary,
    /// <summary>One more output plane: each object pixel's distance to the nearest pixel outside its object, over the
    /// object's largest (StarDist's object probability, 1 at the centre of every object, large or small), learned as
    /// a probability. Objects are seeded where it is at least the seed threshold and flooded from their centres
    /// outwards.</summary>
    Distance,
}

/// <summary>
/// How instance data becomes a per-pixel target, and predictions become objects again. The model predicts, per pixel,
/// the data's classes plus one more, the boundary of an object (the Data Science Bowl 2018 winners' targets:
/// background, object interior, object boundary), and with <see cref="InstanceTarget.Distance"/> one more plane, each
/// object pixel's normalised distance to its object's edge; <c>InstanceDecoder</c> turns its output into objects with
/// a seeded watershed. Cellpose's flows would be a further target behind the same task.
/// </summary>
public sealed record InstanceSettings
{
    /// <summary>What the model predicts besides the classes; the distance adds an output plane after them.</summary>
    public InstanceTarget Target { get; init; } = InstanceTarget.Boundary;
    /// <summary>Output planes beyond the classes that <see cref="Target"/> adds.</summary>
    [JsonIgnore]
    public int ExtraPlanes => Target == InstanceTarget.Distance ? 1 : 0;
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
    /// more readily. With the distance target: the pixels whose predicted normalised distance is at least this (null:
    /// 0.5, the inner half of each object).</summary>
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
    public override string ToString() => (Target == InstanceTarget.Distance ? "distance target, " : "")
        + $"boundary {BoundaryWidth} px (weight "
        + $"{BoundaryWeight.ToString(CultureInfo.InvariantCulture)}), objects of {MinSize} px or more, seeds of "
        + $"{MinSeedSize} px or more"
        + (SeedThreshold is { } t ? $" where {(Target == InstanceTarget.Distance ? "the distance" : "P(object)")} >= "
            + t.ToString(CultureInfo.InvariantCulture) : "");

    /// <summary>As JSON (checkpoints, ONNX metadata).</summary>
    public JsonObject ToJson()
    {
        var o = new JsonObject
        {
            ["boundaryWidth"] = BoundaryWidth, ["boundaryWeight"] = BoundaryWeight, ["minSize"] = MinSize,
            ["minSeedSize"] = MinSeedSize, ["things"] = new JsonArray(Things.Select(t => (JsonNode?)t).ToArray()),
            ["seedThreshold"] = SeedThreshold,
        };
        // only when not the boundary: records of boundary models read as they always have
        if (Target != InstanceTarget.Boundary) o["target"] = Target.ToString().ToLowerInvariant();
        return o;
    }

    /// <summary>From <see cref="ToJson"/>'s output.</summary>
    public static InstanceSettings FromJson(JsonObject o) => new()
    {
        BoundaryWidth = o["boundaryWidth"]!.GetValue<int>(), BoundaryWeight = o["boundaryWeight"]!.GetValue<double>(),
        MinSize = o["minSize"]!.GetValue<int>(), MinSeedSize = o["minSeedSize"]!.GetValue<int>(),
        Things = o["things"]!.AsArray().Select(t => t!.GetValue<bool>()).ToArray(),
        SeedThreshold = o["seedThreshold"]?.GetValue<double>(), Target = ParseTarget(o["target"]?.GetValue<string>()),
    };

    /// <summary>A target by its name (any case); null (records older than the distance target): the
    /// boundary.</summary>
    public static InstanceTarget ParseTarget(string? name) => name is null ? InstanceTarget.Boundary
        : Enum.TryParse<InstanceTarget>(name, ignoreCase: true, out var t) && Enum.IsDefined(t)
            && !int.TryParse(name, out _) ? t
        : throw new DataException($"Instance target '{name}': expected one of "
            + $"{string.Join(", ", Enum.GetNames<InstanceTarget>().Select(n => n.ToLowerInvariant()))}.");

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

/// <summary>
/// The distance target of instance data (<see cref="InstanceTarget.Distance"/>): each object pixel's Euclidean distance
/// to the nearest pixel of another object or the background, over the largest in its object (StarDist's object
/// probability: 1 at every object's centre, 1 / radius at its edge), 0 on the background. The image's edge is no edge
/// of an object (a crop cuts objects; StarDist pads by the edge). Exact distances (Felzenszwalb and Huttenlocher's
/// transform), each object in its own bounding box and a pixel around it: time in proportion to the pixels.
/// </summary>
public static class DistanceTargets
{
    /// <summary>The targets of <paramref name="count"/> images of <paramref name="height"/> x <paramref name="width"/>
    /// object numbers lying one after another.</summary>
    public static float[] Make(ushort[] instances, int count, int height, int width)
    {
        int n = height * width;
        if (instances.Length != (long)count * n)
            throw new ArgumentException($"{instances.Length} object numbers for {count} images of {width}x{height}.");
        var target = new float[instances.Length];
        Parallel.For(0, count, b => Image(instances.AsSpan(b * n, n), target.AsSpan(b * n, n), height, width));
        return target;
    }

    /// <summary>An object's bounding box: the first and last row and column.</summary>
    private struct Box { public int X0, Y0, X1, Y1; }

    private static void Image(ReadOnlySpan<ushort> ids, Span<float> target, int height, int width)
    {
        var boxes = new Dictionary<int, Box>();
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                int id = ids[y * width + x];
                if (id == 0) continue;
                boxes[id] = boxes.TryGetValue(id, out var b)
                    ? new Box { X0 = Math.Min(b.X0, x), Y0 = b.Y0, X1 = Math.Max(b.X1, x), Y1 = y }
                    : new Box { X0 = x, Y0 = y, X1 = x, Y1 = y };
            }
        foreach (var (id, b) in boxes) Object(ids, target, height, width, id, b);
    }

    /// <summary>Stands for "no source pixel yet" in the squared distances (above any in an image of 2^16 px a
    /// side, exact in a double).</summary>
    private const double Far = 1e12;

    private static void Object(ReadOnlySpan<ushort> ids, Span<float> target, int height, int width, int id, Box b)
    {
        int x0 = Math.Max(0, b.X0 - 1), y0 = Math.Max(0, b.Y0 - 1);
        int w = Math.Min(width - 1, b.X1 + 1) - x0 + 1, h = Math.Min(height - 1, b.Y1 + 1) - y0 + 1;
        var d = new double[w * h];
        bool any = false;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                bool inside = ids[(y0 + y) * width + x0 + x] == id;
                d[y * w + x] = inside ? Far : 0;
                any |= !inside;
            }
        Transform(d, w, h);
        double max = 0;
        for (int i = 0; i < d.Length; i++) if (d[i] > max && d[i] < Far) max = d[i];
        max = Math.Sqrt(max);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                int p = (y0 + y) * width + x0 + x;
                if (ids[p] == id) target[p] = any && max > 0 ? (float)(Math.Sqrt(d[y * w + x]) / max) : 1f;
            }
    }

    /// <summary>Squared Euclidean distances to the nearest zero, in place: columns, then rows.</summary>
    private static void Transform(double[] d, int w, int h)
    {
        int longest = Math.Max(w, h);
        var f = new double[longest]; var r = new double[longest];
        var v = new int[longest]; var z = new double[longest + 1];
        for (int x = 0; x < w; x++)
        {
            for (int y = 0; y < h; y++) f[y] = d[y * w + x];
            Lower(f, h, r, v, z);
            for (int y = 0; y < h; y++) d[y * w + x] = r[y];
        }
        for (int y = 0; y < h; y++)
        {
            for (int x = 0; x < w; x++) f[x] = d[y * w + x];
            Lower(f, w, r, v, z);
            for (int x = 0; x < w; x++) d[y * w + x] = Math.Min(r[x], Far);
        }
    }

    /// <summary>Where the parabolas of <paramref name="p"/> and <paramref name="q"/> cross.</summary>
    private static double Meet(double[] f, int p, int q) => (f[q] + (double)q * q - (f[p] + (double)p * p))
        / (2.0 * (q - p));

    /// <summary>The lower envelope of the parabolas (q - p)^2 + f(p), sampled at q = 0..n-1.</summary>
    private static void Lower(double[] f, int n, double[] result, int[] v, double[] z)
    {
        int k = 0;
        v[0] = 0; z[0] = double.NegativeInfinity; z[1] = double.PositiveInfinity;
        for (int q = 1; q < n; q++)
        {
            double s = Meet(f, v[k], q);
            while (s <= z[k]) s = Meet(f, v[--k], q); // z[0] is minus infinity: k stays at 0 or above
            k++; v[k] = q; z[k] = s; z[k + 1] = double.PositiveInfinity;
        }
        k = 0;
        for (int q = 0; q < n; q++)
        {
            while (z[k + 1] < q) k++;
            double dq = q - v[k];
            result[q] = dq * dq + f[v[k]];
        }
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
