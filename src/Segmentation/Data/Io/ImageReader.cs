using System.Buffers.Binary;
using System.IO.Compression;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Metadata;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace Segmentation.Data;

/// <summary>An 8-bit image in memory, interleaved height x width x channels.</summary>
public sealed class ImageBuffer
{
    /// <summary>Width in pixels.</summary>
    public int Width { get; }
    /// <summary>Height in pixels.</summary>
    public int Height { get; }
    /// <summary>Channels per pixel.</summary>
    public int Channels { get; }
    /// <summary>Pixels, row by row, channels interleaved.</summary>
    public byte[] Pixels { get; }

    /// <summary>Wraps pixels (length must be width * height * channels).</summary>
    public ImageBuffer(int width, int height, int channels, byte[] pixels)
    {
        if (pixels.Length != width * height * channels)
            throw new ArgumentException($"Expected {width * height * channels} bytes for {width}x{height}x{channels}; "
                + $"got {pixels.Length}.");
        Width = width; Height = height; Channels = channels; Pixels = pixels;
    }

    /// <summary>Allocates a zeroed image.</summary>
    public ImageBuffer(int width, int height, int channels) : this(width, height, channels,
        new byte[width * height * channels]) { }
}

/// <summary>What a mask file holds before it is turned into class indices.</summary>
internal enum RawMaskKind
{
    /// <summary>One gray value per pixel (8 or 16 bits).</summary>
    Gray,
    /// <summary>An RGB colour per pixel (values packed as 0xRRGGBB).</summary>
    Rgb,
    /// <summary>A palette index per pixel, read from an indexed PNG.</summary>
    Indexed,
}

/// <summary>A mask file as decoded: one integer per pixel whose meaning depends on <see cref="Kind"/>.</summary>
/// <param name="Width">Columns.</param>
/// <param name="Height">Rows.</param>
/// <param name="Kind">What the values are.</param>
/// <param name="Values">One per pixel.</param>
/// <param name="Bits">Bits per sample of the file (8 or 16).</param>
internal sealed record RawMask(int Width, int Height, RawMaskKind Kind, int[] Values, int Bits = 8);

/// <summary>
/// Decodes images and masks through ImageSharp with a pixel limit that is checked from the file header, before any
/// pixel buffer is allocated. Every failure is a <see cref="DataException"/> naming the file.
/// </summary>
public sealed class ImageReader
{
    /// <summary>Default limit: 100 megapixels.</summary>
    public const long DefaultMaxPixels = Limits.ImagePixels;

    private readonly Configuration configuration;

    /// <summary>Largest width x height accepted.</summary>
    public long MaxPixels { get; }

    /// <summary>Creates a reader with a pixel limit.</summary>
    public ImageReader(long maxPixels = DefaultMaxPixels)
    {
        if (maxPixels < 1) throw new OptionsException($"The pixel limit is {maxPixels}; it must be positive.");
        MaxPixels = maxPixels;
        configuration = Configuration.Default.Clone();
        configuration.MaxDegreeOfParallelism = 1; // the loader parallelises across files
    }

    /// <summary>Reads width and height from the header only, and applies the pixel limit.</summary>
    public (int Width, int Height) Identify(string path) => Identify(path, ReadAll(path)).Size;

    private (IImageInfo Info, (int Width, int Height) Size) Identify(string path, byte[] bytes)
    {
        if (bytes.Length == 0) throw new DataException($"{path}: the file is empty (0 bytes).", path);
        var info = Guard(path, () => Image.Identify(configuration, bytes, out _));
        if (info is null)
            throw new DataException($"{path}: not an image in a format this library reads (PNG, JPEG, BMP, GIF, TIFF, "
                + $"TGA, PBM, WebP).", path);
        long pixels = (long)info.Width * info.Height;
        if (info.Width <= 0 || info.Height <= 0)
            throw new DataException($"{path}: the header declares a size of {info.Width}x{info.Height}.", path);
        if (pixels > MaxPixels)
            throw new DataException($"{path}: the header declares {info.Width}x{info.Height} = {pixels:N0} pixels, "
                + $"over the limit of {MaxPixels:N0}; raise the pixel limit if the file is genuine (--max-pixels, "
                + $"DatasetOptions.MaxPixels).", path);
        // The size as displayed: EXIF orientations 5-8 turn the stored image by a quarter.
        return (info, Orientation(info.Metadata) is >= 5 and <= 8 ? (info.Height, info.Width)
            : (info.Width, info.Height));
    }

