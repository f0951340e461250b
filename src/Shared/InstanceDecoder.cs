namespace Segmentation.Shared;

/// <summary>
/// Turns one image's class scores from an interior/boundary model into objects (the Data Science Bowl 2018 winners'
/// method): the classes are the data's semantic classes plus a last one, the boundary of the thing objects.
/// <list type="number">
/// <item>Seeds: the 4-connected regions of pixels whose best class is one thing class (an object's interior), of
/// at least <c>minSeedSize</c> pixels; with a seed threshold, of pixels whose probability of the thing classes is at
/// least that, by their best thing class.</item>
/// <item>Marker-controlled watershed: the seeds flood the foreground (pixels whose best class is a thing class or the
/// boundary) in the order of the elevation 1 - P(thing), quantised to 256 levels, ties first come first served
/// (a bucket queue: linear time).</item>
/// <item>Foreground no seed reaches (a thin object seen as boundary only) becomes objects of its own, by
/// 4-connected region.</item>
/// <item>Objects under <c>minSize</c> pixels are dropped; the rest are numbered 1..N in raster order of their first
/// pixel, each with the thing class most of its pixels rank first among the thing classes.</item>
/// </list>
/// With the distance target the logits carry one more plane after the classes, the logit of each pixel's normalised
/// distance to its object's edge (StarDist's object probability): the seeds are then the foreground pixels where it is
/// at least the seed threshold (0.5 when none is given), and the flood goes in the order 1 - distance, from each
/// object's centre out, so that touching objects meet where their distances fall. The rest is the same.
/// Both predictors (TorchSharp and ONNX Runtime) run this same code on their logits.
/// </summary>
internal static class InstanceDecoder
{
    /// <summary>What <see cref="Decode"/> found.</summary>
    /// <param name="Labels">An object number per pixel, 0 for none, row by row.</param>
    /// <param name="Count">Objects, numbered 1..Count.</param>
    /// <param name="Classes">The semantic class of object i at [i - 1].</param>
    /// <param name="BestClass">Each pixel's best class (argmax of the logits).</param>
    internal sealed record Result(int[] Labels, int Count, int[] Classes, byte[] BestClass);

    /// <summary>Decodes logits laid out classes x height x width.</summary>
    /// <param name="logits">One image's logits, class planes one after another.</param>
    /// <param name="classes">Planes; the last is the boundary.</param>
    /// <param name="height">Rows.</param>
    /// <param name="width">Columns.</param>
    /// <param name="thing">For each class but the boundary: whether it is a thing class (counted objects).</param>
    /// <param name="minSize">Smallest object kept, in pixels.</param>
    /// <param name="minSeedSize">Smallest interior region that seeds an object, in pixels.</param>
    /// <param name="seedThreshold">Seeds where P(thing) is at least this; null: where the best class is a
    /// thing. With <paramref name="distance"/>: where the distance is at least this (null: 0.5).</param>
    /// <param name="distance">Whether a distance plane follows the class planes.</param>
    public static Result Decode(ReadOnlySpan<float> logits, int classes, int height, int width,
        ReadOnlySpan<bool> thing, int minSize, int minSeedSize, double? seedThreshold = null, bool distance = false)
    {
        int n = height * width, planes = classes + (distance ? 1 : 0);
        if (classes < 2 || thing.Length != classes - 1 || logits.Length != (long)planes * n)
            throw new ArgumentException($"Instance decoding needs {planes} x {height} x {width} logits and a thing "
                + $"flag for each of the {classes - 1} classes before the boundary.");
        var best = new byte[n];
        var bestThing = new byte[n];
        var elevation = new byte[n];
        Score(logits, classes, n, thing, best, bestThing, elevation);
        if (distance) Elevation(logits.Slice(classes * n, n), elevation);
        int boundary = classes - 1;
        var foreground = new bool[n];
        for (int i = 0; i < n; i++) foreground[i] = best[i] == boundary || thing[best[i]];
        var labels = new int[n];
        var seedClass = new byte[n]; // the class a pixel seeds, or NotSeed
        if (distance) seedThreshold ??= DefaultDistanceSeed;
        int cutoff = seedThreshold is { } t ? (int)Math.Floor(255 * (1 - t) + 1e-9) : -1;
        for (int i = 0; i < n; i++)
            seedClass[i] = seedThreshold is null ? best[i] < thing.Length && thing[best[i]] ? best[i] : NotSeed
                : elevation[i] <= cutoff && (!distance || foreground[i]) ? bestThing[i] : NotSeed;
        int seeds = Seeds(seedClass, labels, height, width, minSeedSize);
        Flood(labels, foreground, elevation, height, width);
        int total = Unseeded(labels, foreground, height, width, seeds);
        return Number(labels, total, bestThing, minSize, best);
    }

