using System.Globalization;
using System.Text.Json.Nodes;
using Segmentation.Shared;

namespace Segmentation.Data;

/// <summary>Median and extremes of a quantity over a data set.</summary>
/// <param name="Median">The median.</param>
/// <param name="Min">The smallest.</param>
/// <param name="Max">The largest.</param>
public readonly record struct Spread(double Median, double Min, double Max)
{
    /// <summary>The spread of <paramref name="values"/> (zeros when there are none).</summary>
    public static Spread Of(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? default : new Spread(MedianOf(sorted), sorted[0], sorted[^1]);
    }

    /// <summary>The median of sorted values (the mean of the middle two for an even count).</summary>
    public static double MedianOf(double[] sorted) => sorted.Length % 2 == 1 ? sorted[sorted.Length / 2]
        : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;

    /// <summary>"median 520 (256-1388)".</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"median {Median:G4} ({Min:G4}-{Max:G4})");
}

/// <summary>What instance data's objects look like.</summary>
/// <param name="Total">Objects in the data set.</param>
/// <param name="PerImage">Objects per image.</param>
/// <param name="Area">Object areas in pixels.</param>
/// <param name="SmallArea">The 2nd percentile of the areas.</param>
/// <param name="Diameter">The median object's equivalent diameter (of a disc of its area), in pixels.</param>
public sealed record ObjectFingerprint(long Total, Spread PerImage, Spread Area, double SmallArea, double Diameter);

/// <summary>
/// A fingerprint of a data set, nnU-Net's idea: what the plan (<c>segment plan</c>) is made from. Image sizes (from the
/// headers), gray or colour over every image, intensities per image and over the set, class shares and the
/// foreground's, and for instance data the objects' counts and sizes. Every sample is decoded once, in parallel.
/// </summary>
public sealed record DataFingerprint
{
    /// <summary>Images.</summary>
    public int Images { get; init; }
    /// <summary>Widths.</summary>
    public Spread Width { get; init; }
    /// <summary>Heights.</summary>
    public Spread Height { get; init; }
    /// <summary>The channels the model takes (1 gray, 3 colour: a mixed folder is colour).</summary>
    public int Channels { get; init; }
    /// <summary>Images with colour (some pixel whose channels differ); the rest are gray.</summary>
    public int ColourImages { get; init; }
    /// <summary>Bits a sample: 16 when any image is 16-bit (read at full depth), else 8.</summary>
    public int Bits { get; init; } = 8;
    /// <summary>Per-image mean intensity, over all channels, in units of full scale (pixel / 255, or / 65535 for 16-bit
    /// images).</summary>
    public Spread ImageMean { get; init; }
    /// <summary>Per-image 1st percentile, in units of full scale (pixel / 255, or / 65535 for 16-bit images).</summary>
    public Spread ImageLow { get; init; }
    /// <summary>Per-image 99.8th percentile, in units of full scale (pixel / 255, or / 65535 for 16-bit
    /// images).</summary>
    public Spread ImageHigh { get; init; }
    /// <summary>How much the images' intensity ranges differ: the coefficient of variation of the per-image range
    /// (99.8th less 1st percentile) and mean together (the larger of the two).</summary>
    public double IntensityVariation { get; init; }
    /// <summary>Per-channel mean over every pixel of the set (units of full scale (pixel / 255, or / 65535 for 16-bit
    /// images)).</summary>
    public float[] ChannelMean { get; init; } = Array.Empty<float>();
    /// <summary>Per-channel standard deviation over every pixel of the set.</summary>
    public float[] ChannelStd { get; init; } = Array.Empty<float>();
    /// <summary>Each class's share of the labelled pixels (the model's classes: instance data's boundary
    /// included).</summary>
    public double[] ClassShares { get; init; } = Array.Empty<double>();
    /// <summary>The share of labelled pixels that are not class 0.</summary>
    public double ForegroundShare { get; init; }
    /// <summary>Instance and panoptic data: the objects; null for semantic data.</summary>
    public ObjectFingerprint? Objects { get; init; }
    /// <summary>Bytes the decoded samples take (image, labels, object numbers): what a full cache holds.</summary>
    public long DecodedBytes { get; init; }

