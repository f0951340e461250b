namespace Segmentation.Evaluation;

/// <summary>
/// Accumulates <see cref="InstanceMetrics"/> image by image: the counts of every image are summed, and the ratios are
/// taken once at the end (<see cref="Compute"/>). Not thread-safe.
/// </summary>
public sealed class InstanceScorer
{
    private readonly string[] names;
    private readonly bool[] isThing;
    private readonly long[] truePositives = new long[InstanceMetrics.Thresholds.Count];
    private readonly long[] tp, fp, fn;
    private readonly double[] iouSum;
    private long instancesTrue, instancesPredicted;
    private int images;

    /// <summary>A scorer for segments of the classes <paramref name="classNames"/>; <paramref name="thing"/> says
    /// which are counted objects (the others are stuff: one segment per image).</summary>
    public InstanceScorer(string[] classNames, bool[] thing)
    {
        if (classNames.Length != thing.Length || classNames.Length == 0)
            throw new ArgumentException($"{classNames.Length} class names and {thing.Length} thing flags.");
        names = classNames; isThing = thing;
        tp = new long[names.Length]; fp = new long[names.Length]; fn = new long[names.Length];
        iouSum = new double[names.Length];
    }

    /// <summary>A scorer of plain instance data: one thing class, "object".</summary>
    public static InstanceScorer ForObjects() => new(new[] { "object" }, new[] { true });

    /// <summary>Adds one image.</summary>
    /// <param name="truth">A true segment per pixel (0: none), row by row.</param>
    /// <param name="truthClasses">The class of true segment i at [i - 1] (null: class 0 for all).</param>
    /// <param name="predicted">A predicted segment per pixel (0: none), the same size.</param>
    /// <param name="predictedClasses">The class of predicted segment i at [i - 1] (null: class 0 for all).</param>
    /// <param name="isVoid">Pixels that belong to no true segment and are scored nowhere (null: none).</param>
    public void Add(ReadOnlySpan<int> truth, IReadOnlyList<int>? truthClasses, ReadOnlySpan<int> predicted,
        IReadOnlyList<int>? predictedClasses, ReadOnlySpan<bool> isVoid = default)
    {
        if (truth.Length != predicted.Length || (!isVoid.IsEmpty && isVoid.Length != truth.Length))
            throw new ArgumentException($"Truth has {truth.Length} pixels, the prediction {predicted.Length}"
                + (isVoid.IsEmpty ? "." : $", the void mask {isVoid.Length}."));
        var o = Overlaps.Count(truth, predicted, isVoid);
        int ClassOf(IReadOnlyList<int>? classes, int id, string side)
        {
            int c = classes is null ? 0 : id - 1 < classes.Count ? classes[id - 1]
                : throw new ArgumentException($"{side} segment {id} has no class ({classes.Count} given).");
            return (uint)c < (uint)names.Length ? c : throw new ArgumentException($"{side} segment {id} has class {c}; "
                + $"there are {names.Length} ({string.Join(", ", names)}).");
        }
        var truthClass = Enumerable.Range(0, o.TruthArea.Length).Select(i => i == 0 || o.TruthArea[i] == 0 ? -1
            : ClassOf(truthClasses, i, "True")).ToArray();
        var predClass = Enumerable.Range(0, o.PredictedArea.Length).Select(i => i == 0 || o.PredictedFullArea[i] == 0
            ? -1 : ClassOf(predictedClasses, i, "Predicted")).ToArray();
        images++;
        Detection(o, truthClass, predClass);
        Panoptic(o, truthClass, predClass);
    }

    /// <summary>DSB2018 / StarDist counts at each threshold, class-agnostic over thing segments.</summary>
    private void Detection(Overlaps o, int[] truthClass, int[] predClass)
    {
        var truthIds = Enumerable.Range(1, truthClass.Length - 1).Where(i => truthClass[i] >= 0
            && isThing[truthClass[i]]).ToArray();
        var predIds = Enumerable.Range(1, predClass.Length - 1).Where(i => predClass[i] >= 0 && isThing[predClass[i]])
            .ToHashSet();
        instancesTrue += truthIds.Length;
        instancesPredicted += predIds.Count;
        var pairs = o.Pairs.Where(p => truthClass[p.Truth] >= 0 && isThing[truthClass[p.Truth]]
            && predIds.Contains(p.Predicted) && p.IoU >= InstanceMetrics.Thresholds[0]).ToList();
        for (int k = 0; k < truePositives.Length; k++)
        {
            double threshold = InstanceMetrics.Thresholds[k];
            truePositives[k] += Matching.MaximumCardinality(pairs.Where(p => p.IoU >= threshold - 1e-12)
                .Select(p => (p.Truth, p.Predicted)));
        }
    }

    /// <summary>panopticapi's pq_compute for one image.</summary>
    private void Panoptic(Overlaps o, int[] truthClass, int[] predClass)
    {
        var truthMatched = new HashSet<int>();
        var predMatched = new HashSet<int>();
        foreach (var p in o.Pairs)
        {
            int c = truthClass[p.Truth];
            if (c < 0 || predClass[p.Predicted] != c || !(p.IoU > 0.5)) continue;
            tp[c]++; iouSum[c] += p.IoU;
            truthMatched.Add(p.Truth); predMatched.Add(p.Predicted);
        }
        for (int t = 1; t < truthClass.Length; t++)
            if (truthClass[t] >= 0 && !truthMatched.Contains(t)) fn[truthClass[t]]++;
        for (int q = 1; q < predClass.Length; q++)
        {
            if (predClass[q] < 0 || predMatched.Contains(q)) continue;
            // a prediction more than half on void pixels is ignored
            if ((double)o.PredictedVoid[q] / o.PredictedFullArea[q] > 0.5) continue;
            fp[predClass[q]]++;
        }
    }