    /// <summary>Per pixel: the best class, the best thing class, and the elevation 255 x (1 - P(thing)).</summary>
    private static void Score(ReadOnlySpan<float> logits, int classes, int n, ReadOnlySpan<bool> thing, byte[] best,
        byte[] bestThing, byte[] elevation)
    {
        int firstThing = thing.IndexOf(true);
        for (int i = 0; i < n; i++)
        {
            float max = float.NegativeInfinity, maxThing = float.NegativeInfinity;
            int arg = 0, argThing = Math.Max(0, firstThing);
            for (int c = 0; c < classes; c++)
            {
                float v = logits[c * n + i];
                if (v > max) { max = v; arg = c; }
                if (c < classes - 1 && thing[c] && v > maxThing) { maxThing = v; argThing = c; }
            }
            float sum = 0, things = 0;
            for (int c = 0; c < classes; c++)
            {
                float e = MathF.Exp(logits[c * n + i] - max);
                sum += e;
                if (c < classes - 1 && thing[c]) things += e;
            }
            best[i] = (byte)arg; bestThing[i] = (byte)argThing;
            double p = float.IsNaN(max) ? 0 : things / sum;
            elevation[i] = (byte)Math.Clamp((int)Math.Round(255 * (1 - p)), 0, 255);
        }
    }

    /// <summary>The elevation 255 x (1 - distance), the distance the sigmoid of its logit.</summary>
    private static void Elevation(ReadOnlySpan<float> distanceLogits, byte[] elevation)
    {
        for (int i = 0; i < elevation.Length; i++)
        {
            double d = float.IsNaN(distanceLogits[i]) ? 0 : 1 / (1 + Math.Exp(-distanceLogits[i]));
            elevation[i] = (byte)Math.Clamp((int)Math.Round(255 * (1 - d)), 0, 255);
        }
    }

    /// <summary>The distance target's seed threshold when none is given: the inner half of each object.</summary>
    internal const double DefaultDistanceSeed = 0.5;

    /// <summary>A pixel that seeds no object.</summary>
    private const byte NotSeed = 255;

    /// <summary>Numbers the 4-connected regions of one seed class 1..K (regions under the minimum left 0).</summary>
    private static int Seeds(byte[] seedClass, int[] labels, int height, int width, int minSeedSize)
    {
        int next = 0;
        var stack = new Stack<int>();
        var region = new List<int>();
        Span<int> near = stackalloc int[4];
        for (int start = 0; start < seedClass.Length; start++)
        {
            if (labels[start] != 0 || seedClass[start] == NotSeed) continue;
            byte cls = seedClass[start];
            int id = ++next;
            region.Clear();
            labels[start] = id; stack.Push(start);
            while (stack.Count > 0)
            {
                int p = stack.Pop();
                region.Add(p);
                int around = Neighbours(p, height, width, near);
                for (int j = 0; j < around; j++)
                {
                    int q = near[j];
                    if (labels[q] == 0 && seedClass[q] == cls) { labels[q] = id; stack.Push(q); }
                }
            }
            if (region.Count >= minSeedSize) continue;
            foreach (int p in region) labels[p] = -1; // too small to seed; flooded later like any foreground
            next--;
        }
        for (int i = 0; i < labels.Length; i++) if (labels[i] < 0) labels[i] = 0;
        return next;
    }

