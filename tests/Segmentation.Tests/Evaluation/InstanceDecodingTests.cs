using System.Text.Json.Nodes;
using Segmentation.Data;
using Segmentation.Evaluation;

namespace Segmentation.Tests.Evaluation;

/// <summary>The seeded watershed that turns background / interior / boundary scores into objects.</summary>
public class InstanceDecodingTests
{
    private static readonly InstanceSettings Settings = new() { BoundaryWidth = 2, MinSize = 8, MinSeedSize = 4 };

    /// <summary>Logits that say exactly <paramref name="target"/> (0 background, 1 interior, 2 boundary), with a
    /// margin of 4 and some texture, as a trained model's would.</summary>
    private static float[] LogitsFor(byte[] target, int seed = 1)
    {
        var rng = new Random(seed);
        int n = target.Length;
        var logits = new float[3 * n];
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++)
                logits[c * n + i] = (c == target[i] ? 4f : 0f) + (float)(rng.NextDouble() * 0.5);
        return logits;
    }

    /// <summary>The training target of <paramref name="ids"/>: what a perfect model predicts.</summary>
    private static byte[] Target(ushort[] ids, int h, int w, int boundary = 2) =>
        InstanceTargets.Make(Array.ConvertAll(ids, v => v == 0 ? (byte)0 : (byte)1), ids, 1, h, w, boundary, 2);

    private static ushort[] Discs(int h, int w, params (double X, double Y, double R)[] discs)
    {
        var ids = new ushort[h * w];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int k = 0; k < discs.Length; k++)
                {
                    var (cx, cy, r) = discs[k];
                    if ((x - cx) * (x - cx) + (y - cy) * (y - cy) > r * r) continue;
                    // where discs overlap, the nearer centre owns the pixel
                    if (ids[y * w + x] is var o && o != 0 && Dist(x, y, discs[o - 1]) <= Dist(x, y, discs[k])) continue;
                    ids[y * w + x] = (ushort)(k + 1);
                }
        return ids;
    }

    private static double Dist(int x, int y, (double X, double Y, double R) d) => Math.Sqrt((x - d.X) * (x - d.X)
        + (y - d.Y) * (y - d.Y));

    /// <summary>A model that is unsure at the neck between two touching objects (interior ahead of the boundary there,
    /// but only just): the argmax makes one seed of both, a seed threshold (StarDist's probability threshold) two; the
    /// seeds then flood the same foreground. ONNX Runtime's decoding reads the same setting (OnnxPredictorTests).</summary>
    [Fact]
    public void A_seed_threshold_splits_objects_that_the_argmax_joins_at_an_unsure_neck()
    {
        const int h = 40, w = 64;
        var ids = Discs(h, w, (20, 20, 11), (42, 20, 11)); // 22 apart: touching at the neck x = 31
        var logits = LogitsFor(Target(ids, h, w, boundary: 1));
        int n = h * w;
        // at the neck: interior 2.0 against boundary 1.6 (P(interior) about 0.55): interior by the argmax
        for (int y = 0; y < h; y++)
            for (int x = 29; x <= 33; x++)
            {
                int i = y * w + x;
                if (ids[i] == 0) continue;
                logits[i] = -2f; logits[n + i] = 2.0f; logits[2 * n + i] = 1.6f;
            }
        Assert.Equal(1, InstanceDecoding.Decode(logits, h, w, Settings).Count);
        var split = InstanceDecoding.Decode(logits, h, w, Settings with { SeedThreshold = 0.7 });
        Assert.Equal(2, split.Count);
        Assert.Equal(ids.Count(v => v != 0), split.Objects.Count(v => v != 0)); // the same foreground, shared out
        // the setting travels with the model's description
        var back = InstanceSettings.FromJson(JsonNode.Parse((Settings with { SeedThreshold = 0.7 }).ToJson()
            .ToJsonString())!.AsObject());
        Assert.Equal(0.7, back.SeedThreshold);
        Assert.Null(InstanceSettings.FromJson(Settings.ToJson()).SeedThreshold);
        Assert.Throws<OptionsException>(() => (Settings with { SeedThreshold = 1.0 }).ValidateSizes());
    }

    [Fact]
    public void Two_touching_discs_come_apart()
    {
        const int h = 48, w = 64;
        var ids = Discs(h, w, (22, 24, 12), (43, 24, 12)); // centres 21 apart, radii 12: they overlap by 3 px
        var foreground = ids.Count(v => v != 0);
        var decoded = InstanceDecoding.Decode(LogitsFor(Target(ids, h, w)), h, w, Settings);
        Assert.Equal(2, decoded.Count);
        // every foreground pixel is given to an object, and the objects are the discs
        var scorer = InstanceScorer.ForObjects();
        scorer.Add(Array.ConvertAll(ids, v => (int)v), null, decoded.Objects, null);
        var m = scorer.Compute();
        Assert.Equal(1.0, m.ApPerThreshold[8]); // IoU >= 0.9 for both
        Assert.Equal(foreground, decoded.Objects.Count(v => v != 0));
        // a plain connected-components labelling of the foreground would have merged them
        Assert.Equal(1, Components(Array.ConvertAll(ids, v => v != 0), h, w));
    }

    [Fact]
    public void A_thin_object_stays_whole_with_or_without_an_interior()
    {
        const int h = 32, w = 64;
        foreach (int thickness in new[] { 3, 7 }) // 3 px: all boundary, no seed; 7 px: one thin interior line
        {
            var ids = new ushort[h * w];
            for (int y = 10; y < 10 + thickness; y++) for (int x = 5; x < 60; x++) ids[y * w + x] = 1;
            var target = Target(ids, h, w);
            Assert.Equal(thickness == 3 ? 0 : 55 - 4, target.Count(v => v == 1) / (thickness == 3 ? 1 : 3));
            var decoded = InstanceDecoding.Decode(LogitsFor(target), h, w, Settings);
            Assert.Equal(1, decoded.Count);
            Assert.Equal(55 * thickness, decoded.Objects.Count(v => v == 1));
        }
    }

    [Fact]
    public void Objects_under_the_minimum_size_are_dropped_and_the_rest_numbered_in_raster_order()
    {
        const int h = 40, w = 40;
        var ids = Discs(h, w, (28, 28, 8), (8, 8, 7), (35, 5, 1.2)); // the third is 5 pixels
        var decoded = InstanceDecoding.Decode(LogitsFor(Target(ids, h, w, 1)), h, w, Settings);
        Assert.Equal(2, decoded.Count);
        Assert.Equal(1, decoded.Objects[8 * w + 8]); // the disc at the top left comes first
        Assert.Equal(2, decoded.Objects[28 * w + 28]);
        Assert.Equal(0, decoded.Objects[5 * w + 35]);
        Assert.Equal(new[] { 1, 1 }, decoded.Classes);
    }

    [Fact]
    public void Seeds_flood_lowest_elevation_first()
    {
        // two seeds in a row of boundary pixels with a ridge (low P(interior)) at x = 20: the objects meet at the
        // ridge, not halfway between the seeds (x = 15) as a plain breadth-first growth would have them
        const int h = 1, w = 30;
        var logits = new float[3 * w];
        for (int x = 0; x < w; x++)
        {
            bool seed = x < 3 || x >= 27;
            double interior = seed ? 1 : x == 20 ? 0.05 : 0.45;
            logits[0 * w + x] = -10;
            logits[1 * w + x] = (float)Math.Log(interior + 1e-6) + (seed ? 10 : 0);
            logits[2 * w + x] = (float)Math.Log(1 - interior + 1e-6);
        }
        var decoded = InstanceDecoding.Decode(logits, h, w, Settings with { MinSeedSize = 1, MinSize = 1 });
        Assert.True(decoded.Count == 2, string.Join(",", decoded.Objects) + " / " + string.Join(",", decoded.BestClass));
        Assert.All(decoded.Objects[..20], v => Assert.Equal(1, v));
        Assert.True(decoded.Objects[20..].All(v => v == 2), string.Join(",", decoded.Objects));
    }

    /// <summary>Two squares side by side with no boundary drawn between them (a model that misses the contact): by the
    /// classes alone one object; with the distance target's plane (logits of the true normalised distances) two, each
    /// seeded at its centre and flooded out to the contact, every foreground pixel given to one of them. The ONNX
    /// predictor runs the same decoding (InstanceCliTests).</summary>
    [Fact]
    public void The_distance_plane_separates_objects_the_classes_join()
    {
        const int h = 20, w = 36;
        var ids = new ushort[h * w];
        for (int y = 2; y < 18; y++) for (int x = 2; x < 34; x++) ids[y * w + x] = (ushort)(x < 18 ? 1 : 2);
        var classes = LogitsFor(Array.ConvertAll(ids, v => v == 0 ? (byte)0 : (byte)1)); // interior everywhere
        var distance = DistanceTargets.Make(ids, 1, h, w);
        var planes = classes.Concat(distance.Select(d => (float)Math.Log((d + 1e-4) / (1 - d + 1e-4)))).ToArray();
        Assert.Equal(1, InstanceDecoding.Decode(classes, h, w, Settings).Count);
        var decoded = InstanceDecoding.Decode(planes, h, w, Settings with { Target = InstanceTarget.Distance });
        Assert.Equal(2, decoded.Count);
        var scorer = InstanceScorer.ForObjects();
        scorer.Add(Array.ConvertAll(ids, v => (int)v), null, decoded.Objects, null);
        Assert.Equal(1.0, scorer.Compute().ApPerThreshold[8]); // IoU >= 0.9 for both
        Assert.Equal(ids.Count(v => v != 0), decoded.Objects.Count(v => v != 0));
        // the planes must be there: the classes alone are refused for a distance model
        Assert.Throws<ArgumentException>(() => InstanceDecoding.Decode(classes, h, w,
            Settings with { Target = InstanceTarget.Distance }));
    }

    private static int Components(bool[] mask, int h, int w)
    {
        var seen = new bool[mask.Length];
        int count = 0;
        for (int s = 0; s < mask.Length; s++)
        {
            if (!mask[s] || seen[s]) continue;
            count++;
            var stack = new Stack<int>(new[] { s });
            seen[s] = true;
            while (stack.Count > 0)
            {
                int p = stack.Pop(), x = p % w, y = p / w;
                foreach (var q in new[] { x > 0 ? p - 1 : -1, x < w - 1 ? p + 1 : -1, y > 0 ? p - w : -1,
                    y < h - 1 ? p + w : -1 })
                    if (q >= 0 && mask[q] && !seen[q]) { seen[q] = true; stack.Push(q); }
            }
        }
        return count;
    }
}
