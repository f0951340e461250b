namespace Segmentation.Data;

/// <summary>Height and width.</summary>
public readonly record struct Size2(int Height, int Width)
{
    /// <summary>Largest height or width accepted (a 65536 x 65536 image is already 4 gigapixels).</summary>
    public const int MaxSide = 65536;

    /// <summary>Parses "HxW" or "N" (square).</summary>
    public static Size2 Parse(string text)
    {
        var parts = text.Trim().ToLowerInvariant().Split('x');
        if (parts.Length is 1 or 2 && parts.All(p => long.TryParse(p, out var v) && v > MaxSide))
            throw new OptionsException($"Size '{text}' is over the limit of {MaxSide} pixels a side.");
        if (parts.Length == 1 && int.TryParse(parts[0], out var n) && n > 0) return new Size2(n, n);
        if (parts.Length == 2 && int.TryParse(parts[0], out var h) && int.TryParse(parts[1], out var w) && h > 0
            && w > 0)
            return h <= MaxSide && w <= MaxSide ? new Size2(h, w)
                : throw new OptionsException($"Size '{text}' is over the limit of {MaxSide} pixels a side.");
        throw new OptionsException($"Size '{text}' is not of the form HxW (e.g. 256x256) with positive numbers.");
    }

    /// <summary>"HxW".</summary>
    public override string ToString() => $"{Height}x{Width}";
}
