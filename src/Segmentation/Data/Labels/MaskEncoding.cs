using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Segmentation.Data;

/// <summary>How mask files store class labels.</summary>
public enum MaskEncoding
{
    /// <summary>Detect from the masks: indexed PNG, binary 0/255 or 0/1, class index, or RGB palette (needs a palette
    /// file).</summary>
    Auto,
    /// <summary>Gray value = class index (e.g. CamVid 0..10 with 11 = void).</summary>
    Index,
    /// <summary>Two classes stored as 0/255 or 0/1; any other value is an error.</summary>
    Binary,
    /// <summary>RGB colour per class, mapped through a palette file (CSV or JSON).</summary>
    Palette,
    /// <summary>A palette PNG whose palette indices are the classes.</summary>
    IndexedPng,
    /// <summary>Instance data: a number per object (0 background; a 16-bit PNG, or 8-bit under 255 objects), or the
    /// Data Science Bowl layout of one binary mask per object. The model's classes are background, object and
    /// object boundary (<see cref="InstanceSettings"/>).</summary>
    InstanceIds,
}

/// <summary>An RGB colour.</summary>
public readonly record struct Rgb(byte R, byte G, byte B)
{
    /// <summary>Packed as 0xRRGGBB.</summary>
    public int Packed => R << 16 | G << 8 | B;

    /// <summary>From 0xRRGGBB.</summary>
    public static Rgb FromPacked(int v) => new((byte)(v >> 16), (byte)(v >> 8), (byte)v);

    /// <summary>#rrggbb.</summary>
    public override string ToString() => $"#{R:x2}{G:x2}{B:x2}";
}

/// <summary>
/// What the labels mean: class count, names and display colours, the ignore index and how mask files encode them.
/// Travels with the data set and into checkpoints.
/// </summary>
public sealed record DatasetDescription
{
    /// <summary>Number of classes (labels 0 .. Classes-1).</summary>
    public int Classes { get; init; }
    /// <summary>One name per class.</summary>
    public string[] ClassNames { get; init; } = Array.Empty<string>();
    /// <summary>One display colour per class.</summary>
    public Rgb[] ClassColors { get; init; } = Array.Empty<Rgb>();
    /// <summary>
    /// Value in the mask files whose pixels are ignored by losses and metrics (0-255, not a class). Decoded masks
    /// always carry <see cref="Labels.Ignore"/> (255) for these pixels, whatever the file used.
    /// </summary>
    public int IgnoreIndex { get; init; } = Labels.Ignore;
    /// <summary>How mask files are read.</summary>
    public MaskEncoding Encoding { get; init; } = MaskEncoding.Index;
    /// <summary>For <see cref="MaskEncoding.Palette"/>: packed colour to label (a class, or the ignore
    /// index).</summary>
    public Dictionary<int, int>? ColorToLabel { get; init; }
    /// <summary>Image channels fed to the model.</summary>
    public int InChannels { get; init; } = 3;
    /// <summary>For <see cref="MaskEncoding.Binary"/>: gray values at or above this are class 1 (null: only 0 and 255,
    /// or 0 and 1, are allowed).</summary>
    public int? BinaryThreshold { get; init; }
    /// <summary>What is segmented: classes per pixel, or objects too.</summary>
    public SegmentationTaskKind Task { get; init; } = SegmentationTaskKind.Semantic;
    /// <summary>For instance data: the boundary target and the decoding of predictions into objects.</summary>
    public InstanceSettings? Instances { get; init; }

    /// <summary>The model's output planes for this data: the classes, and for instance data the planes its target adds
    /// after them (<see cref="InstanceSettings.ExtraPlanes"/>).</summary>
    public int OutputPlanes() => Classes + (Task == SegmentationTaskKind.Semantic ? 0 : Instances?.ExtraPlanes ?? 0);

