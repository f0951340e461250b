using Segmentation.Evaluation;

namespace Segmentation.Tests.Evaluation;

/// <summary>AP (the DSB2018 / StarDist rule) and panoptic quality (panopticapi's rule) on hand-checked fixtures, and
/// against references written here from the definitions on random images.</summary>
public class InstanceMetricsTests
{
    private const int W = 40, H = 20;

    /// <summary>A W x H image of object numbers: each rectangle (x, y, width, height) gets the next number, later ones
    /// drawn over earlier ones.</summary>
    private static int[] Objects(params (int X, int Y, int Width, int Height)[] boxes)
    {
        var ids = new int[W * H];
        for (int k = 0; k < boxes.Length; k++)
            for (int y = boxes[k].Y; y < boxes[k].Y + boxes[k].Height; y++)
                for (int x = boxes[k].X; x < boxes[k].X + boxes[k].Width; x++) ids[y * W + x] = k + 1;
        return ids;
    }

    private static InstanceMetrics Score(params (int[] Truth, int[] Predicted)[] images)
    {
        var scorer = InstanceScorer.ForObjects();
        foreach (var (t, p) in images) scorer.Add(t, null, p, null);
        return scorer.Compute();
    }

    [Fact]
    public void A_perfect_prediction_scores_one_everywhere()
    {
        var truth = Objects((2, 2, 10, 10), (20, 5, 6, 8));
        var m = Score((truth, truth));
        Assert.All(m.ApPerThreshold, ap => Assert.Equal(1.0, ap));
        Assert.Equal((1.0, 1.0, 1.0, 1.0), (m.Ap, m.Pq, m.Sq, m.Rq));
        Assert.Equal((2L, 2L), (m.InstancesTrue, m.InstancesPredicted));
    }

    [Fact]
    public void A_shifted_object_matches_up_to_its_IoU_of_two_thirds()
    {
        // 10x10 against the same shifted 2 px: intersection 80, union 120, IoU 0.667
        var m = Score((Objects((5, 5, 10, 10)), Objects((7, 5, 10, 10))));
        Assert.Equal(new[] { 1.0, 1, 1, 1, 0, 0, 0, 0, 0, 0 }, m.ApPerThreshold);
        Assert.Equal(0.4, m.Ap, 12);
        Assert.Equal(1.0, m.Ap50);
        Assert.Equal(0.0, m.Ap75);
        Assert.Equal(2.0 / 3, m.Pq, 12); // one match at IoU 2/3: SQ 2/3, RQ 1
        Assert.Equal(2.0 / 3, m.Sq, 12);
        Assert.Equal(1.0, m.Rq);
    }

    [Fact]
    public void A_split_object_matches_once_at_IoU_one_half_for_AP_but_not_for_PQ()
    {
        // one 10x10 object predicted as two 5x10 halves: each half has IoU exactly 0.5
        var m = Score((Objects((5, 5, 10, 10)), Objects((5, 5, 5, 10), (10, 5, 5, 10))));
        Assert.Equal(0.5, m.Ap50); // AP: IoU >= 0.5 matches one half; TP 1, FP 1, FN 0
        Assert.All(m.ApPerThreshold.Skip(1), ap => Assert.Equal(0.0, ap)); // TP 0, FP 2, FN 1
        Assert.Equal(0.5, m.Precision50);
        Assert.Equal(1.0, m.Recall50);
        Assert.Equal(2.0 / 3, m.F1At50, 12);
        Assert.Equal(0.0, m.Pq); // panopticapi needs IoU > 0.5: no match, FP 2, FN 1
        var c = Assert.Single(m.PerClass);
        Assert.Equal((0L, 2L, 1L), (c.TruePositives, c.FalsePositives, c.FalseNegatives));
    }

    [Fact]
    public void Merged_objects_match_one_of_them()
    {
        // two 5x10 objects predicted as one 10x10: IoU 0.5 each
        var m = Score((Objects((5, 5, 5, 10), (10, 5, 5, 10)), Objects((5, 5, 10, 10))));
        Assert.Equal(0.5, m.Ap50); // TP 1, FP 0, FN 1
        Assert.Equal(1.0, m.Precision50);
        Assert.Equal(0.5, m.Recall50);
        Assert.Equal(0.0, m.Ap75);
    }

    [Fact]
    public void A_missed_object_is_a_false_negative_at_every_threshold()
    {
        var m = Score((Objects((2, 2, 8, 8), (20, 2, 8, 8)), Objects((2, 2, 8, 8))));
        Assert.All(m.ApPerThreshold, ap => Assert.Equal(0.5, ap));
        Assert.Equal(1.0, m.Precision50);
        Assert.Equal(0.5, m.Recall50);
        Assert.Equal(1.0 / 1.5, m.Pq, 12); // SQ 1, RQ 1 / (1 + 1/2)
        Assert.Equal(1.0, m.Sq);
    }