    /// <summary>The EXIF orientation (1-8; 1 when absent or out of range).</summary>
    private static int Orientation(ImageMetadata metadata)
    {
        var value = metadata.ExifProfile?.GetValue(ExifTag.Orientation);
        return value is null ? 1 : value.Value is >= 1 and <= 8 ? value.Value : 1;
    }

    /// <summary>Loads pixels and turns them as the EXIF orientation says, as viewers (and PIL's exif_transpose) show
    /// them.</summary>
    private Image<TPixel> LoadOriented<TPixel>(byte[] bytes) where TPixel : unmanaged, IPixel<TPixel>
    {
        var image = Image.Load<TPixel>(configuration, bytes);
        if (Orientation(image.Metadata) != 1) image.Mutate(c => c.AutoOrient());
        return image;
    }

    /// <summary>Decodes an image to <paramref name="channels"/> channels: gray from colour by luminance, gray to RGB by
    /// replication, alpha dropped.</summary>
    public ImageBuffer ReadImage(string path, int channels)
    {
        if (channels < 1) throw new OptionsException($"Channel count {channels} must be at least 1.");
        var bytes = ReadAll(path);
        Identify(path, bytes);
        return Guard(path, () =>
        {
            if (channels == 1)
            {
                using var gray = LoadOriented<L8>(bytes);
                var px = new byte[gray.Width * gray.Height];
                gray.CopyPixelDataTo(px);
                return new ImageBuffer(gray.Width, gray.Height, 1, px);
            }
            using var rgb = LoadOriented<Rgb24>(bytes);
            var rgbBytes = new byte[rgb.Width * rgb.Height * 3];
            rgb.CopyPixelDataTo(rgbBytes);
            if (channels == 3) return new ImageBuffer(rgb.Width, rgb.Height, 3, rgbBytes);
            // More than 3 channels: RGB then the first channels repeated (e.g. for a 4-channel model fed RGB files).
            var wide = new byte[rgb.Width * rgb.Height * channels];
            for (int i = 0, n = rgb.Width * rgb.Height; i < n; i++)
                for (int c = 0; c < channels; c++) wide[i * channels + c] = rgbBytes[i * 3 + c % 3];
            return new ImageBuffer(rgb.Width, rgb.Height, channels, wide);
        });
    }