    /// <summary>Sums the counts of every process of a distributed run (each scored its shard); every rank calls
    /// it.</summary>
    internal void AllReduce(Distributed.ProcessGroup group)
    {
        if (group.WorldSize == 1) return;
        var all = truePositives.Select(v => (double)v).Concat(tp.Select(v => (double)v)).Concat(fp.Select(v =>
            (double)v)).Concat(fn.Select(v => (double)v)).Concat(iouSum)
            .Concat(new double[] { instancesTrue, instancesPredicted, images }).ToArray();
        group.AllReduce(all, "the validation instance counts");
        int k = 0;
        for (int i = 0; i < truePositives.Length; i++) truePositives[i] = (long)all[k++];
        foreach (var counts in new[] { tp, fp, fn }) for (int i = 0; i < counts.Length; i++) counts[i] = (long)all[k++];
        for (int i = 0; i < iouSum.Length; i++) iouSum[i] = all[k++];
        (instancesTrue, instancesPredicted, images) = ((long)all[k], (long)all[k + 1], (int)all[k + 2]);
    }

    /// <summary>The metrics of every image added so far.</summary>
    public InstanceMetrics Compute() => new()
    {
        Images = images, InstancesTrue = instancesTrue, InstancesPredicted = instancesPredicted,
        TruePositives = (long[])truePositives.Clone(),
        PerClass = Enumerable.Range(0, names.Length).Where(c => tp[c] + fp[c] + fn[c] > 0)
            .Select(c => new ClassQuality(names[c], isThing[c], tp[c], fp[c], fn[c], iouSum[c])).ToArray(),
    };
}

/// <summary>One image's segment areas and overlaps, void pixels apart.</summary>
internal sealed class Overlaps
{
    public int[] TruthArea = Array.Empty<int>();
    /// <summary>Predicted area on non-void pixels.</summary>
    public int[] PredictedArea = Array.Empty<int>();
    public int[] PredictedFullArea = Array.Empty<int>();
    public int[] PredictedVoid = Array.Empty<int>();
    public List<(int Truth, int Predicted, double IoU)> Pairs = new();

    public static Overlaps Count(ReadOnlySpan<int> truth, ReadOnlySpan<int> predicted, ReadOnlySpan<bool> isVoid)
    {
        int maxTruth = 0, maxPred = 0;
        for (int i = 0; i < truth.Length; i++)
        {
            if (truth[i] < 0 || predicted[i] < 0) throw new ArgumentException($"Segment ids must be 0 or more; pixel "
                + $"{i} has {Math.Min(truth[i], predicted[i])}.");
            maxTruth = Math.Max(maxTruth, truth[i]); maxPred = Math.Max(maxPred, predicted[i]);
        }
        var o = new Overlaps
        {
            TruthArea = new int[maxTruth + 1], PredictedArea = new int[maxPred + 1],
            PredictedFullArea = new int[maxPred + 1], PredictedVoid = new int[maxPred + 1],
        };
        var intersections = new Dictionary<long, int>();
        for (int i = 0; i < truth.Length; i++)
        {
            int t = truth[i], p = predicted[i];
            o.PredictedFullArea[p]++;
            if (!isVoid.IsEmpty && isVoid[i]) { o.PredictedVoid[p]++; continue; }
            o.TruthArea[t]++; o.PredictedArea[p]++;
            if (t > 0 && p > 0)
            {
                long key = (long)t << 32 | (uint)p;
                intersections[key] = intersections.GetValueOrDefault(key) + 1;
            }
        }
        foreach (var (key, inter) in intersections)
        {
            int t = (int)(key >> 32), p = (int)(key & 0xffffffff);
            o.Pairs.Add((t, p, (double)inter / (o.TruthArea[t] + o.PredictedArea[p] - inter)));
        }
        o.Pairs.Sort((a, b) => a.Truth != b.Truth ? a.Truth.CompareTo(b.Truth) : a.Predicted.CompareTo(b.Predicted));
        return o;
    }
}

/// <summary>Bipartite matching.</summary>
internal static class Matching
{
    /// <summary>
    /// The size of a largest one-to-one matching of the <paramref name="edges"/> (Kuhn's augmenting paths). This is
    /// the number of matches StarDist's <c>matching</c> finds: its linear assignment costs -1 per pair at or above the
    /// threshold minus IoU / (2 n), and the IoU terms of all pairs together are worth less than one pair, so the
    /// assignment first makes as many pairs at the threshold as there can be.
    /// </summary>
    public static int MaximumCardinality(IEnumerable<(int Left, int Right)> edges)
    {
        var adjacency = edges.GroupBy(e => e.Left).ToDictionary(g => g.Key, g => g.Select(e => e.Right).ToArray());
        var owner = new Dictionary<int, int>();
        int matched = 0;
        foreach (var left in adjacency.Keys)
            if (Augment(left, adjacency, owner, new HashSet<int>())) matched++;
        return matched;
    }

    private static bool Augment(int left, Dictionary<int, int[]> adjacency, Dictionary<int, int> owner,
        HashSet<int> seen)
    {
        foreach (var right in adjacency[left])
        {
            if (!seen.Add(right)) continue;
            if (!owner.TryGetValue(right, out var other) || Augment(other, adjacency, owner, seen))
            {
                owner[right] = left;
                return true;
            }
        }
        return false;
    }
}