    [Fact]
    public void No_predictions_score_zero_and_precision_is_undefined()
    {
        var m = Score((Objects((2, 2, 8, 8), (20, 2, 8, 8), (30, 10, 5, 5)), new int[W * H]));
        Assert.All(m.ApPerThreshold, ap => Assert.Equal(0.0, ap));
        Assert.True(double.IsNaN(m.Precision50));
        Assert.Equal(0.0, m.Recall50);
        Assert.Equal(0.0, m.Pq);
        Assert.Equal((3L, 0L), (m.InstancesTrue, m.InstancesPredicted));
    }

    [Fact]
    public void An_empty_image_adds_nothing_and_counts_are_summed_over_images_before_dividing()
    {
        var empty = new int[W * H];
        var missed = (Objects((2, 2, 8, 8), (20, 2, 8, 8)), Objects((2, 2, 8, 8)));
        var perfect = (Objects((5, 5, 6, 6)), Objects((5, 5, 6, 6)));
        var m = Score(missed, (empty, empty), perfect);
        Assert.Equal(3, m.Images);
        Assert.All(m.ApPerThreshold, ap => Assert.Equal(2.0 / 3, ap, 12)); // TP 2, FN 1: not the mean of 0.5 and 1
        Assert.True(double.IsNaN(Score((empty, empty)).Ap)); // nothing anywhere: undefined, not 0 or 1
        Assert.True(double.IsNaN(Score((empty, empty)).Pq));
    }

    [Fact]
    public void An_unmatched_prediction_mostly_on_void_is_no_false_positive()
    {
        var isVoid = new bool[W * H];
        for (int y = 0; y < H; y++) for (int x = 30; x < W; x++) isVoid[y * W + x] = true;
        var scorer = InstanceScorer.ForObjects();
        scorer.Add(Objects((2, 2, 8, 8)), null, Objects((2, 2, 8, 8), (28, 5, 6, 6)), null, isVoid); // 4 of 6 columns void
        scorer.Add(Objects((2, 2, 8, 8)), null, Objects((2, 2, 8, 8), (25, 5, 6, 6)), null, isVoid); // 1 of 6 void
        var c = Assert.Single(scorer.Compute().PerClass);
        Assert.Equal((2L, 1L, 0L), (c.TruePositives, c.FalsePositives, c.FalseNegatives));
    }

    [Fact]
    public void Panoptic_quality_scores_stuff_by_region_and_things_by_object_per_class()
    {
        // classes: 0 sky (stuff), 1 car (thing), 2 road (stuff); sky is the top half, road the bottom
        var things = new[] { false, true, false };
        byte[] Classes(int skyRows) => Enumerable.Range(0, W * H).Select(i => (byte)(i / W < skyRows ? 0 : 2)).ToArray();
        var car = Objects((4, 12, 10, 5));
        var truth = PanopticSegments.Build(car, _ => 1, Classes(10), things);
        var predicted = PanopticSegments.Build(car, _ => 1, Classes(8), things); // sky ends two rows early
        var scorer = new InstanceScorer(new[] { "sky", "car", "road" }, things);
        scorer.Add(truth.Ids, truth.Classes, predicted.Ids, predicted.Classes);
        var m = scorer.Compute();
        var sky = m.PerClass.Single(c => c.Name == "sky");
        Assert.Equal(0.8, sky.Pq, 12); // 320 / 400 pixels
        var road = m.PerClass.Single(c => c.Name == "road");
        Assert.Equal(350.0 / 430, road.Pq, 12); // the car is no road: 350 true road pixels, 430 predicted
        Assert.Equal(1.0, m.PqThings);
        Assert.Equal((0.8 + 350.0 / 430) / 2, m.PqStuff, 12);
        Assert.Equal((0.8 + 1 + 350.0 / 430) / 3, m.Pq, 12);
        Assert.Equal((1L, 1L), (m.InstancesTrue, m.InstancesPredicted)); // AP counts things only
        // a car predicted as the other thing class is a false positive for it and a miss for the car
        var other = PanopticSegments.Build(car, _ => 2, Classes(10), new[] { false, true, true });
        var scorer2 = new InstanceScorer(new[] { "sky", "car", "truck" }, new[] { false, true, true });
        scorer2.Add(PanopticSegments.Build(car, _ => 1, Classes(10), new[] { false, true, true }) is var t2 ? t2.Ids
            : null!, t2.Classes, other.Ids, other.Classes);
        var m2 = scorer2.Compute();
        Assert.Equal(0.0, m2.PerClass.Single(c => c.Name == "car").Pq);
        Assert.Equal(1L, m2.PerClass.Single(c => c.Name == "truck").FalsePositives);
        Assert.Equal(1.0, m2.Ap50); // detection is class-agnostic
    }