    /// <summary>For panoptic data, how its class masks read: the classes before the boundary, as a semantic
    /// description; for other data, this description.</summary>
    public DatasetDescription ClassMasks() => Task != SegmentationTaskKind.Panoptic ? this : this with
    {
        Classes = Classes - 1, ClassNames = ClassNames[..^1], ClassColors = ClassColors[..^1],
        Task = SegmentationTaskKind.Semantic, Instances = null,
    };

    /// <summary>"3 classes (background, circle, rectangle), index masks, ignore index 255, 3-channel images": the
    /// arrays spelled out, not their .NET type.</summary>
    public override string ToString() =>
        $"{Classes} classes ({string.Join(", ", ClassNames)}), {Encoding.ToString().ToLowerInvariant()} masks"
            + $"{(BinaryThreshold is { } t ? $" (threshold {t})" : "")}, ignore index {IgnoreIndex}, "
            + $"{InChannels}-channel "
            + $"images, colours {string.Join(" ", ClassColors.Select(c => c.ToString()))}"
            + (Task == SegmentationTaskKind.Semantic ? ""
            : $", {Task.ToString().ToLowerInvariant()} task ({Instances})");

    /// <summary>Checks consistency; throws <see cref="OptionsException"/>.</summary>
    public void Validate()
    {
        if (Classes < 1 || Classes > 255)
            throw new OptionsException($"Class count {Classes} must be between 1 and 255.");
        if (IgnoreIndex < 0 || IgnoreIndex > 255)
            throw new OptionsException($"Ignore index {IgnoreIndex} must be between 0 and 255.");
        if (IgnoreIndex < Classes)
            throw new OptionsException($"Ignore index {IgnoreIndex} is one of the {Classes} classes "
                + $"(0-{Classes - 1}); it must be {Classes} or more.");
        if (ClassNames.Length != Classes)
            throw new OptionsException($"{ClassNames.Length} class names for {Classes} classes.");
        if (ClassColors.Length != Classes)
            throw new OptionsException($"{ClassColors.Length} class colours for {Classes} classes.");
        if (Encoding == MaskEncoding.Auto)
            throw new OptionsException("A data set description needs a concrete mask encoding, not Auto.");
        if (Encoding == MaskEncoding.Palette && (ColorToLabel is null || ColorToLabel.Count == 0))
            throw new OptionsException("Palette masks need a colour-to-class map (a palette file).");
        if (Encoding == MaskEncoding.Binary && Classes != 2)
            throw new OptionsException($"Binary masks have 2 classes; {Classes} were given.");
        if (InChannels < 1) throw new OptionsException($"Input channels {InChannels} must be at least 1.");
        if (BinaryThreshold is { } t && (Encoding != MaskEncoding.Binary || t < 1 || t > 65535))
            throw new OptionsException($"Binary threshold {t} needs binary masks and a value from 1 to 65535.");
        if (Task != SegmentationTaskKind.Semantic)
        {
            if (Instances is null) throw new OptionsException($"The {Task} task needs instance settings.");
            Instances.Validate(Classes);
        }
    }

    /// <summary>Default names ("class 0" ...) and distinct colours for <paramref name="classes"/> classes.</summary>
    public static (string[] Names, Rgb[] Colors) Defaults(int classes, bool binary = false)
    {
        var names = binary && classes == 2 ? new[] { "background", "foreground" } : Enumerable.Range(0, classes)
            .Select(i => $"class {i}").ToArray();
        return (names, Enumerable.Range(0, classes).Select(DefaultColor).ToArray());
    }

    /// <summary>A distinct colour for class <paramref name="i"/> (the Pascal VOC bit-interleaved palette).</summary>
    public static Rgb DefaultColor(int i)
    {
        int r = 0, g = 0, b = 0, c = i;
        for (int j = 0; j < 8; j++)
        {
            r |= ((c >> 0) & 1) << (7 - j);
            g |= ((c >> 1) & 1) << (7 - j);
            b |= ((c >> 2) & 1) << (7 - j);
            c >>= 3;
        }
        return new Rgb((byte)r, (byte)g, (byte)b);
    }