    /// <summary>The watershed: seeds grow into unlabelled foreground, lowest elevation first.</summary>
    private static void Flood(int[] labels, bool[] foreground, byte[] elevation, int height, int width)
    {
        Span<int> near = stackalloc int[4];
        var levels = new List<int>[256];
        for (int l = 0; l < 256; l++) levels[l] = new List<int>();
        void Push(int p, int level) => levels[Math.Max(level, elevation[p])].Add(p);
        var seeds = new List<int>();
        for (int p = 0; p < labels.Length; p++) if (labels[p] != 0) seeds.Add(p);
        foreach (int p in seeds) // the seeds' neighbours first, each at its own elevation
        {
            int around = Neighbours(p, height, width, near);
            for (int j = 0; j < around; j++)
            {
                int q = near[j];
                if (labels[q] == 0 && foreground[q]) { labels[q] = labels[p]; Push(q, 0); }
            }
        }
        for (int level = 0; level < 256; level++)
        {
            var queue = levels[level];
            for (int k = 0; k < queue.Count; k++) // grows while it is read: lower pixels join the current level
            {
                int p = queue[k];
                int around = Neighbours(p, height, width, near);
                for (int j = 0; j < around; j++)
                {
                    int q = near[j];
                    if (labels[q] == 0 && foreground[q]) { labels[q] = labels[p]; Push(q, level); }
                }
            }
            queue.Clear();
        }
    }

    /// <summary>Foreground no seed reached: each 4-connected region an object of its own.</summary>
    private static int Unseeded(int[] labels, bool[] foreground, int height, int width, int next)
    {
        var stack = new Stack<int>();
        Span<int> near = stackalloc int[4];
        for (int start = 0; start < labels.Length; start++)
        {
            if (labels[start] != 0 || !foreground[start]) continue;
            int id = ++next;
            labels[start] = id; stack.Push(start);
            while (stack.Count > 0)
            {
                int around = Neighbours(stack.Pop(), height, width, near);
                for (int j = 0; j < around; j++)
                {
                    int q = near[j];
                    if (labels[q] == 0 && foreground[q]) { labels[q] = id; stack.Push(q); }
                }
            }
        }
        return next;
    }

    /// <summary>Drops small objects, numbers the rest in raster order and gives each its majority thing
    /// class.</summary>
    private static Result Number(int[] labels, int total, byte[] bestThing, int minSize, byte[] best)
    {
        var size = new int[total + 1];
        foreach (int l in labels) size[l]++;
        var map = new int[total + 1];
        int count = 0;
        foreach (int l in labels)
            if (l > 0 && map[l] == 0) map[l] = size[l] >= minSize ? ++count : -1;
        int kinds = 1;
        foreach (byte c in bestThing) if (c >= kinds) kinds = c + 1;
        var votes = new int[count * kinds]; // per object, the pixels that rank each thing class first
        for (int i = 0; i < labels.Length; i++)
        {
            int m = labels[i] > 0 ? map[labels[i]] : 0;
            labels[i] = Math.Max(m, 0);
            if (m > 0) votes[(m - 1) * kinds + bestThing[i]]++;
        }
        var classes = new int[count];
        for (int o = 0; o < count; o++)
        {
            int most = -1;
            for (int c = 0; c < kinds; c++)
                if (votes[o * kinds + c] > most) { most = votes[o * kinds + c]; classes[o] = c; }
        }
        return new Result(labels, count, classes, best);
    }

    /// <summary>
    /// A class per pixel for a panoptic prediction: an object's pixels its class, other pixels their best class when
    /// it is a stuff class, 255 (no class) for the rest (thing or boundary pixels of no object).
    /// </summary>
    public static byte[] ClassMap(int[] objects, int[] objectClasses, byte[] best, ReadOnlySpan<bool> thing)
    {
        var classes = new byte[objects.Length];
        for (int i = 0; i < classes.Length; i++)
            classes[i] = objects[i] > 0 ? (byte)objectClasses[objects[i] - 1]
                : best[i] < thing.Length && !thing[best[i]] ? best[i] : (byte)255;
        return classes;
    }

    /// <summary>Writes the 4-neighbours of <paramref name="p"/> inside the image into <paramref name="around"/>
    /// (above, left, right, below) and returns how many there are.</summary>
    private static int Neighbours(int p, int height, int width, Span<int> around)
    {
        int x = p % width, k = 0;
        if (p >= width) around[k++] = p - width;
        if (x > 0) around[k++] = p - 1;
        if (x < width - 1) around[k++] = p + 1;
        if (p < (height - 1) * width) around[k++] = p + width;
        return k;
    }
}
