namespace Segmentation;

/// <summary>
/// Mask2Former's (and MaskFormer's) outputs decoded into instances and panoptic segments: transformers'
/// <c>post_process_instance_segmentation</c> and <c>post_process_panoptic_segmentation</c> (with
/// <c>remove_low_and_no_objects</c>, <c>compute_segments</c> and <c>check_segment_validity</c>), ported to plain arrays
/// so
/// that the TorchSharp predictor and the ONNX Runtime package (src/Shared) decode alike. The inputs are one image's
/// class logits (Q x (K + 1), the last "no object") and mask logits (Q x h x w), row-major; the masks are resized
/// (bilinear, corners not aligned) to the output size first, where transformers resizes to its processed size (384 x
/// 384) and then to the target size. One deliberate difference: transformers takes its instance top-k unsorted, so
/// which of two overlapping instances wins a pixel is left to the kernel; here the candidates are taken best first, so
/// the later, weaker one wins, every time.
/// </summary>
internal static class MaskClassificationDecoder
{
    /// <summary>One segment: its id in the map, its class, whether instances of its class were fused into it, its
    /// score.</summary>
    internal sealed record Segment(int Id, int LabelId, bool WasFused, float Score);

    /// <summary>A decoded image: the segment id of each pixel (row-major, <paramref name="Height"/> x <paramref
    /// name="Width"/>; -1 where none) and the segments.</summary>
    internal sealed record Decoded(int[] Map, int Height, int Width, IReadOnlyList<Segment> Segments);

    /// <summary>transformers' instance decoding: the Q best (query, class) pairs by class probability, each query's
    /// mask where its logit is above 0, scored by the class probability times the mask's mean probability inside it;
    /// those of at least <paramref name="threshold"/> with a pixel are instances, numbered from 0 in that order, a
    /// later
    /// one painting over an earlier. <paramref name="labels"/>: the classes that may be instances (null: all; the
    /// thing classes, where a class such as the background is a region, not an object).</summary>
    public static Decoded Instances(float[] classLogits, float[] maskLogits, int queries, int h, int w, int height,
        int width, float threshold = 0.5f, IReadOnlySet<int>? labels = null)
    {
        int classes = Check(classLogits, maskLogits, queries, h, w);
        var probabilities = Softmax(classLogits, queries, classes + 1);
        var candidates = new List<(float Score, int Query, int Label)>(queries * classes);
        for (int q = 0; q < queries; q++)
            for (int k = 0; k < classes; k++)
                if (labels?.Contains(k) ?? true) candidates.Add((probabilities[q * (classes + 1) + k], q, k));
        var best = candidates.OrderByDescending(c => c.Score).ThenBy(c => c.Query * classes + c.Label).Take(queries)
            .ToList();
        var map = Enumerable.Repeat(-1, height * width).ToArray();
        var segments = new List<Segment>();
        var resized = new float[height * width];
        foreach (var (score, query, label) in best)
        {
            Resize(maskLogits, query * h * w, h, w, resized, height, width);
            double inside = 0;
            int area = 0;
            foreach (var logit in resized)
                if (logit > 0) { inside += Sigmoid(logit); area++; }
            float total = (float)(score * (inside / (area + 1e-6)));
            if (area == 0 || total < threshold) continue;
            for (int i = 0; i < resized.Length; i++) if (resized[i] > 0) map[i] = segments.Count;
            segments.Add(new Segment(segments.Count, label, false, (float)Math.Round(total, 6)));
        }
        return new Decoded(map, height, width, segments);
    }

    /// <summary>transformers' panoptic decoding: queries whose best class is an object of probability above <paramref
    /// name="threshold"/>; each pixel to the query of the highest probability-weighted mask; a query's pixels are a
    /// segment if its share of its own mask (weighted probability at least <paramref name="maskThreshold"/>) is above
    /// <paramref name="overlap"/>; classes in <paramref name="fuse"/> are one segment each. Ids from 1; 0 where no
    /// segment is, -1 everywhere when no query passes.</summary>
    public static Decoded Panoptic(float[] classLogits, float[] maskLogits, int queries, int h, int w, int height,
        int width, float threshold = 0.5f, float maskThreshold = 0.5f, float overlap = 0.8f,
        IReadOnlySet<int>? fuse = null)
    {
        int classes = Check(classLogits, maskLogits, queries, h, w);
        var probabilities = Softmax(classLogits, queries, classes + 1);
        var kept = new List<(int Query, int Label, float Score)>();
        for (int q = 0; q < queries; q++)
        {
            int label = 0;
            for (int k = 1; k <= classes; k++)
                if (probabilities[q * (classes + 1) + k] > probabilities[q * (classes + 1) + label]) label = k;
            float score = probabilities[q * (classes + 1) + label];
            if (label != classes && score > threshold) kept.Add((q, label, score));
        }
        if (kept.Count == 0) return new Decoded(Enumerable.Repeat(-1, height * width).ToArray(), height, width,
            Array.Empty<Segment>());
        var weighted = new float[kept.Count][];
        var resized = new float[height * width];
        for (int j = 0; j < kept.Count; j++)
        {
            Resize(maskLogits, kept[j].Query * h * w, h, w, resized, height, width);
            weighted[j] = resized.Select(x => Sigmoid(x) * kept[j].Score).ToArray();
        }
        var owner = new int[height * width];
        for (int i = 0; i < owner.Length; i++)
            for (int j = 1; j < kept.Count; j++) if (weighted[j][i] > weighted[owner[i]][i]) owner[i] = j;
        var map = new int[height * width];
        var segments = new List<Segment>();
        var fused = new Dictionary<int, int>();
        int current = 0;
        for (int j = 0; j < kept.Count; j++)
        {
            int area = owner.Count(o => o == j), original = weighted[j].Count(p => p >= maskThreshold);
            if (area == 0 || original == 0 || !((double)area / original > overlap)) continue;
            bool fuseIt = fuse?.Contains(kept[j].Label) ?? false;
            int id = fused.TryGetValue(kept[j].Label, out var existing) ? existing : ++current;
            for (int i = 0; i < owner.Length; i++) if (owner[i] == j) map[i] = id;
            segments.Add(new Segment(id, kept[j].Label, fuseIt, (float)Math.Round(kept[j].Score, 6)));
            if (fuseIt) fused[kept[j].Label] = id;
        }
        return new Decoded(map, height, width, segments);
    }