    /// <summary>As JSON (for checkpoints).</summary>
    public JsonObject ToJson()
    {
        var o = new JsonObject
        {
            ["classes"] = Classes,
            ["classNames"] = new JsonArray(ClassNames.Select(n => (JsonNode?)n).ToArray()),
            ["classColors"] = new JsonArray(ClassColors.Select(c => (JsonNode?)c.ToString()).ToArray()),
            ["ignoreIndex"] = IgnoreIndex,
            ["encoding"] = Encoding.ToString(),
            ["colorToLabel"] = ColorToLabel is null ? null
                : new JsonObject(ColorToLabel.Select(kv => KeyValuePair.Create(Rgb.FromPacked(kv.Key).ToString(),
                (JsonNode?)kv.Value))),
            ["inChannels"] = InChannels,
            ["binaryThreshold"] = BinaryThreshold,
        };
        if (Task == SegmentationTaskKind.Semantic) return o; // as semantic checkpoints have always read
        o["task"] = Task.ToString().ToLowerInvariant();
        o["instances"] = Instances?.ToJson();
        return o;
    }

    /// <summary>From <see cref="ToJson"/>'s output.</summary>
    public static DatasetDescription FromJson(JsonObject o)
    {
        var d = new DatasetDescription
        {
            Classes = o["classes"]!.GetValue<int>(),
            ClassNames = o["classNames"]!.AsArray().Select(n => n!.GetValue<string>()).ToArray(),
            ClassColors = o["classColors"]!.AsArray()
                .Select(n => ClassPalette.ParseColor(n!.GetValue<string>(), "checkpoint")).ToArray(),
            IgnoreIndex = o["ignoreIndex"]!.GetValue<int>(),
            Encoding = Enum.Parse<MaskEncoding>(o["encoding"]!.GetValue<string>()),
            ColorToLabel = o["colorToLabel"] is JsonObject m
                ? m.ToDictionary(kv => ClassPalette.ParseColor(kv.Key, "checkpoint").Packed,
                kv => kv.Value!.GetValue<int>()) : null,
            InChannels = o["inChannels"]!.GetValue<int>(),
            BinaryThreshold = o["binaryThreshold"]?.GetValue<int>(),
            Task = o["task"] is { } task ? Enum.Parse<SegmentationTaskKind>(task.GetValue<string>(), ignoreCase: true)
                : SegmentationTaskKind.Semantic,
            Instances = o["instances"] is JsonObject instances ? InstanceSettings.FromJson(instances) : null,
        };
        d.Validate();
        return d;
    }
}

/// <summary>Class names and colours read from a CSV (<c>index,name,r,g,b</c> or <c>name,color</c>) or JSON
/// file.</summary>
internal static class ClassPalette
{
    /// <summary>One entry of a palette file.</summary>
    public sealed record Entry(int Index, string Name, Rgb Color);

    /// <summary>
    /// Reads a palette. CSV: a header row naming columns <c>name</c> and either <c>r,g,b</c> or <c>color</c> (#rrggbb),
    /// optionally <c>index</c>; JSON: an array (or <c>{"classes": [...]}</c>) of objects with <c>name</c>, <c>color</c>
    /// (#rrggbb or [r,g,b]) and optionally <c>index</c>. Without indices, entries are numbered in order.
    /// </summary>
    public static IReadOnlyList<Entry> Load(string path)
    {
        string text;
        try { text = RegularFile.ReadAllText(path, Limits.ConfigFileBytes, "palette file"); }
        catch (Exception e) when (e is IOException
            || e is UnauthorizedAccessException
            || e is InvalidDataException) { throw new DataException($"{path}: cannot read the palette file "
            + $"({e.Message}).", path, e); }
        var entries = text.TrimStart().StartsWith('[') || text.TrimStart().StartsWith('{') ? ParseJson(text, path)
            : ParseCsv(text, path);
        if (entries.Count == 0) throw new DataException($"{path}: the palette file lists no classes.", path);
        var dupIndex = entries.GroupBy(e => e.Index).FirstOrDefault(g => g.Count() > 1);
        if (dupIndex is not null)
            throw new DataException($"{path}: index {dupIndex.Key} is listed {dupIndex.Count()} times.", path);
        var dupColor = entries.GroupBy(e => e.Color).FirstOrDefault(g => g.Count() > 1);
        if (dupColor is not null)
            throw new DataException($"{path}: colour {dupColor.Key} is given to "
                + $"{string.Join(" and ", dupColor.Select(e => e.Name))}; each class needs its own colour.", path);
        return entries;
    }

