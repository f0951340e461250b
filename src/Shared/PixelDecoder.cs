using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Metadata;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace Segmentation.Shared;

/// <summary>
/// How an image file becomes the model's channels, the same for the TorchSharp side (the loader and the predictor,
/// past its PNG fast path, which gives the same bytes) and for <c>Segmentation.Onnx</c>: one copy, compiled into both.
/// The EXIF orientation is applied first (as viewers and PIL's <c>exif_transpose</c> show the image); colour becomes
/// gray by ImageSharp's luminance (BT.709), gray is replicated to colour, alpha is dropped, 16-bit samples are
/// reduced to 8 bits by ImageSharp's rounding; for more than three channels the RGB channels repeat.
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

    /// <summary>Decodes <paramref name="bytes"/> to <paramref name="channels"/> interleaved 8-bit channels, H x W x
    /// C.</summary>
    public static (byte[] Pixels, int Width, int Height) Decode(Configuration configuration, byte[] bytes,
        int channels)
    {
        if (channels == 1)
        {
            using var gray = LoadOriented<L8>(configuration, bytes);
            var px = new byte[gray.Width * gray.Height];
            gray.CopyPixelDataTo(px);
            return (px, gray.Width, gray.Height);
        }
        using var rgb = LoadOriented<Rgb24>(configuration, bytes);
        var rgbBytes = new byte[rgb.Width * rgb.Height * 3];
        rgb.CopyPixelDataTo(rgbBytes);
        return (channels == 3 ? rgbBytes : Widen(rgbBytes, 3, channels), rgb.Width, rgb.Height);
    }

    /// <summary>Gray or RGB pixels to <paramref name="channels"/> channels: gray replicated; RGB then its channels
    /// repeated (a 4-channel model fed RGB files).</summary>
    public static byte[] Widen(byte[] pixels, int from, int channels)
    {
        int n = pixels.Length / from;
        var wide = new byte[n * channels];
        for (int i = 0; i < n; i++)
            for (int c = 0; c < channels; c++) wide[i * channels + c] = pixels[i * from + (from == 1 ? 0 : c % 3)];
        return wide;
    }
}
