namespace Segmentation.Shared;

/// <summary>The picture both predictors draw: the image with each labelled pixel blended with its class
/// colour.</summary>
internal static class OverlayBlend
{
    /// <summary>
    /// RGB bytes (H x W x 3) of <paramref name="pixels"/> (H x W x <paramref name="channels"/>; gray is shown as gray)
    /// with each pixel whose label has a colour blended by <paramref name="alpha"/>; class 0 is left as it is when
    /// <paramref name="skipClassZero"/>.
    /// </summary>
    public static byte[] Blend(byte[] pixels, int channels, byte[] labels,
        IReadOnlyList<(byte R, byte G, byte B)> colors, double alpha = 0.5,
        bool skipClassZero = true)
    {
        var rgb = new byte[labels.Length * 3];
        for (int i = 0; i < labels.Length; i++)
        {
            byte r = pixels[i * channels], g = pixels[i * channels + (channels > 1 ? 1 : 0)],
                b = pixels[i * channels + (channels > 2 ? 2 : 0)];
            int label = labels[i];
            if (label < colors.Count && !(skipClassZero && label == 0))
            {
                var k = colors[label];
                r = Mix(r, k.R, alpha); g = Mix(g, k.G, alpha); b = Mix(b, k.B, alpha);
            }
            (rgb[i * 3], rgb[i * 3 + 1], rgb[i * 3 + 2]) = (r, g, b);
        }
        return rgb;
    }

    private static byte Mix(byte image, byte color, double alpha) => (byte)(image * (1 - alpha) + color * alpha);
}

/// <summary>The picture both predictors draw for instance predictions: each object in a colour of its own, blended
/// over the image, with its contour drawn solid.</summary>
internal static class InstanceOverlay
{
    /// <summary>RGB bytes (H x W x 3) of <paramref name="pixels"/> (H x W x <paramref name="channels"/>) with each
    /// object of <paramref name="objects"/> (0: none) blended by <paramref name="alpha"/> and outlined.</summary>
    public static byte[] Draw(byte[] pixels, int channels, int[] objects, int width, int height, double alpha = 0.4)
    {
        var rgb = new byte[objects.Length * 3];
        for (int i = 0; i < objects.Length; i++)
        {
            int id = objects[i];
            int x = i % width, y = i / width;
            bool contour = id != 0 && ((x > 0 && objects[i - 1] != id) || (x < width - 1 && objects[i + 1] != id)
                || (y > 0 && objects[i - width] != id) || (y < height - 1 && objects[i + width] != id));
            double a = id == 0 ? 0 : contour ? 1 : alpha;
            var (r, g, b) = id == 0 ? ((byte)0, (byte)0, (byte)0) : ColorOf(id);
            for (int c = 0; c < 3; c++)
            {
                byte v = pixels[i * channels + Math.Min(c, channels - 1)];
                byte k = c == 0 ? r : c == 1 ? g : b;
                rgb[i * 3 + c] = (byte)(v * (1 - a) + k * a);
            }
        }
        return rgb;
    }

    /// <summary>A bright colour for object <paramref name="id"/>: hues a golden-ratio turn apart, so neighbours (which
    /// are numbered close together) differ.</summary>
    public static (byte R, byte G, byte B) ColorOf(int id)
    {
        double h = id * 0.6180339887 % 1.0 * 6, f = h - Math.Floor(h);
        byte hi = 255, lo = 60, up = (byte)(lo + (hi - lo) * f), down = (byte)(hi - (hi - lo) * f);
        return (int)h switch
        {
            0 => (hi, up, lo), 1 => (down, hi, lo), 2 => (lo, hi, up),
            3 => (lo, down, hi), 4 => (up, lo, hi), _ => (hi, lo, down),
        };
    }
}