    /// <summary>Builds a description from palette entries; the entry whose index is the ignore index maps to
    /// ignore.</summary>
    public static DatasetDescription ToDescription(IReadOnlyList<Entry> entries, int ignoreIndex, string path)
    {
        var classes = entries.Where(e => e.Index != ignoreIndex).OrderBy(e => e.Index).ToList();
        for (int i = 0; i < classes.Count; i++)
            if (classes[i].Index != i)
                throw new DataException($"{path}: class indices must run 0..{classes.Count - 1} (besides the ignore "
                    + $"index {ignoreIndex}); index {i} is missing.", path);
        return new DatasetDescription
        {
            Classes = classes.Count,
            ClassNames = classes.Select(e => e.Name).ToArray(),
            ClassColors = classes.Select(e => e.Color).ToArray(),
            IgnoreIndex = ignoreIndex,
            Encoding = MaskEncoding.Palette,
            ColorToLabel = entries.ToDictionary(e => e.Color.Packed, e => e.Index == ignoreIndex ? ignoreIndex
                : e.Index),
        };
    }

    internal static Rgb ParseColor(string s, string path)
    {
        var t = s.Trim().TrimStart('#');
        if (t.Length == 6 && int.TryParse(t, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var v))
            return Rgb.FromPacked(v);
        throw new DataException($"{path}: colour '{s}' is not of the form #rrggbb.", path);
    }

    /// <summary>The CSV's rows as RFC 4180 reads them (quoted fields with commas, doubled quotes and line breaks;
    /// lines starting with # are comments), by the runtime's own parser (Microsoft.VisualBasic's TextFieldParser), with
    /// the line each starts on.</summary>
    private static List<(long Line, string[] Cells)> CsvRows(string text, string path)
    {
        using var parser = new Microsoft.VisualBasic.FileIO.TextFieldParser(new StringReader(text))
        {
            TextFieldType = Microsoft.VisualBasic.FileIO.FieldType.Delimited, HasFieldsEnclosedInQuotes = true,
            TrimWhiteSpace = true, CommentTokens = new[] { "#" },
        };
        parser.SetDelimiters(",");
        var rows = new List<(long, string[])>();
        while (!parser.EndOfData)
        {
            long line = parser.LineNumber;
            try
            {
                if (parser.ReadFields() is { } cells && cells.Any(c => c.Length > 0)) rows.Add((line, cells));
            }
            catch (Microsoft.VisualBasic.FileIO.MalformedLineException e)
            {
                throw new DataException($"{path}: line {e.LineNumber} is not valid CSV (an unclosed or stray quote?).",
                    path, e);
            }
        }
        return rows;
    }

