namespace Segmentation.Data;

/// <summary>Options of the built-in synthetic <c>shapes</c> data set.</summary>
public sealed record ShapesOptions
{
    /// <summary>Number of samples.</summary>
    public int Count { get; init; } = 500;
    /// <summary>Width and height of each image.</summary>
    public int Size { get; init; } = 96;
    /// <summary>Seed: the same seed gives the same images.</summary>
    public int Seed { get; init; }
    /// <summary>Image channels (3, or 1 for gray).</summary>
    public int Channels { get; init; } = 3;
    /// <summary>Most shapes per image (at least one).</summary>
    public int MaxShapes { get; init; } = 4;
    /// <summary>Instance data instead: shaded blobs, many of them touching, each with its own object number (classes
    /// background, object, boundary).</summary>
    public bool Instances { get; init; }
    /// <summary>Panoptic data instead: the same objects, round (class 1) or oval (class 2), on a background that is
    /// stuff (class 0).</summary>
    public bool Panoptic { get; init; }
}

/// <summary>
/// Built-in synthetic data: circles, rectangles and triangles of random size, colour, rotation and position
/// (never overlapping) on noisy, textured backgrounds. Classes: 0 background, 1 circle, 2 rectangle, 3 triangle.
/// Deterministic for a seed;
/// each sample depends only on (seed, index).
/// </summary>
internal sealed class ShapesSource : ISampleSource
{
    public static readonly string[] ClassNames = { "background", "circle", "rectangle", "triangle" };
    private readonly ShapesOptions options;

    public ShapesSource(ShapesOptions options)
    {
        if (options.Count < 1) throw new OptionsException($"Shapes Count is {options.Count}; it must be at least 1.");
        if (options.Size < 16 || options.Size > 4096)
            throw new OptionsException($"Shapes Size is {options.Size}; it must be between 16 and 4096.");
        if (options.Channels is not (1 or 3))
            throw new OptionsException($"Shapes Channels is {options.Channels}; it must be 1 or 3.");
        if (options.MaxShapes < 1)
            throw new OptionsException($"Shapes MaxShapes is {options.MaxShapes}; it must be at least 1.");
        this.options = options;
    }

    public int Count => options.Count;

    public string NameOf(int index) => $"shapes-{options.Seed}-{index:D5}";

    public Sample Load(int index)
    {
        if (options.Instances || options.Panoptic) return LoadObjects(index);
        int n = options.Size;
        var rng = new Random(Seeds.Mix(options.Seed, index, 0x5A3E));
        var image = new ImageBuffer(n, n, 3);
        var mask = new byte[n * n];
        var (c0, c1) = PaintBackground(rng, image.Pixels, n);
        // Shapes do not overlap (their bounding circles are disjoint), so every visible outline is the whole shape
        // and the label of each pixel can be told from the picture; a shape with no free place is left out.
        int shapes = 1 + rng.Next(options.MaxShapes);
        var placed = new List<(double X, double Y, double R)>();
        for (int s = 0; s < shapes; s++) PaintShape(rng, image.Pixels, mask, n, placed, c0, c1);
        return new Sample(options.Channels == 1 ? ToGray(image) : image, mask, NameOf(index));
    }

    /// <summary>
    /// Instance data: 2 to MaxShapes + 2 shaded ellipses (bright centre, darker rim, as stained nuclei), about half of
    /// them placed to touch or slightly overlap an earlier one (the later one in front), so only their shape and
    /// shading tell touching objects apart. Object numbers in drawing order.
    /// </summary>
    private Sample LoadObjects(int index)
    {
        int n = options.Size;
        var rng = new Random(Seeds.Mix(options.Seed, index, 0x1D5));
        var image = new ImageBuffer(n, n, 3);
        var (c0, c1) = PaintBackground(rng, image.Pixels, n);
        var ids = new ushort[n * n];
        var placed = new List<(double X, double Y, double R)>();
        int objects = 2 + rng.Next(options.MaxShapes + 1);
        var kinds = new byte[objects];
        for (int k = 0; k < objects; k++)
        {
            double r = n * (0.09 + rng.NextDouble() * 0.07), cx, cy;
            if (placed.Count > 0 && rng.NextDouble() < 0.5)
            {
                var (px, py, pr) = placed[rng.Next(placed.Count)];
                double angle = rng.NextDouble() * 2 * Math.PI, d = (pr + r) * (0.8 + rng.NextDouble() * 0.15);
                cx = px + d * Math.Cos(angle); cy = py + d * Math.Sin(angle);
            }
            else { cx = r + rng.NextDouble() * (n - 2 * r); cy = r + rng.NextDouble() * (n - 2 * r); }
            placed.Add((cx, cy, r));
            var color = ContrastingColor(rng, c0, c1);
            // panoptic: round objects are class 1, oval ones class 2
            double aspect = !options.Panoptic ? 0.75 + rng.NextDouble() * 0.25 : (kinds[k] = (byte)(1 + rng.Next(2)))
                == 1 ? 0.9 + rng.NextDouble() * 0.1 : 0.5 + rng.NextDouble() * 0.15;
            PaintBlob(rng, image.Pixels, ids, n, cx, cy, r, (ushort)(k + 1), color, aspect);
        }
        var mask = Array.ConvertAll(ids, v => v == 0 ? (byte)0 : options.Panoptic ? kinds[v - 1] : (byte)1);
        return new Sample(options.Channels == 1 ? ToGray(image) : image, mask, NameOf(index), ids);
    }

