using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Metadata;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace Segmentation.Shared;

/// <summary>
/// How an image file becomes the model's channels, the same for the TorchSharp side (the loader and the predictor,
/// past its PNG fast path, which gives the same bytes) and for <c>Segmentation.Onnx</c>: one copy, compiled into both.
/// The EXIF orientation is applied first (as viewers and PIL's <c>exif_transpose</c> show the image); colour becomes
/// gray by ImageSharp's luminance (BT.709), gray is replicated to colour, alpha is dropped; for more than three
/// channels the RGB channels repeat. A 16-bit PNG, or a TIFF of more than 8 bits a sample, keeps 16 bits a sample
/// (<see cref="IsWide"/>); every other file gives 8.
/// </summary>
internal static class PixelDecoder
{
    /// <summary>The EXIF orientation (1-8; 1 when absent or out of range).</summary>
    public static int Orientation(ImageMetadata metadata)
    {
        var value = metadata.ExifProfile?.GetValue(ExifTag.Orientation);
        return value is null ? 1 : value.Value is >= 1 and <= 8 ? value.Value : 1;
    }

    /// <summary>Loads pixels and turns them as the EXIF orientation says.</summary>
    public static Image<TPixel> LoadOriented<TPixel>(Configuration configuration, byte[] bytes)
        where TPixel : unmanaged, IPixel<TPixel>
    {
        var image = Image.Load<TPixel>(configuration, bytes);
        if (Orientation(image.Metadata) != 1) image.Mutate(c => c.AutoOrient());
        return image;
    }

    /// <summary>Whether the file holds more than 8 bits a sample: a 16-bit PNG (gray, gray and alpha, RGB, RGBA), or a
    /// TIFF of 10 to 16 bits a sample (gray or RGB, with or without alpha). Other formats are 8-bit.</summary>
    public static bool IsWide(Configuration configuration, byte[] bytes)
    {
        var info = Image.Identify(configuration, bytes, out var format);
        if (info is null || format is null) return false;
        if (format.Name == "PNG") return info.Metadata.GetPngMetadata().BitDepth == PngBitDepth.Bit16;
        // a TIFF's bits a pixel: gray 10-16, RGB 30-48, RGBA 64 (16 is also 8-bit gray with alpha: read wide, the
        // same values as a share of full scale)
        return format.Name == "TIFF" && info.PixelType.BitsPerPixel is 10 or 12 or 14 or 16 or 30 or 36 or 42 or 48
            or 64;
    }

    /// <summary>Decodes <paramref name="bytes"/> to <paramref name="channels"/> interleaved channels, H x W x C: 8
    /// bits a sample (<see cref="Decoded.Pixels"/>) or, for a file of more (<see cref="IsWide"/>), 16 (<see
    /// cref="Decoded.Pixels16"/>).</summary>
    public static Decoded Decode(Configuration configuration, byte[] bytes, int channels)
    {
        if (IsWide(configuration, bytes))
        {
            if (channels == 1)
            {
                using var gray16 = LoadOriented<L16>(configuration, bytes);
                var px16 = new L16[gray16.Width * gray16.Height];
                gray16.CopyPixelDataTo(px16);
                return new Decoded(null, Array.ConvertAll(px16, p => p.PackedValue), gray16.Width, gray16.Height);
            }
            using var rgb48 = LoadOriented<Rgb48>(configuration, bytes);
            var colour = new Rgb48[rgb48.Width * rgb48.Height];
            rgb48.CopyPixelDataTo(colour);
            var samples = new ushort[colour.Length * 3];
            for (int i = 0; i < colour.Length; i++)
            {
                samples[3 * i] = colour[i].R; samples[3 * i + 1] = colour[i].G; samples[3 * i + 2] = colour[i].B;
            }
            return new Decoded(null, channels == 3 ? samples : Widen(samples, 3, channels), rgb48.Width,
                rgb48.Height);
        }
        if (channels == 1)
        {
            using var gray = LoadOriented<L8>(configuration, bytes);
            var px = new byte[gray.Width * gray.Height];
            gray.CopyPixelDataTo(px);
            return new Decoded(px, null, gray.Width, gray.Height);
        }
        using var rgb = LoadOriented<Rgb24>(configuration, bytes);
        var rgbBytes = new byte[rgb.Width * rgb.Height * 3];
        rgb.CopyPixelDataTo(rgbBytes);
        return new Decoded(channels == 3 ? rgbBytes : Widen(rgbBytes, 3, channels), null, rgb.Width, rgb.Height);
    }

    /// <summary>Gray or RGB pixels to <paramref name="channels"/> channels: gray replicated; RGB then its channels
    /// repeated (a 4-channel model fed RGB files).</summary>
    public static T[] Widen<T>(T[] pixels, int from, int channels)
    {
        int n = pixels.Length / from;
        var wide = new T[n * channels];
        for (int i = 0; i < n; i++)
            for (int c = 0; c < channels; c++) wide[i * channels + c] = pixels[i * from + (from == 1 ? 0 : c % 3)];
        return wide;
    }

    /// <summary>An 8-bit picture of 16-bit samples for overlays: stretched from the lowest sample to the highest
    /// (12-bit microscopy in a 16-bit file would be near black divided by 257).</summary>
    public static byte[] ForDisplay(ushort[] wide)
    {
        int lo = ushort.MaxValue, hi = 0;
        foreach (var v in wide) { if (v < lo) lo = v; if (v > hi) hi = v; }
        double scale = 255.0 / Math.Max(1, hi - lo);
        var px = new byte[wide.Length];
        for (int i = 0; i < wide.Length; i++) px[i] = (byte)Math.Min(255, (int)((wide[i] - lo) * scale + 0.5));
        return px;
    }

    /// <summary>A decoded image: 8-bit samples, or 16-bit ones (the other null), interleaved H x W x C.</summary>
    public readonly record struct Decoded(byte[]? Pixels, ushort[]? Pixels16, int Width, int Height);
}