    [Fact]
    public void Metrics_survive_their_JSON_with_the_documented_keys()
    {
        var m = Score((Objects((5, 5, 10, 10)), Objects((7, 5, 10, 10))), (Objects((2, 2, 8, 8), (20, 2, 8, 8)),
            Objects((2, 2, 8, 8))));
        var json = m.ToJsonObject();
        foreach (var key in new[] { "ap", "ap50", "ap75", "apPerThreshold", "precision50", "recall50", "f1At50", "pq",
            "sq", "rq", "instancesTrue", "instancesPredicted" })
            Assert.True(json.ContainsKey(key), key);
        Assert.Equal(10, json["apPerThreshold"]!.AsArray().Count);
        var back = InstanceMetrics.FromJsonObject(json);
        Assert.Equal(m.ApPerThreshold, back.ApPerThreshold);
        Assert.Equal(m.Pq, back.Pq, 15);
    }

    [Fact]
    public void Random_images_agree_with_references_written_from_the_definitions()
    {
        var rng = new Random(7);
        var scorer = InstanceScorer.ForObjects();
        long[] tp = new long[10]; long nTrue = 0, nPred = 0, pqTp = 0, pqFp = 0, pqFn = 0; double iouSum = 0;
        for (int image = 0; image < 60; image++)
        {
            int[] Random() => Objects(Enumerable.Range(0, rng.Next(0, 5)).Select(_ => (rng.Next(0, 30),
                rng.Next(0, 14), rng.Next(2, 12), rng.Next(2, 8))).ToArray());
            var truth = Random();
            // predictions near the truth, so that every threshold sees matches
            var predicted = rng.Next(3) == 0 ? Random() : Jitter(truth, rng);
            scorer.Add(truth, null, predicted, null);
            var iou = ReferenceIoU(truth, predicted);
            int t = iou.GetLength(0), p = iou.GetLength(1);
            nTrue += t; nPred += p;
            for (int k = 0; k < 10; k++) tp[k] += BruteForceMatches(iou, InstanceMetrics.Thresholds[k]);
            // panopticapi: pairs with IoU > 0.5 (unique), the rest unmatched
            int matched = 0;
            for (int i = 0; i < t; i++) for (int j = 0; j < p; j++) if (iou[i, j] > 0.5) { matched++; iouSum += iou[i, j]; }
            pqTp += matched; pqFp += p - matched; pqFn += t - matched;
        }
        var m = scorer.Compute();
        Assert.Equal(tp, m.TruePositives);
        Assert.Equal((nTrue, nPred), (m.InstancesTrue, m.InstancesPredicted));
        Assert.True(tp[0] > 20 && tp[9] < tp[0], $"the fixture should exercise the thresholds: {string.Join(",", tp)}");
        Assert.Equal(iouSum / (pqTp + 0.5 * pqFp + 0.5 * pqFn), m.Pq, 12);
    }

    /// <summary>Each object's pixels shifted by up to 2 px, some objects dropped.</summary>
    private static int[] Jitter(int[] truth, Random rng)
    {
        var result = new int[truth.Length];
        int objects = truth.Max();
        for (int id = 1; id <= objects; id++)
        {
            if (rng.Next(6) == 0) continue;
            int dx = rng.Next(-2, 3), dy = rng.Next(-2, 3);
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    if (truth[y * W + x] == id && x + dx is >= 0 and < W && y + dy is >= 0 and < H)
                        result[(y + dy) * W + x + dx] = id;
        }
        return result;
    }

    /// <summary>IoU of every (true, predicted) pair of the objects present, pixel by pixel.</summary>
    private static double[,] ReferenceIoU(int[] truth, int[] predicted)
    {
        var t = truth.Where(v => v > 0).Distinct().Order().ToArray();
        var p = predicted.Where(v => v > 0).Distinct().Order().ToArray();
        var iou = new double[t.Length, p.Length];
        for (int i = 0; i < t.Length; i++)
            for (int j = 0; j < p.Length; j++)
            {
                int inter = 0, union = 0;
                for (int k = 0; k < truth.Length; k++)
                {
                    bool a = truth[k] == t[i], b = predicted[k] == p[j];
                    if (a && b) inter++;
                    if (a || b) union++;
                }
                iou[i, j] = (double)inter / union;
            }
        return iou;
    }

    /// <summary>The most pairs at or above the threshold any one-to-one assignment makes: every assignment
    /// tried.</summary>
    private static int BruteForceMatches(double[,] iou, double threshold)
    {
        int t = iou.GetLength(0), p = iou.GetLength(1), best = 0;
        void Search(int i, bool[] used, int count)
        {
            if (i == t) { best = Math.Max(best, count); return; }
            Search(i + 1, used, count);
            for (int j = 0; j < p; j++)
                if (!used[j] && iou[i, j] >= threshold - 1e-12)
                {
                    used[j] = true;
                    Search(i + 1, used, count + 1);
                    used[j] = false;
                }
        }
        Search(0, new bool[p], 0);
        return best;
    }
}
