using System.Buffers.Binary;
using System.IO.Compression;
using System.Text.Json;
using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>
/// What a weights file from elsewhere (a PyTorch <c>.pth</c>, a <c>.safetensors</c> file) must be before it is read,
/// and what its tensors must hold after: checks that cost a header read, so that a small hostile or damaged file can
/// neither take unbounded memory or time nor load silently wrong weights. Limits: <see cref="MaxPickleBytes"/>,
/// <see cref="MaxHeaderBytes"/>, and the tensors' bytes at most the file's own data (safetensors) or
/// <see cref="MaxTensorBytes"/> (a zip's declared sizes).
/// </summary>
internal static class WeightFiles
{
    /// <summary>The pickle of a <c>.pth</c> (its <c>data.pkl</c>), decompressed, at most 64 MiB: a state dict's is a
    /// few hundred KiB even for large models (names and shapes; the tensors are separate entries).</summary>
    public const long MaxPickleBytes = Limits.PickleBytes;
    /// <summary>A safetensors JSON header at most 100 MiB (the format's own reference reader refuses larger).</summary>
    public const long MaxHeaderBytes = Limits.SafetensorsHeaderBytes;
    /// <summary>All tensors of a <c>.pth</c>, decompressed, at most 64 GiB (B5 is 0.34 GB).</summary>
    public const long MaxTensorBytes = Limits.PthBytes;

    /// <summary>
    /// A <c>.pth</c> must be the zip archive <c>torch.save</c> writes (since PyTorch 1.6) whose entries declare
    /// sizes within the limits; an error naming the file says what it is instead.
    /// </summary>
    public static void CheckPyTorchFile(string path)
    {
        var length = new FileInfo(path).Length;
        if (length == 0) throw new SegmentationException($"{path}: the file is empty (0 bytes).");
        var head = new byte[4];
        using (var f = File.OpenRead(path)) f.ReadExactly(head, 0, (int)Math.Min(4, length));
        if (length < 4 || head[0] != (byte)'P' || head[1] != (byte)'K')
            throw new SegmentationException($"{path}: not a PyTorch state dict: torch.save writes a zip archive "
                + $"(since PyTorch 1.6), and this file does not start like one. Save it again with torch.save("
                + $"model.state_dict(), path), or as .safetensors.");
        using var zip = OpenZip(path);
        long tensors = 0;
        foreach (var entry in zip.Entries)
        {
            if (entry.FullName.EndsWith("data.pkl", StringComparison.Ordinal) && entry.Length > MaxPickleBytes)
                throw new SegmentationException($"{path}: its pickle ({entry.FullName}) decompresses to "
                    + $"{entry.Length:N0} bytes, over the limit of {MaxPickleBytes:N0}; a state dict's is far smaller. "
                    + $"Refused before reading it.");
            tensors += entry.Length;
        }
        if (tensors > MaxTensorBytes)
            throw new SegmentationException($"{path}: its entries decompress to {tensors:N0} bytes, over the limit of "
                + $"{MaxTensorBytes:N0}. Refused before reading them.");
    }

    private static ZipArchive OpenZip(string path)
    {
        try { return ZipFile.OpenRead(path); }
        catch (InvalidDataException e)
        {
            throw new SegmentationException($"{path}: a damaged zip archive, not a whole torch.save file ({e.Message})"
                + ".", e);
        }
    }

    private static readonly Dictionary<string, int> DtypeBytes = new()
    {
        ["F64"] = 8, ["F32"] = 4, ["F16"] = 2, ["BF16"] = 2, ["I64"] = 8, ["I32"] = 4, ["I16"] = 2, ["I8"] = 1,
        ["U8"] = 1, ["BOOL"] = 1, ["U16"] = 2, ["U32"] = 4, ["U64"] = 8,
    };

