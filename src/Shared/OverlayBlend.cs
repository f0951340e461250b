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
