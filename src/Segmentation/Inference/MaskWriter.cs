using Segmentation.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Inference;

/// <summary>Writes predictions as PNG files through ImageSharp.</summary>
public static class MaskWriter
{
    /// <summary>Class indices as an 8-bit gray PNG (value = class).</summary>
    public static void SaveLabels(string path, byte[] labels, int width, int height)
    {
        using var img = Image.LoadPixelData<L8>(labels, width, height);
        Save(img, path);
    }

    /// <summary>Object numbers as a 16-bit gray PNG (0: none), the format of StarDist and Cellpose.</summary>
    public static void SaveInstances(string path, int[] objects, int width, int height)
    {
        var values = new L16[objects.Length];
        for (int i = 0; i < objects.Length; i++)
            values[i] = new L16(objects[i] is >= 0 and <= ushort.MaxValue ? (ushort)objects[i]
                : throw new SegmentationException($"{path}: object number {objects[i]} does not fit a 16-bit PNG "
                    + $"(0-{ushort.MaxValue})."));
        using var img = Image.LoadPixelData<L16>(values, width, height);
        Save(img, path);
    }

    /// <summary>The image with each object in a colour of its own and its contour drawn (RGB PNG).</summary>
    public static void SaveInstanceOverlay(string path, ImageBuffer image, int[] objects)
    {
        image = image.ForDisplay();
        var rgb = Shared.InstanceOverlay.Draw(image.Pixels, image.Channels, objects, image.Width, image.Height);
        using var img = Image.LoadPixelData<Rgb24>(rgb, image.Width, image.Height);
        Save(img, path);
    }

    /// <summary>Each class in its colour (RGB PNG).</summary>
    public static void SaveColorized(string path, byte[] labels, int width, int height, IReadOnlyList<Rgb> colors)
    {
        using var img = new Image<Rgb24>(width, height);
        img.ProcessPixelRows(rows =>
        {
            for (int y = 0; y < height; y++)
            {
                var row = rows.GetRowSpan(y);
                for (int x = 0; x < width; x++) row[x] = ToPixel(Color(labels[y * width + x], colors));
            }
        });
        Save(img, path);
    }

    /// <summary>The image with class colours blended over it (<paramref name="alpha"/> = colour weight; background
    /// class 0 left clear when <paramref name="skipClassZero"/>).</summary>
    public static void SaveOverlay(string path, ImageBuffer image, byte[] labels, IReadOnlyList<Rgb> colors,
        double alpha = 0.5, bool skipClassZero = true)
    {
        image = image.ForDisplay();
        var rgb = Shared.OverlayBlend.Blend(image.Pixels, image.Channels, labels, colors.Select(c => (c.R, c.G, c.B))
            .ToList(), alpha, skipClassZero);
        using var img = Image.LoadPixelData<Rgb24>(rgb, image.Width, image.Height);
        Save(img, path);
    }

    /// <summary>The probability of class <paramref name="cls"/> as a gray PNG (0-255).</summary>
    public static void SaveProbability(string path, float[] probabilities, int cls, int width, int height)
    {
        var bytes = new byte[width * height];
        int offset = cls * width * height;
        for (int i = 0; i < bytes.Length; i++) bytes[i] =
            (byte)Math.Clamp((int)Math.Round(probabilities[offset + i] * 255), 0, 255);
        SaveLabels(path, bytes, width, height);
    }

    /// <summary>Saves an image buffer (1 or 3+ channels) as PNG, at its depth (a 16-bit image as a 16-bit
    /// PNG).</summary>
    public static void SaveImage(string path, ImageBuffer image)
    {
        if (image.Pixels16 is { } wide)
        {
            int n = image.Width * image.Height, ch = image.Channels;
            if (ch == 1)
            {
                using var gray = Image.LoadPixelData(Array.ConvertAll(wide, v => new L16(v)), image.Width,
                    image.Height);
                Save(gray, path);
                return;
            }
            var colour = new Rgb48[n];
            for (int i = 0; i < n; i++) colour[i] = new Rgb48(wide[i * ch], wide[i * ch + 1], wide[i * ch + 2]);
            using var img48 = Image.LoadPixelData(colour, image.Width, image.Height);
            Save(img48, path);
            return;
        }
        if (image.Channels == 1) { SaveLabels(path, image.Pixels, image.Width, image.Height); return; }
        var rgb = new byte[image.Width * image.Height * 3];
        for (int i = 0; i < image.Width * image.Height; i++)
            for (int c = 0; c < 3; c++) rgb[i * 3 + c] = image.Pixels[i * image.Channels + c];
        using var img = Image.LoadPixelData<Rgb24>(rgb, image.Width, image.Height);
        Save(img, path);
    }

    private static Rgb Color(int label, IReadOnlyList<Rgb> colors) => label < colors.Count ? colors[label]
        : new Rgb(255, 255, 255);

    private static Rgb24 ToPixel(Rgb c) => new(c.R, c.G, c.B);

    private static void Save(Image img, string path)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        try { AtomicFile.Write(path, s => img.SaveAsPng(s)); } // a crash leaves the previous file, never half a PNG
        catch (Exception e) when (e is IOException || e is UnauthorizedAccessException)
        {
            throw new SegmentationException(e.Message, e); // AtomicFile names the file and why
        }
    }
}