    /// <summary>
    /// Decodes a mask: indexed PNGs as palette indices (unless <paramref name="paletteIndices"/> is false: then as
    /// colours), gray as 8- or 16-bit values, colour as packed RGB.
    /// </summary>
    internal RawMask ReadMask(string path, bool paletteIndices = true)
    {
        var bytes = ReadAll(path);
        var (info, (w, h)) = Identify(path, bytes);
        var indexed = paletteIndices ? TryReadIndexedPng(path, bytes) : null;
        if (indexed is not null) return indexed;
        var png = info.Metadata.GetPngMetadata();
        if (png.ColorType == PngColorType.Grayscale && png.BitDepth is PngBitDepth.Bit16)
            return Guard(path, () =>
            {
                using var g16 = LoadOriented<L16>(bytes);
                var px = new L16[w * h];
                g16.CopyPixelDataTo(px);
                return new RawMask(w, h, RawMaskKind.Gray, Array.ConvertAll(px, p => (int)p.PackedValue), 16);
            });
        if (png.ColorType == PngColorType.Grayscale)
            return Guard(path, () =>
            {
                using var g8 = LoadOriented<L8>(bytes);
                var px = new byte[w * h];
                g8.CopyPixelDataTo(px);
                return new RawMask(w, h, RawMaskKind.Gray, Array.ConvertAll(px, p => (int)p));
            });
        return Guard(path, () =>
        {
            using var image = LoadOriented<Rgba64>(bytes);
            var values = new int[w * h];
            bool gray = true;
            bool sixteen = false;
            image.ProcessPixelRows(rows =>
            {
                for (int y = 0; y < rows.Height; y++)
                {
                    var row = rows.GetRowSpan(y);
                    for (int x = 0; x < row.Length; x++)
                    {
                        var p = row[x];
                        if (p.R != p.G || p.G != p.B) gray = false;
                        if ((p.R & 0xff) != p.R >> 8 || (p.G & 0xff) != p.G >> 8 || (p.B & 0xff) != p.B >> 8) sixteen =
                            true;
                    }
                }
            });
            image.ProcessPixelRows(rows =>
            {
                for (int y = 0; y < rows.Height; y++)
                {
                    var row = rows.GetRowSpan(y);
                    for (int x = 0; x < row.Length; x++)
                    {
                        var p = row[x];
                        values[y * w + x] = gray
                            ? (sixteen ? p.R : p.R >> 8)
                            : (p.R >> 8) << 16 | (p.G >> 8) << 8 | p.B >> 8;
                    }
                }
            });
            return new RawMask(w, h, gray ? RawMaskKind.Gray : RawMaskKind.Rgb, values, sixteen ? 16 : 8);
        });
    }

    /// <summary>An image file at most 1 GiB (a 100-megapixel RGB image uncompressed is 300 MB).</summary>
    public const long MaxFileBytes = Limits.ImageFileBytes;

    private static byte[] ReadAll(string path)
    {
        // What the path is, before opening it: a FIFO would wait forever, a device would read without end.
        if (RegularFile.Problem(path) is { } problem && problem != "missing")
            throw new DataException($"{path}: {problem}, not an image file; refused without opening it.", path);
        long length = File.Exists(path) ? new FileInfo(path).Length : 0;
        if (length > MaxFileBytes)
            throw new DataException($"{path}: {length:N0} bytes, over the image file limit of {MaxFileBytes:N0}.",
                path);
        try { return File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException || e is UnauthorizedAccessException)
        {
            throw new DataException($"{path}: cannot be opened ({e.Message}).", path, e);
        }
    }

    private static T Guard<T>(string path, Func<T> read)
    {
        try { return read(); }
        catch (DataException) { throw; }
        catch (UnknownImageFormatException e) { throw new DataException($"{path}: not an image in a format this "
            + $"library reads ({e.Message}).", path, e); }
        catch (InvalidImageContentException e) { throw new DataException($"{path}: corrupt or truncated image "
            + $"({e.Message}).", path, e); }
        catch (ImageFormatException e) { throw new DataException($"{path}: cannot be decoded ({e.Message}).", path,
            e); }
        catch (NotSupportedException e) { throw new DataException($"{path}: uses a feature the decoder does not "
            + $"support ({e.Message}).", path, e); }
        catch (Exception e) when (e is IOException || e is InvalidDataException || e is IndexOutOfRangeException
            || e is ArgumentException || e is OverflowException)
        {
            throw new DataException($"{path}: corrupt or truncated image ({e.Message}).", path, e);
        }
    }