    /// <summary>Objects and a class map from a decoded image: each segment of a class in <paramref name="things"/> an
    /// object, numbered from 1 in the raster order of its first pixel (0: none), with its class; each pixel's class
    /// the class of its segment, or <paramref name="fallback"/>'s where it has none (the class map's; 255 for none
    /// with no fallback).</summary>
    public static (int[] Objects, int Count, int[] Classes, byte[] ClassMap) ToObjects(Decoded decoded,
        IReadOnlySet<int> things, IReadOnlyList<int>? fallback = null)
    {
        // a fused class's queries share their segment's id (transformers lists each)
        var labelOf = decoded.Segments.GroupBy(s => s.Id).ToDictionary(g => g.Key, g => g.First().LabelId);
        var classMap = new byte[decoded.Map.Length];
        var objects = new int[decoded.Map.Length];
        var numbers = new Dictionary<int, int>();
        var classes = new List<int>();
        for (int i = 0; i < objects.Length; i++)
        {
            bool known = labelOf.TryGetValue(decoded.Map[i], out int label);
            classMap[i] = (byte)(known ? label : fallback?[i] ?? 255);
            if (!known || !things.Contains(label)) continue;
            if (!numbers.TryGetValue(decoded.Map[i], out int number))
            {
                numbers[decoded.Map[i]] = number = numbers.Count + 1;
                classes.Add(label);
            }
            objects[i] = number;
        }
        return (objects, numbers.Count, classes.ToArray(), classMap);
    }

    private static int Check(float[] classLogits, float[] maskLogits, int queries, int h, int w)
    {
        if (queries < 1 || classLogits.Length % queries != 0 || classLogits.Length / queries < 2)
            throw new ArgumentException($"Class logits of {classLogits.Length} values are not {queries} queries of at "
                + "least one class and no object.");
        if (maskLogits.Length != (long)queries * h * w)
            throw new ArgumentException($"Mask logits of {maskLogits.Length} values are not {queries} x {h} x {w}.");
        return classLogits.Length / queries - 1;
    }

    private static float Sigmoid(float x) => 1 / (1 + MathF.Exp(-x));

    private static float[] Softmax(float[] logits, int rows, int columns)
    {
        var result = new float[logits.Length];
        for (int r = 0; r < rows; r++)
        {
            float max = float.NegativeInfinity;
            for (int c = 0; c < columns; c++) max = Math.Max(max, logits[r * columns + c]);
            double sum = 0;
            for (int c = 0; c < columns; c++) sum += Math.Exp(logits[r * columns + c] - max);
            for (int c = 0; c < columns; c++) result[r * columns + c] = (float)(Math.Exp(logits[r * columns + c] - max)
                / sum);
        }
        return result;
    }

    /// <summary>Bilinear resize of one h x w plane at <paramref name="offset"/> to <paramref name="height"/> x
    /// <paramref name="width"/>, PyTorch's <c>interpolate(mode="bilinear", align_corners=False)</c>.</summary>
    internal static void Resize(float[] source, int offset, int h, int w, float[] target, int height, int width)
    {
        for (int y = 0; y < height; y++)
        {
            var (y0, y1, fy) = Source(y, h, height);
            for (int x = 0; x < width; x++)
            {
                var (x0, x1, fx) = Source(x, w, width);
                float top = source[offset + y0 * w + x0] * (1 - fx) + source[offset + y0 * w + x1] * fx;
                float bottom = source[offset + y1 * w + x0] * (1 - fx) + source[offset + y1 * w + x1] * fx;
                target[y * width + x] = top * (1 - fy) + bottom * fy;
            }
        }
    }

    /// <summary>The two source indices and the weight of the second for output index <paramref name="i"/>.</summary>
    private static (int I0, int I1, float Weight) Source(int i, int inSize, int outSize)
    {
        float scale = (float)inSize / outSize;
        float s = Math.Max((i + 0.5f) * scale - 0.5f, 0);
        int i0 = Math.Min((int)s, inSize - 1);
        int i1 = Math.Min(i0 + 1, inSize - 1);
        return (i0, i1, s - i0);
    }
}