    /// <summary>Decodes every sample of <paramref name="data"/> (in parallel) and summarises it. <paramref
    /// name="progress"/> gets the count done, on the calling thread.</summary>
    public static DataFingerprint Of(SegmentationDataset data, IProgress<int>? progress = null,
        CancellationToken cancellation = default)
    {
        int n = data.Count, classes = data.Description.Classes, channels = data.Description.InChannels;
        if (n == 0) throw new DataException($"{data.Origin}: no samples to fingerprint.");
        var perImage = new (double W, double H, double Mean, double Low, double High)[n];
        var objectCounts = new double[n];
        var areas = new List<double>[n];
        var classPixels = new long[n][];
        var sums = new double[n][];
        long decoded = 0;
        int done = 0, colour = 0, wide = 0;
        var boundary = data.Description.Instances;
        var work = Task.Run(() => Parallel.For(0, n, new ParallelOptions { CancellationToken = cancellation }, i =>
        {
            var s = data.Load(i);
            var h = s.Histogram;
            var (mean, _) = IntensityLevels.MeanStd(h);
            double full = s.Image.FullScale;
            if (s.Image.Bits == 16) Interlocked.Exchange(ref wide, 1);
            perImage[i] = (s.Width, s.Height, mean / full, IntensityLevels.PercentileOf(h, IntensityLevels.DefaultLow)
                / full, IntensityLevels.PercentileOf(h, IntensityLevels.DefaultHigh) / full);
            sums[i] = ChannelSums(s.Image);
            if (!ImageChannels.AllGray(s.Image)) Interlocked.Increment(ref colour);
            var labels = s.Instances is { } ids && boundary is not null ? InstanceTargets.Make(s.Mask, ids, 1,
                s.Height, s.Width, boundary.BoundaryWidth, (byte)boundary.Things.Length) : s.Mask;
            var counts = new long[256];
            foreach (var v in labels) counts[v]++;
            classPixels[i] = counts;
            if (s.Instances is { } objects) (objectCounts[i], areas[i]) = ObjectAreas(objects);
            Interlocked.Add(ref decoded, s.Image.Samples.LongLength * s.Image.Bits / 8 + s.Mask.LongLength
                + 2L * (s.Instances?.LongLength ?? 0));
            Interlocked.Increment(ref done);
        }), cancellation);
        while (!work.Wait(250)) progress?.Report(Volatile.Read(ref done));
        work.GetAwaiter().GetResult();
        progress?.Report(n);
        var (channelMean, channelStd) = Pooled(sums, channels, wide == 1 ? ushort.MaxValue : byte.MaxValue);
        var shares = new double[classes];
        long labelled = 0;
        foreach (var c in classPixels) for (int k = 0; k < classes; k++) { shares[k] += c[k]; labelled += c[k]; }
        for (int k = 0; k < classes; k++) shares[k] /= Math.Max(1, labelled);
        return new DataFingerprint
        {
            Images = n, Channels = channels, ColourImages = colour, Bits = wide == 1 ? 16 : 8,
                Width = Spread.Of(perImage.Select(p => p.W)),
            Height = Spread.Of(perImage.Select(p => p.H)), ImageMean = Spread.Of(perImage.Select(p => p.Mean)),
            ImageLow = Spread.Of(perImage.Select(p => p.Low)), ImageHigh = Spread.Of(perImage.Select(p => p.High)),
            IntensityVariation = Math.Max(Variation(perImage.Select(p => p.High - p.Low)),
                Variation(perImage.Select(p => p.Mean))),
            ChannelMean = channelMean, ChannelStd = channelStd, ClassShares = shares,
            ForegroundShare = classes > 1 ? 1 - shares[0] : 0,
            Objects = data.Description.Task == SegmentationTaskKind.Semantic ? null
                : ObjectsOf(objectCounts, areas.Where(a => a is not null).SelectMany(a => a).ToArray()),
            DecodedBytes = decoded,
        };
    }

