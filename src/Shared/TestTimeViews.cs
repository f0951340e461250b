namespace Segmentation.Shared;

/// <summary>
/// The views test-time augmentation averages, the same for both predictors (TorchSharp and ONNX Runtime): the image
/// alone; with its mirror image (<c>flip</c>); with its three mirror images, left-right, up-down and both
/// (<c>flips</c>); or those four and their transposes, the eight symmetries of the square (<c>dihedral</c>). Each
/// view's logits are mapped back to the image and averaged before any decoding.
/// </summary>
internal static class TestTimeViews
{
    /// <summary>One view of an image: transposed first (rows become columns), then its rows reversed (upside down),
    /// then its columns (left to right).</summary>
    public readonly record struct View(bool Transpose, bool FlipRows, bool FlipColumns);

    /// <summary>The modes' names, in the order of the public enums (<c>TestTimeAugmentation</c>).</summary>
    public static readonly string[] Names = { "none", "flip", "flips", "dihedral" };

    private static readonly View Identity = new(false, false, false);

    /// <summary>The views of mode <paramref name="mode"/> (an index into <see cref="Names"/>), the image itself
    /// first.</summary>
    public static View[] Of(int mode) => mode switch
    {
        0 => new[] { Identity },
        1 => new[] { Identity, new View(false, false, true) },
        2 => Flips(false),
        3 => Flips(false).Concat(Flips(true)).ToArray(),
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, $"expected 0 to {Names.Length - 1}"),
    };

    private static View[] Flips(bool transpose) => new[]
    {
        new View(transpose, false, false), new View(transpose, false, true), new View(transpose, true, false),
        new View(transpose, true, true),
    };

    /// <summary>The mode named <paramref name="name"/> (case-insensitive), or null.</summary>
    public static int? Parse(string name)
    {
        int i = Array.FindIndex(Names, n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase));
        return i < 0 ? null : i;
    }

    /// <summary>A C x H x W array seen through <paramref name="v"/>: C x W x H when transposed.</summary>
    public static float[] Apply(float[] x, int c, int h, int w, View v)
    {
        int oh = v.Transpose ? w : h, ow = v.Transpose ? h : w;
        var result = new float[x.Length];
        for (int k = 0; k < c; k++)
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++)
                {
                    int si = v.FlipRows ? oh - 1 - i : i, sj = v.FlipColumns ? ow - 1 - j : j;
                    var (row, col) = v.Transpose ? (sj, si) : (si, sj);
                    result[(k * oh + i) * ow + j] = x[(k * h + row) * w + col];
                }
        return result;
    }

    /// <summary>The inverse of <see cref="Apply"/>: a view's C-plane output mapped back onto the H x W
    /// image.</summary>
    public static float[] Undo(float[] y, int c, int h, int w, View v)
    {
        int oh = v.Transpose ? w : h, ow = v.Transpose ? h : w;
        var result = new float[c * h * w];
        for (int k = 0; k < c; k++)
            for (int i = 0; i < h; i++)
                for (int j = 0; j < w; j++)
                {
                    var (ti, tj) = v.Transpose ? (j, i) : (i, j);
                    int fi = v.FlipRows ? oh - 1 - ti : ti, fj = v.FlipColumns ? ow - 1 - tj : tj;
                    result[(k * h + i) * w + j] = y[(k * oh + fi) * ow + fj];
                }
        return result;
    }
}
