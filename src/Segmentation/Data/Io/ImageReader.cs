using System.Buffers.Binary;
using System.IO.Compression;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Metadata;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace Segmentation.Data;

/// <summary>
/// An image in memory, interleaved height x width x channels, at 8 bits a sample (<see cref="Pixels"/>) or 16
/// (<see cref="Pixels16"/>: 16-bit PNG and TIFF files keep their full depth). The model sees a sample as a share of its
/// depth's full scale (<see cref="FullScale"/>: 255 or 65535), so an 8-bit file and its 16-bit copy give the same
/// input, and a 16-bit file keeps the levels an 8-bit copy would round away.
/// </summary>
public sealed class ImageBuffer
{
    private readonly byte[]? pixels;

    /// <summary>Width in pixels.</summary>
    public int Width { get; }
    /// <summary>Height in pixels.</summary>
    public int Height { get; }
    /// <summary>Channels per pixel.</summary>
    public int Channels { get; }
    /// <summary>Bits a sample: 8 or 16.</summary>
    public int Bits => Pixels16 is null ? 8 : 16;
    /// <summary>The largest sample value: 255 or 65535.</summary>
    public int FullScale => Pixels16 is null ? byte.MaxValue : ushort.MaxValue;
    /// <summary>8-bit samples, row by row, channels interleaved; a 16-bit image has none (<see cref="Pixels16"/>,
    /// or <see cref="ForDisplay"/> for a picture of it).</summary>
    public byte[] Pixels => pixels ?? throw new InvalidOperationException($"A 16-bit {Width}x{Height} image has no "
        + "8-bit samples: read Pixels16, or ForDisplay() for a picture of it.");
    /// <summary>16-bit samples, row by row, channels interleaved; null for an 8-bit image.</summary>
    public ushort[]? Pixels16 { get; }
    /// <summary>The samples at either depth (a byte[] or a ushort[]).</summary>
    public Array Samples => (Array?)Pixels16 ?? pixels!;

    /// <summary>Wraps 8-bit pixels (length must be width * height * channels).</summary>
    public ImageBuffer(int width, int height, int channels, byte[] pixels)
    {
        CheckLength(width, height, channels, pixels.Length);
        Width = width; Height = height; Channels = channels; this.pixels = pixels;
    }

    /// <summary>Wraps 16-bit pixels (length must be width * height * channels).</summary>
    public ImageBuffer(int width, int height, int channels, ushort[] pixels)
    {
        CheckLength(width, height, channels, pixels.Length);
        Width = width; Height = height; Channels = channels; Pixels16 = pixels;
    }

    /// <summary>Allocates a zeroed 8-bit image.</summary>
    public ImageBuffer(int width, int height, int channels) : this(width, height, channels,
        new byte[width * height * channels]) { }

    /// <summary>A zeroed image at this one's depth.</summary>
    public ImageBuffer Blank(int width, int height, int channels) => Pixels16 is null
        ? new ImageBuffer(width, height, channels) : new ImageBuffer(width, height, channels,
            new ushort[width * height * channels]);

    private static void CheckLength(int width, int height, int channels, int length)
    {
        if (length != width * height * channels)
            throw new ArgumentException($"Expected {width * height * channels} samples for {width}x{height}x"
                + $"{channels}; got {length}.");
    }