    /// <summary>Sum and sum of squares of each channel (a share of full scale), and the pixel count last.</summary>
    private static double[] ChannelSums(ImageBuffer image)
    {
        int c = image.Channels;
        var sums = new double[2 * c + 1];
        if (image.Pixels16 is { } wide) Add(wide, ushort.MaxValue);
        else Add(image.Pixels, byte.MaxValue);
        sums[2 * c] = image.Samples.Length / c;
        return sums;

        void Add<T>(T[] px, double full) where T : unmanaged, System.Numerics.INumber<T>
        {
            for (int i = 0; i < px.Length; i++)
            {
                double v = double.CreateTruncating(px[i]) / full;
                sums[i % c] += v; sums[c + i % c] += v * v;
            }
        }
    }

    /// <summary>Each channel's mean and std over every pixel of the set; a std at least one level of
    /// <paramref name="full"/>.</summary>
    private static (float[] Mean, float[] Std) Pooled(double[][] sums, int channels, double full)
    {
        var mean = new float[channels];
        var std = new float[channels];
        double count = sums.Sum(s => s[2 * channels]);
        for (int k = 0; k < channels; k++)
        {
            double m = sums.Sum(s => s[k]) / count, squares = sums.Sum(s => s[channels + k]) / count;
            mean[k] = (float)m;
            std[k] = (float)Math.Max(Math.Sqrt(Math.Max(0, squares - m * m)), 1.0 / full);
        }
        return (mean, std);
    }

    /// <summary>Standard deviation over mean of positive quantities (0 for fewer than two).</summary>
    private static double Variation(IEnumerable<double> values)
    {
        var v = values.ToArray();
        if (v.Length < 2) return 0;
        double mean = v.Average();
        return mean <= 0 ? 0 : Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Length - 1)) / mean;
    }

    /// <summary>The count and the areas of the objects of one image.</summary>
    private static (double Count, List<double> Areas) ObjectAreas(ushort[] objects)
    {
        var area = new Dictionary<int, int>();
        foreach (var id in objects)
            if (id != 0) area[id] = area.GetValueOrDefault(id) + 1;
        return (area.Count, area.Values.Select(a => (double)a).ToList());
    }

    private static ObjectFingerprint ObjectsOf(double[] counts, double[] areas)
    {
        Array.Sort(areas);
        double small = areas.Length == 0 ? 0 : areas[(int)Math.Floor(0.02 * (areas.Length - 1))];
        var area = Spread.Of(areas);
        return new ObjectFingerprint((long)counts.Sum(), Spread.Of(counts), area, small,
            2 * Math.Sqrt(area.Median / Math.PI));
    }

    /// <summary>What <c>segment plan</c> prints, a line each.</summary>
    public IEnumerable<string> Describe()
    {
        var inv = CultureInfo.InvariantCulture;
        yield return $"images: {Images} ({ColourImages} colour), width {Width}, height {Height}, {Channels} "
            + $"channel(s), "
            + $"{Bits}-bit samples";
        yield return string.Create(inv, $"intensity per image (0-1): mean {ImageMean}, 1st percentile {ImageLow}, "
            + $"99.8th {ImageHigh}; variation between images {IntensityVariation:F2}");
        yield return string.Create(inv,
            $"over the set: mean [{string.Join(", ", ChannelMean.Select(m => m.ToString("F3",
            inv)))}], std [{string.Join(", ", ChannelStd.Select(s => s.ToString("F3", inv)))}]");
        yield return string.Create(inv, $"class shares: {string.Join(", ", ClassShares.Select(s => s.ToString("P1",
            inv)))}; foreground {ForegroundShare:P1}");
        if (Objects is { } o)
            yield return string.Create(inv, $"objects: {o.Total:N0}, per image {o.PerImage}, area {o.Area} px "
                + $"(2nd percentile {o.SmallArea:G4}), median diameter {o.Diameter:F1} px");
        yield return string.Create(inv, $"decoded size: {DecodedBytes / (double)(1 << 20):F0} MiB");
    }

    /// <summary>As JSON, for plan.json.</summary>
    public JsonObject ToJson() => (JsonObject)System.Text.Json.JsonSerializer.SerializeToNode(this,
        new System.Text.Json.JsonSerializerOptions { NumberHandling =
            System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals })!;
}
