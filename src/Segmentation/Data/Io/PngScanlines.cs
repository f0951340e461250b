using System.Buffers;
using System.Buffers.Binary;
using System.IO.Compression;
using System.Runtime.Intrinsics;

namespace Segmentation.Data;

/// <summary>What a PNG's chunks say, before any pixel is decoded.</summary>
/// <param name="Width">Columns.</param>
/// <param name="Height">Rows.</param>
/// <param name="BitDepth">Bits per sample (1, 2, 4, 8 or 16).</param>
/// <param name="ColourType">0 gray, 2 RGB, 3 palette, 4 gray + alpha, 6 RGBA.</param>
/// <param name="Interlaced">Adam7 interlacing.</param>
/// <param name="Extras">A tRNS (transparency) or eXIf (orientation) chunk is present: what the plain path leaves to
/// ImageSharp.</param>
/// <param name="Idat">The image data chunks, as (offset, length) in the file.</param>
internal sealed record PngLayout(int Width, int Height, int BitDepth, int ColourType, bool Interlaced, bool Extras,
    List<(int Offset, int Length)> Idat)
{
    /// <summary>Samples per pixel of the colour type.</summary>
    public int Samples => ColourType switch { 2 => 3, 4 => 2, 6 => 4, _ => 1 };
    /// <summary>Bytes per row without the filter byte.</summary>
    public long Stride => ((long)Width * Samples * BitDepth + 7) / 8;
    /// <summary>Bytes between a sample and the same sample of the pixel before (at least 1).</summary>
    public int FilterStep => Math.Max(1, Samples * BitDepth / 8);
}