    private static List<Entry> ParseCsv(string text, string path)
    {
        var table = CsvRows(text, path);
        if (table.Count < 2)
            throw new DataException($"{path}: a CSV palette needs a header row and one row per class.", path);
        var lines = table.Select(r => string.Join(",", r.Cells)).ToList();
        var header = table[0].Cells.Select(h => h.Trim().ToLowerInvariant()).ToList();
        int Col(params string[] names) => header.FindIndex(h => names.Contains(h));
        int iIndex = Col("index", "id", "label"), iName = Col("name", "class", "label_name"), iR = Col("r", "red"),
            iG = Col("g", "green"), iB = Col("b", "blue"), iColor = Col("color", "colour", "rgb", "hex");
        if (iName < 0 || (iColor < 0 && (iR < 0 || iG < 0 || iB < 0)))
            throw new DataException($"{path}: the header '{lines[0]}' needs a 'name' column and either 'r,g,b' or "
                + $"'color' columns.", path);
        var entries = new List<Entry>();
        for (int row = 1; row < lines.Count; row++)
        {
            var cells = table[row].Cells;
            string Cell(int i) => i < cells.Length ? cells[i]
                : throw new DataException($"{path}: line {table[row].Line} has {cells.Length} cells; the header has "
                + $"{header.Count}.", path);
            byte Channel(int i)
            {
                var c = Cell(i);
                return byte.TryParse(c, NumberStyles.Integer, CultureInfo.InvariantCulture, out var b) ? b
                    : throw new DataException($"{path}: line {table[row].Line}: colour value '{c}' is not an integer "
                    + $"0-255.",
                    path);
            }
            int index = entries.Count;
            if (iIndex >= 0 && !int.TryParse(Cell(iIndex), NumberStyles.Integer, CultureInfo.InvariantCulture,
                out index))
                throw new DataException($"{path}: line {table[row].Line}: index '{Cell(iIndex)}' is not an integer.",
                    path);
            var color = iColor >= 0 ? ParseColor(Cell(iColor), path) : new Rgb(Channel(iR), Channel(iG), Channel(iB));
            entries.Add(new Entry(index, Cell(iName), color));
        }
        return entries;
    }

    private static List<Entry> ParseJson(string text, string path)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(text); }
        catch (JsonException e) { throw new DataException($"{path}: not valid JSON ({e.Message}).", path, e); }
        var array = root as JsonArray ?? root?["classes"] as JsonArray
            ?? throw new DataException($"{path}: expected a JSON array of classes or an object with a 'classes' "
            + $"array.", path);
        var entries = new List<Entry>();
        foreach (var node in array)
        {
            if (node is not JsonObject o)
                throw new DataException($"{path}: each class must be an object with 'name' and 'color'.", path);
            try
            {
                var name = o["name"]?.GetValue<string>()
                    ?? throw new DataException($"{path}: class {entries.Count} has no 'name'.", path);
                var c = o["color"] ?? o["colour"] ?? throw new DataException($"{path}: class '{name}' has no 'color'.",
                    path);
                var color = c is JsonArray rgb && rgb.Count == 3
                    ? new Rgb(rgb[0]!.GetValue<byte>(), rgb[1]!.GetValue<byte>(), rgb[2]!.GetValue<byte>())
                    : ParseColor(c.GetValue<string>(), path);
                entries.Add(new Entry(o["index"]?.GetValue<int>() ?? entries.Count, name, color));
            }
            catch (Exception e) when (e is InvalidOperationException || e is FormatException || e is OverflowException)
            {
                throw new DataException($"{path}: class {entries.Count}: {e.Message}", path, e);
            }
        }
        return entries;
    }
}

/// <summary>The label space of decoded masks.</summary>
public static class Labels
{
    /// <summary>The label of ignored pixels in every decoded mask, padding and batch (whatever value the files
    /// use).</summary>
    public const byte Ignore = 255;
}