    /// <summary>
    /// A safetensors file as its specification requires: an 8-byte little-endian header size within the file and the
    /// limit, a JSON header whose tensors' byte ranges match their dtype and shape and tile the data that follows
    /// exactly (contiguous, not overlapping, in bounds). An error names the file and the first tensor that is off.
    /// </summary>
    public static void CheckSafetensors(string path)
    {
        long length = new FileInfo(path).Length;
        if (length < 8) throw new SegmentationException($"{path}: {length} bytes; a safetensors file starts with an "
            + $"8-byte header size.");
        using var f = File.OpenRead(path);
        Span<byte> size = stackalloc byte[8];
        f.ReadExactly(size);
        ulong headerSize = BinaryPrimitives.ReadUInt64LittleEndian(size);
        if (headerSize > (ulong)Math.Min(MaxHeaderBytes, length - 8))
            throw new SegmentationException($"{path}: the header declares {headerSize:N0} bytes; the file has "
                + $"{length - 8:N0} after the size and the limit is {MaxHeaderBytes:N0}.");
        var header = new byte[headerSize];
        f.ReadExactly(header);
        long data = length - 8 - (long)headerSize;
        var ranges = new List<(long Begin, long End, string Name)>();
        try
        {
            using var doc = JsonDocument.Parse(header);
            foreach (var t in doc.RootElement.EnumerateObject())
            {
                if (t.Name == "__metadata__") continue;
                var dtype = t.Value.GetProperty("dtype").GetString() ?? "";
                if (!DtypeBytes.TryGetValue(dtype, out int bytes))
                    throw new SegmentationException($"{path}: tensor '{t.Name}' has dtype '{dtype}', which this "
                        + $"library does not read.");
                long count = 1;
                foreach (var d in t.Value.GetProperty("shape").EnumerateArray())
                    count = d.GetInt64() is var n and >= 0 ? checked(count * n) : throw new SegmentationException(
                        $"{path}: tensor '{t.Name}' has a negative dimension.");
                var offsets = t.Value.GetProperty("data_offsets").EnumerateArray().Select(o => o.GetInt64()).ToArray();
                if (offsets.Length != 2 || offsets[0] < 0 || offsets[1] < offsets[0] || offsets[1] > data)
                    throw new SegmentationException($"{path}: tensor '{t.Name}' has data offsets "
                        + $"[{string.Join(", ", offsets)}], outside the {data:N0} bytes of data.");
                if (offsets[1] - offsets[0] != checked(count * bytes))
                    throw new SegmentationException($"{path}: tensor '{t.Name}' spans {offsets[1] - offsets[0]:N0} "
                        + $"bytes; its shape and {dtype} need {count * bytes:N0}.");
                ranges.Add((offsets[0], offsets[1], t.Name));
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException
            or FormatException or OverflowException)
        {
            throw new SegmentationException($"{path}: the safetensors header is malformed ({e.Message}).", e);
        }
        long next = 0;
        foreach (var (begin, end, name) in ranges.OrderBy(r => r.Begin).ThenBy(r => r.End))
        {
            if (begin != next)
                throw new SegmentationException($"{path}: tensor '{name}' starts at byte {begin:N0} of the data, where "
                    + $"{(begin < next ? "another tensor's bytes are" : "no tensor ends")}; the format requires "
                    + $"tensors to tile the data without gaps or overlaps.");
            next = end;
        }
        if (next != data)
            throw new SegmentationException($"{path}: the tensors cover {next:N0} of the {data:N0} bytes of data; the "
                + $"format requires them to cover all of it.");
    }

    /// <summary>
    /// Floating-point tensors must be finite: a NaN or infinity in imported weights makes every prediction wrong
    /// (all-zero masks) without a word. Refused, naming the tensors and how many values; with <paramref
    /// name="allowNonFinite"/> reported through <paramref name="warnings"/> instead.
    /// </summary>
    public static void CheckFinite(IReadOnlyDictionary<string, Tensor> weights, string path, bool allowNonFinite,
        IProgress<string>? warnings)
    {
        var bad = new List<string>();
        foreach (var (name, t) in weights)
        {
            if (!t.is_floating_point()) continue;
            using var scope = NewDisposeScope();
            long count = (~isfinite(t)).sum().item<long>();
            if (count > 0) bad.Add($"{name} ({count:N0} of {t.numel():N0} values)");
        }
        if (bad.Count == 0) return;
        var what = $"{path}: {bad.Count} tensor(s) hold NaN or infinite values: {string.Join(", ", bad.Take(5))}"
            + $"{(bad.Count > 5 ? ", ..." : "")}";
        if (!allowNonFinite)
            throw new SegmentationException($"{what}. A model with them predicts nonsense; if that is what you "
                + $"want to inspect, pass --allow-nonfinite (AllowNonFinite).");
        warnings?.Report($"{what}; loaded anyway (--allow-nonfinite): its predictions will be wrong.");
    }
}