    private static void PaintBlob(Random rng, byte[] px, ushort[] ids, int n, double cx, double cy, double r,
        ushort id, double[] color, double aspect)
    {
        double rot = rng.NextDouble() * Math.PI;
        double cos = Math.Cos(rot), sin = Math.Sin(rot);
        for (int y = Math.Max(0, (int)(cy - r - 1)); y <= Math.Min(n - 1, (int)(cy + r + 1)); y++)
            for (int x = Math.Max(0, (int)(cx - r - 1)); x <= Math.Min(n - 1, (int)(cx + r + 1)); x++)
            {
                double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
                double u = (dx * cos + dy * sin) / r, v = (-dx * sin + dy * cos) / (r * aspect);
                double rho = u * u + v * v;
                if (rho > 1) continue;
                ids[y * n + x] = id;
                double shade = 1.15 - 0.55 * rho; // bright centre, dark rim
                for (int c = 0; c < 3; c++) px[(y * n + x) * 3 + c] = Clamp(color[c] * shade + Gaussian(rng) * 6);
            }
    }

    /// <summary>A colour gradient, a sinusoidal texture at a random angle, and per-pixel noise; returns the gradient's
    /// two colours.</summary>
    private static (double[], double[]) PaintBackground(Random rng, byte[] px, int n)
    {
        var c0 = RandomColor(rng); var c1 = RandomColor(rng);
        double angle = rng.NextDouble() * Math.PI, freq = 0.1 + rng.NextDouble() * 0.4, amp = 10 + rng.NextDouble()
            * 20;
        double ca = Math.Cos(angle), sa = Math.Sin(angle);
        for (int y = 0; y < n; y++)
            for (int x = 0; x < n; x++)
            {
                double t = (double)(x + y) / (2 * n);
                double tex = amp * Math.Sin((x * ca + y * sa) * freq);
                for (int c = 0; c < 3; c++)
                    px[(y * n + x) * 3 + c] = Clamp(c0[c] * (1 - t) + c1[c] * t + tex + Gaussian(rng) * 8);
            }
        return (c0, c1);
    }