    /// <summary>
    /// Reads a non-interlaced palette PNG's indices directly (ImageSharp 2 decodes palettes to colours, losing them).
    /// Returns null for any other file.
    /// </summary>
    private static RawMask? TryReadIndexedPng(string path, byte[] bytes)
    {
        ReadOnlySpan<byte> signature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];
        if (bytes.Length < 33 || !bytes.AsSpan(0, 8).SequenceEqual(signature)) return null;
        using var idat = new MemoryStream();
        var header = ReadChunks(path, bytes, idat);
        if (header is not { } h) return null;
        try
        {
            int stride = (h.Width * h.BitDepth + 7) / 8;
            var raw = new byte[(long)(stride + 1) * h.Height];
            idat.Position = 0;
            using (var z = new ZLibStream(idat, CompressionMode.Decompress))
            {
                int read = 0;
                while (read < raw.Length)
                {
                    int n = z.Read(raw, read, raw.Length - read);
                    if (n == 0)
                        throw new DataException($"{path}: truncated image data ({read} of {raw.Length} bytes).", path);
                    read += n;
                }
            }
            return new RawMask(h.Width, h.Height, RawMaskKind.Indexed, Indices(raw, h.Width, h.Height, h.BitDepth,
                stride, path));
        }
        catch (InvalidDataException e) { throw new DataException($"{path}: corrupt PNG image data ({e.Message}).",
            path, e); }
    }

    /// <summary>Walks a PNG's chunks, collecting IDAT into <paramref name="idat"/>; the header when it is a
    /// non-interlaced palette PNG, else null.</summary>
    private static (int Width, int Height, int BitDepth)? ReadChunks(string path, byte[] bytes, MemoryStream idat)
    {
        (int Width, int Height, int BitDepth)? header = null;
        int pos = 8;
        while (pos + 12 <= bytes.Length)
        {
            int length = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(pos));
            if (length < 0 || pos + 12 + (long)length > bytes.Length)
                throw new DataException($"{path}: truncated PNG chunk at byte {pos}.", path);
            var type = System.Text.Encoding.ASCII.GetString(bytes, pos + 4, 4);
            var data = bytes.AsSpan(pos + 8, length);
            if (type == "IHDR")
            {
                if (data[9] != 3) return null; // colour type 3: palette
                if (data[12] != 0)
                    throw new DataException($"{path}: interlaced palette PNGs are not read as indices; save the mask "
                        + $"without interlacing.", path);
                header = (BinaryPrimitives.ReadInt32BigEndian(data), BinaryPrimitives.ReadInt32BigEndian(data[4..]),
                    data[8]);
            }
            else if (type == "IDAT") idat.Write(data);
            else if (type == "IEND") break;
            pos += 12 + length;
        }
        return header;
    }

    /// <summary>The palette index of each pixel from the inflated scanlines (filter byte + <paramref name="stride"/>
    /// bytes each).</summary>
    private static int[] Indices(byte[] raw, int width, int height, int bitDepth, int stride, string path)
    {
        var prev = new byte[stride];
        var cur = new byte[stride];
        var values = new int[width * height];
        int bpp = Math.Max(1, bitDepth / 8);
        for (int y = 0; y < height; y++)
        {
            int filter = raw[y * (stride + 1)];
            Array.Copy(raw, y * (stride + 1) + 1, cur, 0, stride);
            Unfilter(filter, cur, prev, bpp, path);
            for (int x = 0; x < width; x++)
            {
                int bit = x * bitDepth;
                int b = cur[bit >> 3];
                values[y * width + x] = bitDepth == 8 ? b : (b >> (8 - bitDepth - (bit & 7))) & ((1 << bitDepth) - 1);
            }
            (prev, cur) = (cur, prev);
        }
        return values;
    }

    private static void Unfilter(int filter, byte[] cur, byte[] prev, int bpp, string path)
    {
        for (int i = 0; i < cur.Length; i++)
        {
            int a = i >= bpp ? cur[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
            cur[i] = filter switch
            {
                0 => cur[i],
                1 => (byte)(cur[i] + a),
                2 => (byte)(cur[i] + b),
                3 => (byte)(cur[i] + ((a + b) >> 1)),
                4 => (byte)(cur[i] + Paeth(a, b, c)),
                _ => throw new DataException($"{path}: PNG row filter {filter} is not one of 0-4 (corrupt file).",
                    path),
            };
        }
    }

    private static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }
}
