using Segmentation.Data;

namespace Segmentation.Tests.Data;

/// <summary>The distance target of instance data (StarDist's object probability): exact, per object, the image's
/// edge no edge of an object.</summary>
public class DistanceTargetTests
{
    [Fact]
    public void A_square_rises_from_a_third_at_its_edge_to_one_at_its_centre()
    {
        const int n = 7;
        var ids = new ushort[n * n];
        for (int y = 1; y < 6; y++) for (int x = 1; x < 6; x++) ids[y * n + x] = 1;
        var t = DistanceTargets.Make(ids, 1, n, n);
        Assert.Equal(0f, t[0]);
        Assert.Equal(1f / 3, t[1 * n + 1], 6); // the corner: 1 from the background
        Assert.Equal(1f / 3, t[1 * n + 3], 6);
        Assert.Equal(2f / 3, t[2 * n + 3], 6);
        Assert.Equal(1f, t[3 * n + 3], 6);
    }

    [Fact]
    public void The_image_edge_is_no_edge_of_an_object_and_a_whole_image_object_is_all_centre()
    {
        // one row: an object cut by the left edge rises towards it
        var row = new ushort[] { 1, 1, 1, 0 };
        Assert.Equal(new[] { 1f, 2f / 3, 1f / 3, 0f }, DistanceTargets.Make(row, 1, 1, 4).Select(v =>
            MathF.Round(v, 6)).ToArray(), new FloatTolerance());
        Assert.All(DistanceTargets.Make(Enumerable.Repeat((ushort)5, 12).ToArray(), 1, 3, 4), v => Assert.Equal(1f, v));
    }

    /// <summary>Against the definition on random touching objects, two images in one batch: each object pixel's
    /// distance to the nearest pixel of the image outside its object, over the largest in its object.</summary>
    [Fact]
    public void Touching_objects_match_a_brute_force_transform()
    {
        const int h = 23, w = 31, count = 2;
        var rng = new Random(7);
        var ids = new ushort[count * h * w];
        for (int b = 0; b < count; b++)
            for (int k = 1; k <= 9; k++) // rectangles written over each other: touching, cut and nested objects
            {
                int x0 = rng.Next(w), y0 = rng.Next(h), x1 = Math.Min(w, x0 + 2 + rng.Next(14)),
                    y1 = Math.Min(h, y0 + 2 + rng.Next(12));
                for (int y = y0; y < y1; y++) for (int x = x0; x < x1; x++) ids[b * h * w + y * w + x] = (ushort)k;
            }
        var t = DistanceTargets.Make(ids, count, h, w);
        for (int b = 0; b < count; b++)
        {
            var img = ids.AsSpan(b * h * w, h * w).ToArray();
            var d = new double[h * w];
            for (int p = 0; p < d.Length; p++)
            {
                if (img[p] == 0) continue;
                double best = double.PositiveInfinity;
                for (int q = 0; q < d.Length; q++)
                    if (img[q] != img[p])
                        best = Math.Min(best, Math.Sqrt(Math.Pow(p % w - q % w, 2) + Math.Pow(p / w - q / w, 2)));
                d[p] = best;
            }
            foreach (var id in img.Where(v => v != 0).Distinct())
            {
                var pixels = Enumerable.Range(0, d.Length).Where(p => img[p] == id).ToArray();
                double max = pixels.Max(p => d[p]);
                foreach (int p in pixels)
                {
                    double expected = double.IsPositiveInfinity(max) ? 1 : d[p] / max;
                    Assert.True(Math.Abs(expected - t[b * h * w + p]) < 1e-6,
                        $"image {b}, object {id}, pixel ({p % w}, {p / w}): {t[b * h * w + p]}, expected {expected}");
                }
            }
            Assert.All(Enumerable.Range(0, d.Length).Where(p => img[p] == 0), p => Assert.Equal(0f, t[b * h * w + p]));
        }
    }

    [Fact]
    public void The_target_is_recorded_with_the_settings_and_older_records_read_as_the_boundary()
    {
        var distance = new InstanceSettings { Target = InstanceTarget.Distance };
        Assert.Equal(InstanceTarget.Distance, InstanceSettings.FromJson(distance.ToJson()).Target);
        Assert.False(new InstanceSettings().ToJson().ContainsKey("target")); // boundary records as they always were
        Assert.Equal(InstanceTarget.Boundary, InstanceSettings.FromJson(new InstanceSettings().ToJson()).Target);
        var wrong = distance.ToJson();
        wrong["target"] = "flows";
        var e = Assert.Throws<DataException>(() => InstanceSettings.FromJson(wrong));
        Assert.Contains("'flows'", e.Message);
        Assert.Contains("boundary, distance", e.Message);
        Assert.Equal(4, distance.Describe(1).OutputPlanes());
        Assert.Equal(3, new InstanceSettings().Describe(1).OutputPlanes());
    }

    private sealed class FloatTolerance : IEqualityComparer<float>
    {
        public bool Equals(float a, float b) => Math.Abs(a - b) < 1e-6;
        public int GetHashCode(float v) => 0;
    }
}