    /// <summary>Draws one random shape (circle 1, rectangle 2, triangle 3) where it overlaps none placed so far, if
    /// there is room.</summary>
    private static void PaintShape(Random rng, byte[] px, byte[] mask, int n,
        List<(double X, double Y, double R)> placed, double[] c0, double[] c1)
    {
        int kind = 1 + rng.Next(3);
        double r = n * (0.1 + rng.NextDouble() * 0.15);
        double rot = rng.NextDouble() * 2 * Math.PI;
        double aspect = 0.6 + rng.NextDouble() * 0.8;
        double bound = kind == 2 ? 0.85 * r * Math.Sqrt(1 + aspect * aspect) : r;
        double cx = 0, cy = 0;
        bool free = false;
        for (int attempt = 0; attempt < 30 && !free; attempt++)
        {
            cx = bound + rng.NextDouble() * Math.Max(0, n - 2 * bound);
            cy = bound + rng.NextDouble() * Math.Max(0, n - 2 * bound);
            free = placed.All(p => Math.Sqrt((p.X - cx) * (p.X - cx) + (p.Y - cy) * (p.Y - cy)) > p.R + bound + 1);
        }
        if (!free) return;
        placed.Add((cx, cy, bound));
        var color = ContrastingColor(rng, c0, c1);
        var tri = Enumerable.Range(0, 3).Select(k => (X: cx + r * Math.Cos(rot + k * 2 * Math.PI / 3),
            Y: cy + r * Math.Sin(rot + k * 2 * Math.PI / 3))).ToArray();
        int x0 = Math.Max(0, (int)(cx - r * 1.5)), x1 = Math.Min(n - 1, (int)(cx + r * 1.5));
        int y0 = Math.Max(0, (int)(cy - r * 1.5)), y1 = Math.Min(n - 1, (int)(cy + r * 1.5));
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++)
            {
                double px0 = x + 0.5 - cx, py0 = y + 0.5 - cy;
                bool inside = kind switch
                {
                    1 => px0 * px0 + py0 * py0 <= r * r,
                    2 => Math.Abs(px0 * Math.Cos(rot) + py0 * Math.Sin(rot)) <= r * 0.85
                        && Math.Abs(-px0 * Math.Sin(rot) + py0 * Math.Cos(rot)) <= r * 0.85 * aspect,
                    _ => InTriangle(x + 0.5, y + 0.5, tri),
                };
                if (!inside) continue;
                mask[y * n + x] = (byte)kind;
                for (int c = 0; c < 3; c++)
                    px[(y * n + x) * 3 + c] = Clamp(color[c] + Gaussian(rng) * 8);
            }
    }

    private static ImageBuffer ToGray(ImageBuffer rgb)
    {
        int pixels = rgb.Width * rgb.Height;
        var gray = new ImageBuffer(rgb.Width, rgb.Height, 1);
        var px = rgb.Pixels;
        for (int i = 0; i < pixels; i++)
            gray.Pixels[i] = Clamp(0.299 * px[i * 3] + 0.587 * px[i * 3 + 1] + 0.114 * px[i * 3 + 2]);
        return gray;
    }

    /// <summary>Panoptic shapes: background (stuff), round and oval (things), and the boundary.</summary>
    public static DatasetDescription PanopticDescription(int channels, InstanceSettings settings) =>
        settings.DescribePanoptic(new DatasetDescription
        {
            Classes = 3, ClassNames = new[] { "background", "round", "oval" },
            ClassColors = new[] { new Rgb(0, 0, 0), new Rgb(255, 200, 0), new Rgb(0, 130, 200) },
            IgnoreIndex = Labels.Ignore, Encoding = MaskEncoding.Index, InChannels = channels,
        }, new[] { false, true, true });

    public static DatasetDescription Description(int channels) => new()
    {
        Classes = 4,
        ClassNames = ClassNames,
        ClassColors = new[] { new Rgb(0, 0, 0), new Rgb(230, 25, 75), new Rgb(60, 180, 75), new Rgb(0, 130, 200) },
        IgnoreIndex = Labels.Ignore,
        Encoding = MaskEncoding.Index,
        InChannels = channels,
    };

    private static double[] RandomColor(Random rng) => new[] { rng.NextDouble() * 255, rng.NextDouble() * 255,
        rng.NextDouble() * 255 };

    private static double[] ContrastingColor(Random rng, double[] a, double[] b)
    {
        double[] best = RandomColor(rng);
        double bestDistance = -1;
        for (int tries = 0; tries < 8; tries++)
        {
            var c = RandomColor(rng);
            double d = Math.Min(Distance(c, a), Distance(c, b));
            if (d > bestDistance) { best = c; bestDistance = d; }
            if (d > 120) break;
        }
        return best;
    }

    private static double Distance(double[] a, double[] b) => Math.Sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1])
        * (a[1] - b[1]) + (a[2] - b[2]) * (a[2] - b[2]));

    private static bool InTriangle(double x, double y, (double X, double Y)[] t)
    {
        double d1 = Sign(x, y, t[0], t[1]), d2 = Sign(x, y, t[1], t[2]), d3 = Sign(x, y, t[2], t[0]);
        bool neg = d1 < 0 || d2 < 0 || d3 < 0, pos = d1 > 0 || d2 > 0 || d3 > 0;
        return !(neg && pos);
    }

    private static double Sign(double x, double y, (double X, double Y) a, (double X, double Y) b) => (x - b.X)
        * (a.Y - b.Y) - (a.X - b.X) * (y - b.Y);

    private static double Gaussian(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble()))
        * Math.Cos(2 * Math.PI * rng.NextDouble());

    private static byte Clamp(double v) => (byte)Math.Clamp((int)Math.Round(v), 0, 255);
}