    /// <summary>An 8-bit picture of the image for overlays and previews: an 8-bit image as it is; a 16-bit one
    /// stretched from its lowest to its highest sample (12-bit microscopy in a 16-bit file would be near black
    /// divided by 257).</summary>
    public ImageBuffer ForDisplay()
    {
        if (Pixels16 is not { } wide) return this;
        return new ImageBuffer(Width, Height, Channels, Shared.PixelDecoder.ForDisplay(wide));
    }
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
        CheckSize(path, info.Width, info.Height);
        // The size as displayed: EXIF orientations 5-8 turn the stored image by a quarter.
        return (info, Orientation(info.Metadata) is >= 5 and <= 8 ? (info.Height, info.Width)
            : (info.Width, info.Height));
    }

    private void CheckSize(string path, int width, int height)
    {
        long pixels = (long)width * height;
        if (width <= 0 || height <= 0)
            throw new DataException($"{path}: the header declares a size of {width}x{height}.", path);
        if (pixels > MaxPixels)
            throw new DataException($"{path}: the header declares {width}x{height} = {pixels:N0} pixels, "
                + $"over the limit of {MaxPixels:N0}; raise the pixel limit if the file is genuine (--max-pixels, "
                + $"DatasetOptions.MaxPixels).", path);
    }

    /// <summary>The EXIF orientation (1-8; 1 when absent or out of range).</summary>
    private static int Orientation(ImageMetadata metadata) => Shared.PixelDecoder.Orientation(metadata);

    /// <summary>Loads pixels and turns them as the EXIF orientation says, as viewers (and PIL's exif_transpose) show
    /// them.</summary>
    private Image<TPixel> LoadOriented<TPixel>(byte[] bytes) where TPixel : unmanaged, IPixel<TPixel> =>
        Shared.PixelDecoder.LoadOriented<TPixel>(configuration, bytes);

    /// <summary>Decodes an image to <paramref name="channels"/> channels: gray from colour by luminance, gray to RGB by
    /// replication, alpha dropped; a 16-bit PNG or TIFF at 16 bits a sample (<see cref="ImageBuffer.Pixels16"/>),
    /// anything else at 8.</summary>
    public ImageBuffer ReadImage(string path, int channels)
    {
        if (channels < 1) throw new OptionsException($"Channel count {channels} must be at least 1.");
        var bytes = ReadAll(path);
        // RGB to gray (luminance) is ImageSharp's
        if (ReadPlainPng(path, bytes, PngLayoutOf(path, bytes), colourToGray: channels == 1) is { } plain)
            return channels == plain.Channels ? plain : Widen(plain, channels);
        Identify(path, bytes);
        return Guard(path, () =>
        {
            // the ONNX Runtime package decodes with the same code
            var d = Shared.PixelDecoder.Decode(configuration, bytes, channels);
            return d.Pixels16 is { } wide ? new ImageBuffer(d.Width, d.Height, channels, wide)
                : new ImageBuffer(d.Width, d.Height, channels, d.Pixels!);
        });
    }

    /// <summary>Bits a sample the image is read at (<see cref="ReadImage"/>): 16 for a 16-bit PNG or a TIFF of more
    /// than 8 bits a sample, else 8. A file that cannot be read is a <see cref="DataException"/>.</summary>
    public int SampleBits(string path)
    {
        var bytes = ReadAll(path);
        if (PngLayoutOf(path, bytes) is { } layout) return layout.BitDepth == 16 ? 16 : 8;
        Identify(path, bytes);
        return Guard(path, () => Shared.PixelDecoder.IsWide(configuration, bytes)) ? 16 : 8;
    }

    /// <summary>Whether an image is gray: a gray PNG from its header, anything else when every decoded pixel has
    /// R = G = B. A file that cannot be read is a <see cref="DataException"/>.</summary>
    internal bool IsGray(string path)
    {
        var bytes = ReadAll(path);
        if (PngLayoutOf(path, bytes) is { ColourType: 0 or 4 } layout)
        {
            CheckSize(path, layout.Width, layout.Height);
            return true;
        }
        return ImageChannels.AllGray(ReadImage(path, 3));
    }

    /// <summary>Gray or RGB to <paramref name="channels"/> channels (<see
    /// cref="Shared.PixelDecoder.Widen"/>).</summary>
    private static ImageBuffer Widen(ImageBuffer image, int channels) => image.Pixels16 is { } wide
        ? new(image.Width, image.Height, channels, Shared.PixelDecoder.Widen(wide, image.Channels, channels))
        : new(image.Width, image.Height, channels, Shared.PixelDecoder.Widen(image.Pixels, image.Channels, channels));

    /// <summary>
    /// An 8-bit gray or RGB PNG, not interlaced, with no transparency or orientation: decoded by <see
    /// cref="PngScanlines"/> (faster than ImageSharp, to the same bytes: docs/benchmarks.md). Null for any other file
    /// (ImageSharp's). Broken chunks, image data that is short, corrupt (zlib's checksum) or long, and unknown row
    /// filters are refused.
    /// </summary>
    private ImageBuffer? ReadPlainPng(string path, byte[] bytes, PngLayout? layout, bool colourToGray = false)
    {
        if (layout is null || layout.BitDepth != 8 || layout.Interlaced || layout.Extras
            || layout.ColourType is not (0 or 2)
            || (colourToGray && layout.ColourType == 2)) return null;
        CheckSize(path, layout.Width, layout.Height);
        return new ImageBuffer(layout.Width, layout.Height, layout.Samples, PngRows(path, bytes, layout));
    }

    /// <summary>A PNG file's chunks, walked once per file; null for other formats. A broken chunk structure is
    /// refused.</summary>
    private static PngLayout? PngLayoutOf(string path, byte[] bytes) => !PngScanlines.IsPng(bytes) ? null
        : PngScanlines.Layout(bytes, out var problem) ?? throw new DataException($"{path}: {problem}.", path);

    /// <summary>A PNG's rows with the filters undone; short, corrupt or unknown data is refused.</summary>
    private static byte[] PngRows(string path, byte[] bytes, PngLayout layout)
        => PngScanlines.Rows(bytes, layout, out var problem) ?? throw new DataException($"{path}: {problem}.", path);

    /// <summary>
    /// Decodes a mask: indexed PNGs as palette indices (unless <paramref name="paletteIndices"/> is false: then as
    /// colours), gray as 8- or 16-bit values, colour as packed RGB.
    /// </summary>
    internal RawMask ReadMask(string path, bool paletteIndices = true)
    {
        var bytes = ReadAll(path);
        var layout = PngLayoutOf(path, bytes);
        if (ReadPlainPng(path, bytes, layout) is { } plain) return PlainMask(plain);
        var (info, (w, h)) = Identify(path, bytes);
        var indexed = paletteIndices && layout is not null ? TryReadIndexedPng(path, bytes, layout) : null;
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
                // 1-, 2- and 4-bit gray: the file's own levels (0/1 for one bit), not their 8-bit stretch (0/255)
                int bits = png.BitDepth switch { PngBitDepth.Bit1 => 1, PngBitDepth.Bit2 => 2, PngBitDepth.Bit4 => 4,
                    _ => 8 };
                int step = 255 / ((1 << bits) - 1);
                return new RawMask(w, h, RawMaskKind.Gray, Array.ConvertAll(px, p => p / step), bits);
            });
        return ReadColourMask(path, bytes, w, h);
    }

    /// <summary>Any other mask file through ImageSharp at 16 bits a channel: gray (8 or 16 bits) when every pixel is
    /// gray, else packed RGB.</summary>
    private RawMask ReadColourMask(string path, byte[] bytes, int w, int h)
    {
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

    /// <summary>A plain PNG's pixels as mask values: gray as they are, colour packed as 0xRRGGBB unless every pixel
    /// is gray (what ImageSharp's path gives for the same file).</summary>
    private static RawMask PlainMask(ImageBuffer image)
    {
        int n = image.Width * image.Height;
        var px = image.Pixels;
        var values = new int[n];
        if (image.Channels == 1)
        {
            for (int i = 0; i < n; i++) values[i] = px[i];
            return new RawMask(image.Width, image.Height, RawMaskKind.Gray, values);
        }
        bool gray = true;
        for (int i = 0; i < n && gray; i++) gray = px[3 * i] == px[3 * i + 1] && px[3 * i + 1] == px[3 * i + 2];
        for (int i = 0; i < n; i++)
            values[i] = gray ? px[3 * i] : px[3 * i] << 16 | px[3 * i + 1] << 8 | px[3 * i + 2];
        return new RawMask(image.Width, image.Height, gray ? RawMaskKind.Gray : RawMaskKind.Rgb, values);
    }

    /// <summary>
    /// Reads a non-interlaced palette PNG's indices directly (ImageSharp 2 decodes palettes to colours, losing them).
    /// Returns null for any other colour type.
    /// </summary>
    private static RawMask? TryReadIndexedPng(string path, byte[] bytes, PngLayout layout)
    {
        if (layout.ColourType != 3) return null;
        if (layout.Interlaced)
            throw new DataException($"{path}: interlaced palette PNGs are not read as indices; save the mask "
                + $"without interlacing.", path);
        int stride = (int)layout.Stride;
        var rows = PngRows(path, bytes, layout);
        int width = layout.Width, bitDepth = layout.BitDepth;
        var values = new int[(long)width * layout.Height];
        for (int y = 0; y < layout.Height; y++)
            for (int x = 0; x < width; x++)
            {
                int bit = x * bitDepth;
                int b = rows[(long)y * stride + (bit >> 3)];
                values[(long)y * width + x] = bitDepth == 8 ? b
                    : (b >> (8 - bitDepth - (bit & 7))) & ((1 << bitDepth) - 1);
            }
        return new RawMask(width, layout.Height, RawMaskKind.Indexed, values);
    }
}
