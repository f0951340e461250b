using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Tests;

/// <summary>A temporary folder that tests write small images into; deleted on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "segtest-" + Guid.NewGuid().ToString("N")[..10]);

    public TempDir() => Directory.CreateDirectory(Path);

    public string this[string relative] => System.IO.Path.Combine(Path, relative);

    public string Sub(string relative)
    {
        var p = this[relative];
        Directory.CreateDirectory(p);
        return p;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, true); } catch (IOException) { }
    }

    public static void SaveGray(string path, int w, int h, Func<int, int, byte> f)
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        using var img = new Image<L8>(w, h);
        for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) img[x, y] = new L8(f(x, y));
        img.Save(path);
    }

    public static void SaveRgb(string path, int w, int h, Func<int, int, Rgb24> f)
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        using var img = new Image<Rgb24>(w, h);
        for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) img[x, y] = f(x, y);
        img.Save(path);
    }

    /// <summary>An 8-bit indexed (palette) PNG written byte by byte, so the palette order is exactly the given one.</summary>
    public static void SaveIndexed(string path, int w, int h, Func<int, int, byte> f, Rgb24[] palette)
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        var raw = new MemoryStream();
        for (int y = 0; y < h; y++)
        {
            raw.WriteByte(y % 2 == 0 ? (byte)0 : (byte)2); // filters None and Up, to exercise unfiltering
            for (int x = 0; x < w; x++)
                raw.WriteByte(y % 2 == 0 ? f(x, y) : (byte)(f(x, y) - f(x, y - 1)));
        }
        var z = new MemoryStream();
        using (var zs = new System.IO.Compression.ZLibStream(z, System.IO.Compression.CompressionLevel.Optimal, leaveOpen: true)) raw.WriteTo(zs);
        var png = new MemoryStream();
        png.Write(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A });
        var ihdr = new byte[13];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(ihdr, w);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), h);
        ihdr[8] = 8; ihdr[9] = 3;
        WriteChunk(png, "IHDR", ihdr);
        WriteChunk(png, "PLTE", palette.SelectMany(c => new[] { c.R, c.G, c.B }).ToArray());
        WriteChunk(png, "IDAT", z.ToArray());
        WriteChunk(png, "IEND", Array.Empty<byte>());
        File.WriteAllBytes(path, png.ToArray());
    }

    /// <summary>A PNG chunk: length, type, data and its CRC.</summary>
    public static void WriteChunk(Stream s, string type, byte[] data)
    {
        var len = new byte[4];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
        s.Write(len);
        var body = System.Text.Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
        s.Write(body);
        var crc = new byte[4];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32(body));
        s.Write(crc);
    }

    public static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFF;
        foreach (var b in data)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
        }
        return ~c;
    }
}