/// <summary>Turns decoded mask values into labels (classes, or <see cref="Labels.Ignore"/>), checking every
/// pixel.</summary>
internal static class MaskDecoder
{
    /// <summary>Labels, one byte per pixel. Throws <see cref="DataException"/> naming the file, the value and its pixel
    /// count.</summary>
    public static byte[] Decode(RawMask raw, DatasetDescription d, string path)
    {
        var labels = new byte[raw.Values.Length];
        var bad = new Dictionary<int, int>();
        var values = raw.Values;
        switch (d.Encoding)
        {
            case MaskEncoding.Binary:
                RequireKind(raw, path, RawMaskKind.Gray, "binary");
                if (d.BinaryThreshold is { } threshold)
                    for (int i = 0; i < values.Length; i++) labels[i] = values[i] >= threshold ? (byte)1 : (byte)0;
                else
                    for (int i = 0; i < values.Length; i++)
                    {
                        int v = values[i];
                        labels[i] = v switch { 0 => 0, 1 or 255 or 65535 => 1, _ when v == d.IgnoreIndex
                            => Labels.Ignore, _ => Bad(bad, v) };
                    }
                if (bad.Count > 0)
                    throw Error(path, bad,
                        "binary masks hold only 0 and 255 (or 0 and 1); for masks saved lossily (JPEG) give a "
                            + "threshold (--binary-threshold 128)");
                break;
            case MaskEncoding.Index:
            case MaskEncoding.IndexedPng:
                RequireKind(raw, path, d.Encoding == MaskEncoding.Index ? RawMaskKind.Gray : RawMaskKind.Indexed,
                    d.Encoding == MaskEncoding.Index ? "class-index" : "indexed-PNG");
                for (int i = 0; i < values.Length; i++)
                {
                    int v = values[i];
                    labels[i] = v < d.Classes ? (byte)v : v == d.IgnoreIndex ? Labels.Ignore : Bad(bad, v);
                }
                if (bad.Count > 0)
                    throw Error(path, bad,
                        $"the data set has {d.Classes} classes (0-{d.Classes - 1}) and ignore index {d.IgnoreIndex}");
                break;
            case MaskEncoding.Palette:
                var map = d.ColorToLabel!;
                for (int i = 0; i < values.Length; i++)
                {
                    int v = raw.Kind == RawMaskKind.Gray ? values[i] * 0x010101 : values[i];
                    labels[i] = map.TryGetValue(v, out var label) ? (label == d.IgnoreIndex ? Labels.Ignore
                        : (byte)label) : Bad(bad, v);
                }
                if (bad.Count > 0)
                {
                    var (value, count) = bad.OrderByDescending(kv => kv.Value).First();
                    throw new DataException($"{path}: colour {Rgb.FromPacked(value)} at {count} pixels is not in the "
                        + $"palette ({bad.Count} unknown colour(s) in all; the palette has {map.Count}).", path);
                }
                break;
            default:
                throw new OptionsException($"Mask encoding {d.Encoding} must be resolved before decoding.");
        }
        return labels;
    }

    private static byte Bad(Dictionary<int, int> bad, int v)
    {
        bad[v] = bad.TryGetValue(v, out var n) ? n + 1 : 1;
        return 0;
    }

    private static DataException Error(string path, Dictionary<int, int> bad, string expected)
    {
        var (value, count) = bad.OrderBy(kv => kv.Key).First();
        var more = bad.Count > 1
            ? $" ({bad.Count} unexpected values in all: "
            + $"{string.Join(", ", bad.Keys.OrderBy(k => k).Take(8))}{(bad.Count > 8 ? ", ..." : "")})" : "";
        return new DataException($"{path}: label {value} at {count} pixels, but {expected}{more}.", path);
    }

    private static void RequireKind(RawMask raw, string path, RawMaskKind kind, string name)
    {
        if (raw.Kind == kind || (kind == RawMaskKind.Indexed && raw.Kind == RawMaskKind.Gray)
            || (kind == RawMaskKind.Gray && raw.Kind == RawMaskKind.Indexed)) return;
        throw new DataException(raw.Kind == RawMaskKind.Rgb
            ? $"{path}: the mask is a colour image, but the encoding is {name}; use the palette encoding with a "
            + $"palette file that maps colours to classes."
            : $"{path}: the mask is {raw.Kind.ToString().ToLowerInvariant()}, but the encoding is {name}.", path);
    }
}
