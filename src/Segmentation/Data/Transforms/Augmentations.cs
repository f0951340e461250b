using System.Globalization;
using System.Text.RegularExpressions;

namespace Segmentation.Data;

/// <summary>
/// A training augmentation pipeline written as text, one step after another:
/// <c>scale(0.5,2) crop(256) hflip vflip rot90 rotate(15) elastic(alpha=34,sigma=4) jitter(0.2) noise(8) blur(1.5)</c>.
/// Arguments are positional or <c>name=value</c>; each step's probability is its last argument <c>p=</c>.
/// The steps and their arguments:
/// <list type="bullet">
/// <item><c>scale(min, max)</c>: <see cref="RandomScale"/>.</item>
/// <item><c>crop(h[, w], cat=1)</c>: <see cref="RandomCrop"/> (pads with the ignore label; <c>cat</c> is
/// mmsegmentation's cat_max_ratio).</item>
/// <item><c>resize(h[, w])</c>: <see cref="Resize"/>.</item>
/// <item><c>hflip(p=0.5)</c>, <c>vflip(p=0.5)</c>, <c>rot90(p=1)</c>, <c>rotate(degrees, p=0.5)</c>.</item>
/// <item><c>elastic(alpha=34, sigma=4, p=0.5)</c>: <see cref="ElasticDeformation"/>.</item>
/// <item><c>jitter(b[, c, s, hue], p=1)</c>: <see cref="ColorJitter"/> (one value: brightness, contrast and saturation
/// alike).</item>
/// <item><c>noise(std=8, p=0.5)</c>, <c>blur(sigma=1.5, p=0.5)</c>.</item>
/// </list>
/// </summary>
public static class Augmentations
{
    private sealed record Step(string Name, string[] Parameters, Func<double[], ISampleTransform> Make);

    private static readonly Step[] Steps =
    {
        new("scale", new[] { "min", "max" }, a => new RandomScale(a[0], a[1])),
        new("crop", new[] { "h", "w", "cat" }, a => new RandomCrop(Int(a[0]), Int(double.IsNaN(a[1]) ? a[0] : a[1]),
            double.IsNaN(a[2]) ? 1.0 : a[2])),
        new("resize", new[] { "h", "w" }, a => new Resize(Int(a[0]), Int(double.IsNaN(a[1]) ? a[0] : a[1]))),
        new("hflip", new[] { "p" }, a => new HorizontalFlip(Or(a[0], 0.5))),
        new("vflip", new[] { "p" }, a => new VerticalFlip(Or(a[0], 0.5))),
        new("rot90", new[] { "p" }, a => new RandomRotate90(Or(a[0], 1.0))),
        new("rotate", new[] { "degrees", "p" }, a => new RandomRotation(a[0], Or(a[1], 0.5))),
        new("elastic", new[] { "alpha", "sigma", "p" }, a => new ElasticDeformation(Or(a[0], 34), Or(a[1], 4),
            Or(a[2], 0.5))),
        new("jitter", new[] { "b", "c", "s", "hue", "p" }, a => new ColorJitter(a[0], Or(a[1], a[0]), Or(a[2], a[0]),
            Or(a[3], 0), Or(a[4], 1.0))),
        new("noise", new[] { "std", "p" }, a => new GaussianNoise(Or(a[0], 8), Or(a[1], 0.5))),
        new("blur", new[] { "sigma", "p" }, a => new GaussianBlur(Or(a[0], 1.5), Or(a[1], 0.5))),
    };

    // Required arguments (NaN when missing is an error): the first of scale (both), crop, resize, rotate, jitter.
    private static readonly Dictionary<string, int> Required = new() { ["scale"] = 2, ["crop"] = 1, ["resize"] = 1,
        ["rotate"] = 1, ["jitter"] = 1 };

    private static double Or(double v, double fallback) => double.IsNaN(v) ? fallback : v;
    private static int Int(double v) => v >= 1 && v <= Size2.MaxSide && v == Math.Floor(v) ? (int)v
        : throw new OptionsException($"Augmentation size {v} must be a whole number from 1 to {Size2.MaxSide}.");

    /// <summary>The pipeline <paramref name="text"/> describes; errors name the step and what it takes.</summary>
    public static Compose Parse(string text)
    {
        var transforms = new List<ISampleTransform>();
        foreach (Match m in Regex.Matches(text, @"\s*([A-Za-z0-9_]+)\s*(\(([^()]*)\))?\s*"))
        {
            if (m.Length == 0) continue;
            string name = m.Groups[1].Value.ToLowerInvariant();
            var step = Steps.FirstOrDefault(s => s.Name == name)
                ?? throw new OptionsException($"Augmentation '{name}' is not one of: "
                + $"{string.Join(", ", Steps.Select(s => s.Name))}.");
            var args = Arguments(step, m.Groups[3].Success ? m.Groups[3].Value : "");
            if (Required.TryGetValue(name, out int needed) && args.Take(needed).Any(double.IsNaN))
                throw new OptionsException($"Augmentation {name} needs "
                    + $"{string.Join(", ", step.Parameters.Take(needed))}: "
                    + $"{name}({string.Join(", ", step.Parameters)}).");
            transforms.Add(step.Make(args));
        }
        string rest = Regex.Replace(text, @"\s*([A-Za-z0-9_]+)\s*(\(([^()]*)\))?\s*", "");
        if (rest.Length > 0)
            throw new OptionsException($"Augmentation text '{text}': cannot read '{rest}' (steps look like "
                + $"scale(0.5,2) crop(256) hflip).");
        return new Compose(transforms.ToArray());
    }

    private static double[] Arguments(Step step, string text)
    {
        var values = Enumerable.Repeat(double.NaN, step.Parameters.Length).ToArray();
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        for (int i = 0; i < parts.Length; i++)
        {
            var kv = parts[i].Split('=', 2, StringSplitOptions.TrimEntries);
            int at = kv.Length == 2 ? Array.IndexOf(step.Parameters, kv[0].ToLowerInvariant()) : i;
            if (at < 0 || at >= values.Length)
                throw new OptionsException($"Augmentation {step.Name}: '{parts[i]}' is not one of its arguments "
                    + $"({string.Join(", ", step.Parameters)}).");
            values[at] = double.TryParse(kv[^1], NumberStyles.Float, CultureInfo.InvariantCulture, out var v)
                && double.IsFinite(v)
                ? v : throw new OptionsException($"Augmentation {step.Name}: '{kv[^1]}' is not a number.");
        }
        return values;
    }
}
