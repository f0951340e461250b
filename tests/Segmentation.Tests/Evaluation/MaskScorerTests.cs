using Segmentation.Data;
using Segmentation.Evaluation;

namespace Segmentation.Tests.Evaluation;

public class MaskScorerTests
{
    // 4x2 masks, 3 classes, ignore 255. Truth row 0: 0 0 1 1, row 1: 2 2 255 0; prediction row 0: 0 1 1 1, row 1: 2 0 2 0.
    private static readonly byte[] Truth = { 0, 0, 1, 1, 2, 2, 255, 0 };
    private static readonly byte[] Pred = { 0, 1, 1, 1, 2, 0, 2, 0 };

    private static void Write(string path, byte[] values) => TempDir.SaveGray(path, 4, 2, (x, y) => values[y * 4 + x]);

    [Fact]
    public void Scores_two_folders_by_the_data_set_rule()
    {
        using var d = new TempDir();
        Write(d["pred/a.png"], Pred);
        Write(d["gt/a.png"], Truth);
        Write(d["pred/b.png"], Truth.Select(v => v == 255 ? (byte)1 : v).ToArray());
        Write(d["gt/b.png"], Truth);
        var m = MaskScorer.ScoreFolders(d["pred"], d["gt"], classes: 3, ignoreIndex: 255, encoding: MaskEncoding.Index);
        // Valid pixels: 7 per image. Image a: class 0 -> I 2, P 3, G 3; class 1 -> I 2, P 3, G 2; class 2 -> I 1, P 1, G 2.
        // Image b is perfect: class 0 I=G=P=3, class 1 I=G=P=2, class 2 I=G=P=2.
        Assert.Equal(new[] { 5.0 / (6 + 6 - 5), 4.0 / (5 + 4 - 4), 3.0 / (3 + 4 - 3) }, m.PerClassIoU, new Tolerance());
        Assert.Equal(12.0 / 14, m.PixelAccuracy, 12);
        Assert.Equal(m.PerClassIoU.Average(), m.MeanIoU, 12);
    }

    [Fact]
    public void A_truth_mask_without_a_prediction_is_named()
    {
        using var d = new TempDir();
        Write(d["pred/a.png"], Pred);
        Write(d["gt/a.png"], Truth);
        Write(d["gt/missing_one.png"], Truth);
        var e = Assert.Throws<DataException>(() => MaskScorer.ScoreFolders(d["pred"], d["gt"], 3));
        Assert.Contains("missing_one", e.Message);
    }

    [Fact]
    public void A_predicted_label_outside_the_classes_is_an_error_naming_it()
    {
        using var d = new TempDir();
        Write(d["pred/a.png"], Pred.Select(v => v == 2 ? (byte)7 : v).ToArray());
        Write(d["gt/a.png"], Truth);
        var e = Assert.Throws<DataException>(() => MaskScorer.ScoreFolders(d["pred"], d["gt"], 3, encoding: MaskEncoding.Index));
        Assert.Contains("a.png", e.Message);
        Assert.Contains("value 7 at 1 pixel(s)", e.Message);
    }

    /// <summary>Issue 33, class 8: score named the ground truth "mask" and the prediction "image", and
    /// --skip-unpaired did nothing. Now sizes are checked with each side named for what it is, and --skip-unpaired
    /// scores the pairs there are and lists what it left out.</summary>
    [Fact]
    public void Score_names_prediction_and_ground_truth_and_skips_unpaired_files_when_asked()
    {
        using var d = new TempDir();
        Write(d["pred/a.png"], Pred);
        Write(d["gt/a.png"], Truth);
        TempDir.SaveGray(d["pred/b.png"], 2, 4, (x, y) => 0);
        Write(d["gt/b.png"], Truth);
        var e = Assert.Throws<DataException>(() => MaskScorer.ScoreFolders(d["pred"], d["gt"], 3,
            encoding: MaskEncoding.Index));
        Assert.Contains("the prediction is 2x4, but its ground truth", e.Message);
        Assert.DoesNotContain("image", e.Message);

        File.Delete(d["pred/b.png"]);
        Write(d["pred/extra.png"], Pred);
        var refused = Assert.Throws<DataException>(() => MaskScorer.ScoreFolders(d["pred"], d["gt"], 3));
        Assert.Contains("--skip-unpaired", refused.Message);
        var pairing = MaskScorer.PairFolders(d["pred"], d["gt"], skipUnpaired: true);
        Assert.Equal(new[] { "b" }, pairing.TruthWithoutPrediction);
        Assert.Equal(new[] { "extra" }, pairing.PredictionsWithoutTruth);
        var m = MaskScorer.ScoreFolders(pairing, 3, encoding: MaskEncoding.Index);
        Assert.Equal(5.0 / 7, m.PixelAccuracy, 12); // image a alone
    }

    /// <summary>Instance scoring takes the Data Science Bowl layout as ground truth (one mask per object), and
    /// --skip-unpaired.</summary>
    [Fact]
    public void Instance_scoring_reads_the_data_science_bowl_layout_and_skips_unpaired_files()
    {
        using var d = new TempDir();
        // two objects in a 6x4 image: columns 0-1 and 3-5
        TempDir.SaveGray(d["gt/s1/masks/o1.png"], 6, 4, (x, y) => x < 2 ? (byte)255 : (byte)0);
        TempDir.SaveGray(d["gt/s1/masks/o2.png"], 6, 4, (x, y) => x >= 3 ? (byte)255 : (byte)0);
        TempDir.SaveGray(d["gt/s1/images/s1.png"], 6, 4, (x, y) => 9);
        TempDir.SaveGray(d["gt/s2/masks/o1.png"], 6, 4, (x, y) => 255);
        TempDir.SaveGray(d["gt/s2/images/s2.png"], 6, 4, (x, y) => 9);
        TempDir.SaveGray(d["pred/s1.png"], 6, 4, (x, y) => x < 2 ? (byte)1 : x >= 3 ? (byte)2 : (byte)0);
        Assert.Contains("s2", Assert.Throws<DataException>(() => MaskScorer.ScoreInstanceFolders(d["pred"],
            d["gt"])).Message);
        var m = MaskScorer.ScoreInstanceFolders(d["pred"], d["gt"], skipUnpaired: true);
        Assert.Equal(1.0, m.Ap50, 12);
        Assert.Equal(2, m.InstancesTrue);
    }

    private sealed class Tolerance : IEqualityComparer<double>
    {
        public bool Equals(double a, double b) => Math.Abs(a - b) < 1e-12;
        public int GetHashCode(double v) => 0;
    }
}