/// <summary>
/// A PNG's rows, decoded without ImageSharp for the files a data set is made of: the chunk walk, inflation by .NET's
/// zlib, and the five row filters undone a row at a time (Paeth without branches, Up with vectors). The loader's hot
/// path (8-bit gray and RGB, not interlaced) and the palette indices ImageSharp 2 cannot give both use it; every
/// other file is ImageSharp's. Problems come back as words, so the caller decides whether a file is refused or handed
/// to ImageSharp.
/// </summary>
internal static class PngScanlines
{
    private static ReadOnlySpan<byte> Signature => [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>Whether the bytes start with PNG's signature.</summary>
    public static bool IsPng(byte[] bytes) => bytes.Length >= 33 && bytes.AsSpan(0, 8).SequenceEqual(Signature);

    /// <summary>Walks the chunks up to IEND. Null with <paramref name="problem"/> when the file is not a PNG or its
    /// chunk structure is broken.</summary>
    public static PngLayout? Layout(byte[] bytes, out string? problem)
    {
        problem = null;
        if (!IsPng(bytes)) { problem = "not a PNG file"; return null; }
        PngLayout? layout = null;
        var idat = new List<(int, int)>();
        bool extras = false;
        int pos = 8;
        while (pos + 12 <= bytes.Length)
        {
            int length = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(pos));
            if (length < 0 || pos + 12 + (long)length > bytes.Length)
            {
                problem = $"truncated PNG chunk at byte {pos}";
                return null;
            }
            uint type = BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(pos + 4));
            var data = bytes.AsSpan(pos + 8, length);
            if (type == 0x49484452 && length >= 13) // IHDR
                layout = new PngLayout(BinaryPrimitives.ReadInt32BigEndian(data),
                    BinaryPrimitives.ReadInt32BigEndian(data[4..]), data[8], data[9], data[12] != 0, false, idat);
            else if (type == 0x49444154) idat.Add((pos + 8, length)); // IDAT
            else if (type is 0x74524E53 or 0x65584966) extras = true; // tRNS, eXIf
            else if (type is 0x74455874 or 0x7A545874 or 0x69545874 && data.StartsWith("Raw profile type exif"u8))
                extras = true; // EXIF in a text chunk (ImageMagick's), which ImageSharp reads too
            else if (type == 0x49454E44) break; // IEND
            pos += 12 + length;
        }
        if (layout is null || layout.Width <= 0 || layout.Height <= 0)
        {
            problem = "no valid PNG header (IHDR)";
            return null;
        }
        return layout with { Extras = extras };
    }

    /// <summary>The inflated rows (a filter byte and <see cref="PngLayout.Stride"/> bytes each), or null with
    /// <paramref name="problem"/> when the data is short, corrupt or longer than the image.</summary>
    public static byte[]? Inflate(byte[] bytes, PngLayout layout, out string? problem)
    {
        if (RawSize(layout, out problem) is not { } size) return null;
        var raw = new byte[size];
        return InflateInto(bytes, layout, raw.AsSpan(0, size), out problem) ? raw : null;
    }

    /// <summary>The image's rows with the filters undone (<see cref="PngLayout.Stride"/> bytes each), or null with
    /// <paramref name="problem"/>; the inflated data in between lives in a pooled buffer.</summary>
    public static byte[]? Rows(byte[] bytes, PngLayout layout, out string? problem)
    {
        if (RawSize(layout, out problem) is not { } size) return null;
        var raw = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            if (!InflateInto(bytes, layout, raw.AsSpan(0, size), out problem)) return null;
            int stride = (int)layout.Stride;
            var rows = GC.AllocateUninitializedArray<byte>(stride * layout.Height);
            return Unfilter(raw, rows, stride, layout.Height, layout.FilterStep, out problem) ? rows : null;
        }
        finally { ArrayPool<byte>.Shared.Return(raw); }
    }

    private static int? RawSize(PngLayout layout, out string? problem)
    {
        long size = (layout.Stride + 1) * layout.Height;
        problem = size > Array.MaxLength ? $"{size:N0} bytes of rows, more than an array holds" : null;
        return problem is null ? (int)size : null;
    }

    private static bool InflateInto(byte[] bytes, PngLayout layout, Span<byte> raw, out string? problem)
    {
        problem = null;
        using var source = new ChunkStream(bytes, layout.Idat);
        try
        {
            using var z = new ZLibStream(source, CompressionMode.Decompress);
            int read = z.ReadAtLeast(raw, raw.Length, throwOnEndOfStream: false);
            if (read < raw.Length)
            {
                problem = $"truncated image data ({read:N0} of {raw.Length:N0} bytes)";
                return false;
            }
            // Reading on to the end checks zlib's Adler-32 of the data.
            Span<byte> extra = stackalloc byte[1];
            if (z.Read(extra) != 0) { problem = "more image data than the header's size"; return false; }
        }
        catch (InvalidDataException e)
        {
            // .NET words a checksum mismatch as an unsupported compression method: tell the two apart by inflating
            // the same data without zlib's wrapper
            problem = InflatesWithoutChecksum(bytes, layout, raw.Length)
                ? "corrupt PNG image data: zlib's checksum (Adler-32) of the pixels does not match them; the file is "
                    + "damaged" : $"corrupt PNG image data ({e.Message})";
            return false;
        }
        return true;
    }

    /// <summary>Whether the image data inflates in full as a bare deflate stream (zlib's two-byte header skipped,
    /// its checksum not read): then only the checksum was wrong.</summary>
    private static bool InflatesWithoutChecksum(byte[] bytes, PngLayout layout, int length)
    {
        try
        {
            using var source = new ChunkStream(bytes, layout.Idat);
            Span<byte> header = stackalloc byte[2];
            if (source.Read(header) != 2) return false;
            using var deflate = new DeflateStream(source, CompressionMode.Decompress);
            var sink = new byte[length];
            return deflate.ReadAtLeast(sink, length, throwOnEndOfStream: false) == length;
        }
        catch (InvalidDataException) { return false; }
    }

    /// <summary>Undoes the row filters of <paramref name="raw"/> into <paramref name="rows"/> (<paramref
    /// name="stride"/> bytes a row, no filter bytes). False with <paramref name="problem"/> at a filter byte outside
    /// 0-4.</summary>
    public static unsafe bool Unfilter(byte[] raw, byte[] rows, int stride, int height, int step,
        out string? problem)
    {
        problem = null;
        var zeros = new byte[stride];
        fixed (byte* r0 = raw, o0 = rows, z = zeros)
        {
            for (int y = 0; y < height; y++)
            {
                byte* src = r0 + (long)y * (stride + 1) + 1, dst = o0 + (long)y * stride;
                byte* up = y == 0 ? z : dst - stride;
                int filter = src[-1];
                if (filter > 4)
                {
                    problem = $"PNG row filter {filter} on row {y} is not one of 0-4 (corrupt file)";
                    return false;
                }
                UnfilterRow(filter, src, dst, up, stride, step);
            }
        }
        return true;
    }

    private static unsafe void UnfilterRow(int filter, byte* src, byte* dst, byte* up, int stride, int step)
    {
        int first = Math.Min(step, stride);
        switch (filter)
        {
            case 0:
                Buffer.MemoryCopy(src, dst, stride, stride);
                break;
            case 1:
                for (int i = 0; i < first; i++) dst[i] = src[i];
                for (int i = first; i < stride; i++) dst[i] = (byte)(src[i] + dst[i - step]);
                break;
            case 2:
                int j = 0;
                for (; j + 32 <= stride; j += 32) Vector256.Store(Vector256.Load(src + j) + Vector256.Load(up + j),
                    dst + j);
                for (; j < stride; j++) dst[j] = (byte)(src[j] + up[j]);
                break;
            case 3:
                for (int i = 0; i < first; i++) dst[i] = (byte)(src[i] + (up[i] >> 1));
                for (int i = first; i < stride; i++) dst[i] = (byte)(src[i] + ((dst[i - step] + up[i]) >> 1));
                break;
            default:
                for (int i = 0; i < first; i++) dst[i] = (byte)(src[i] + up[i]);
                for (int i = first; i < stride; i++) dst[i] =
                    (byte)(src[i] + Paeth(dst[i - step], up[i], up[i - step]));
                break;
        }
    }

    /// <summary>PNG's Paeth predictor (the neighbour nearest to a + b - c, ties to a, then b), without branches: the
    /// choices are unpredictable on photographs.</summary>
    internal static int Paeth(int a, int b, int c)
    {
        int p = b - c, q = a - c, pq = p + q;
        int pa = (p ^ (p >> 31)) - (p >> 31), pb = (q ^ (q >> 31)) - (q >> 31), pc = (pq ^ (pq >> 31)) - (pq >> 31);
        int bOrC = (pb - pc - 1) >> 31; // all ones when pb <= pc
        int nearest = (b & bOrC) | (c & ~bOrC);
        int least = pc + ((pb - pc) & bOrC);
        int takeA = (pa - least - 1) >> 31; // all ones when pa <= pb and pa <= pc
        return (a & takeA) | (nearest & ~takeA);
    }

    /// <summary>The IDAT chunks' contents read as one stream, without copying them together.</summary>
    private sealed class ChunkStream(byte[] bytes, List<(int Offset, int Length)> chunks) : Stream
    {
        private int chunk, within;

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            while (chunk < chunks.Count && within == chunks[chunk].Length) { chunk++; within = 0; }
            if (chunk == chunks.Count || buffer.Length == 0) return 0;
            var (offset, length) = chunks[chunk];
            int n = Math.Min(buffer.Length, length - within);
            bytes.AsSpan(offset + within, n).CopyTo(buffer);
            within += n;
            return n;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set
            => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
