using Segmentation.Data;
using static TorchSharp.torch;

namespace Segmentation.Evaluation;

/// <summary>Scores a folder of predicted masks against a folder of ground-truth masks with the <see
/// cref="ConfusionMatrix"/> rule.</summary>
public static class MaskScorer
{
    /// <summary>
    /// Pairs files by name (extension ignored); reads both through the data layer's mask encodings (predictions as
    /// class indices unless the encoding is palette, ground truth with <paramref name="encoding"/>). Every
    /// ground-truth mask needs a prediction, and extra predictions are an error too, unless
    /// <paramref name="skipUnpaired"/>: then they are left out and counted (<see cref="Pairing"/>).
    /// </summary>
    public static SegmentationMetrics ScoreFolders(string predictionDir, string truthDir, int classes,
        int ignoreIndex = Labels.Ignore,
        MaskEncoding encoding = MaskEncoding.Auto, string? paletteFile = null, string[]? classNames = null,
            bool perImage = true, bool skipUnpaired = false) =>
        ScoreFolders(PairFolders(predictionDir, truthDir, skipUnpaired), classes, ignoreIndex, encoding, paletteFile,
            classNames, perImage);

    /// <summary>Scores the pairs of <see cref="PairFolders"/>.</summary>
    public static SegmentationMetrics ScoreFolders(Pairing pairing, int classes, int ignoreIndex = Labels.Ignore,
        MaskEncoding encoding = MaskEncoding.Auto, string? paletteFile = null, string[]? classNames = null,
            bool perImage = true)
    {
        var (preds, truth) = (pairing.Predictions, pairing.Truth);
        // The ground truth through the data layer (each mask paired with itself), so that it is decoded and validated
        // with the requested encoding and its errors name it; the predictions' sizes are checked here.
        var keys = truth.Keys.Order(StringComparer.OrdinalIgnoreCase).ToList();
        var truthSet = SegmentationDataset.FromPairs(keys.Select(k => (truth[k], truth[k])),
            new DatasetOptions { Classes = classes, IgnoreIndex = ignoreIndex, Encoding = encoding,
                PaletteFile = paletteFile, ClassNames = classNames, InChannels = 1 });
        var d = truthSet.Description;
        var reader = new ImageReader();
        using var cm = new ConfusionMatrix(d.Classes, Labels.Ignore, d.ClassNames, perImage);
        for (int i = 0; i < keys.Count; i++)
        {
            var t = truthSet.Load(i);
            var raw = reader.ReadMask(preds[keys[i]], paletteIndices: d.Encoding != MaskEncoding.Palette);
            CheckSize(preds[keys[i]], raw.Width, raw.Height, truth[keys[i]], t.Width, t.Height);
            // Predictions are class indices (or palette colours); values outside the classes are reported by the
            // matrix.
            long[] p = d.Encoding == MaskEncoding.Palette
                ? Array.ConvertAll(MaskDecoder.Decode(raw, d, preds[keys[i]]), v => (long)v)
                : Array.ConvertAll(raw.Values, v => (long)v);
            using var scope = NewDisposeScope();
            CheckPrediction(preds[keys[i]], p, t.Mask, d.Classes);
            cm.Update(tensor(p, new long[] { raw.Height, raw.Width }),
                      tensor(t.Mask, new long[] { raw.Height, raw.Width }, ScalarType.Byte).to_type(ScalarType.Int64));
        }
        return cm.Compute();
    }

    /// <summary>Predictions and ground truth paired by name, and what was left out unpaired.</summary>
    /// <param name="Predictions">Prediction files by name.</param>
    /// <param name="Truth">Ground-truth masks by name: files, or (the Data Science Bowl layout) folders of one mask
    /// per object.</param>
    /// <param name="TruthWithoutPrediction">Ground-truth names left out for want of a prediction.</param>
    /// <param name="PredictionsWithoutTruth">Prediction names left out for want of a ground truth.</param>
    public sealed record Pairing(Dictionary<string, string> Predictions, Dictionary<string, string> Truth,
        IReadOnlyList<string> TruthWithoutPrediction, IReadOnlyList<string> PredictionsWithoutTruth)
    {
        /// <summary>"left out 2 ground-truth mask(s) without a prediction (a, b)", or null when nothing was.</summary>
        public string? Describe()
        {
            static string List(IReadOnlyList<string> names) => string.Join(", ", names.Take(5))
                + (names.Count > 5 ? $", ... ({names.Count} in all)" : "");
            var parts = new List<string>();
            if (TruthWithoutPrediction.Count > 0)
                parts.Add($"{TruthWithoutPrediction.Count} ground-truth mask(s) without a prediction "
                    + $"({List(TruthWithoutPrediction)})");
            if (PredictionsWithoutTruth.Count > 0)
                parts.Add($"{PredictionsWithoutTruth.Count} prediction(s) without a ground-truth mask "
                    + $"({List(PredictionsWithoutTruth)})");
            return parts.Count == 0 ? null : string.Join("; ", parts);
        }
    }

    /// <summary>
    /// The prediction and ground-truth masks of two folders, paired by name (extension ignored). The ground truth is a
    /// folder of masks, a data folder (its <c>masks/</c>), or the Data Science Bowl layout (<c>ID/masks/*.png</c>, one
    /// mask per object). Unpaired names are an error, unless <paramref name="skipUnpaired"/>: then they are left out
    /// and listed.
    /// </summary>
    public static Pairing PairFolders(string predictionDir, string truthDir, bool skipUnpaired = false)
    {
        if (!Directory.Exists(predictionDir)) throw new DataException($"{predictionDir}: prediction folder not found.",
            predictionDir);
        if (!Directory.Exists(truthDir)) throw new DataException($"{truthDir}: ground-truth folder not found.",
            truthDir);
        var truth = TruthFiles(truthDir);
        var preds = WithoutPictures(Files(predictionDir), truth);
        var missing = truth.Keys.Where(k => !preds.ContainsKey(k)).Order().ToList();
        var extra = preds.Keys.Where(k => !truth.ContainsKey(k)).Order().ToList();
        var pairing = new Pairing(preds, truth, missing, extra);
        if ((missing.Count > 0 || extra.Count > 0) && !skipUnpaired)
            throw new DataException($"{predictionDir}: {pairing.Describe()}. Masks pair by file name (the ground "
                + $"truth in {truthDir}); --skip-unpaired scores the pairs there are.", predictionDir);
        foreach (var k in missing) truth.Remove(k);
        foreach (var k in extra) preds.Remove(k);
        if (truth.Count == 0)
            throw new DataException(missing.Count + extra.Count > 0 ? $"{predictionDir}: no prediction pairs with a "
                + $"ground-truth mask in {truthDir} by name." : $"{truthDir}: no ground-truth masks found (a folder "
                + "of masks, a data folder with masks/, or the Data Science Bowl layout ID/masks/*.png).", truthDir);
        return pairing;
    }

    /// <summary>The ground-truth masks of <paramref name="dir"/> by name: its mask files, those of its masks/ beside
    /// images/, or the Data Science Bowl layout's per-object mask folders (by their ID).</summary>
    private static Dictionary<string, string> TruthFiles(string dir)
    {
        var files = Files(dir);
        if (files.Count > 0) return files;
        if (Directory.Exists(Path.Combine(dir, "masks")) && Directory.Exists(Path.Combine(dir, "images")))
            return Files(Path.Combine(dir, "masks"));
        return Directory.EnumerateDirectories(dir).Where(sub => Directory.Exists(Path.Combine(sub, "masks")))
            .ToDictionary(sub => Path.GetFileName(sub), sub => Path.Combine(sub, "masks"),
                StringComparer.OrdinalIgnoreCase);
    }

    /// <summary>A prediction whose size differs from its ground truth's is an error naming both.</summary>
    private static void CheckSize(string prediction, int w, int h, string truth, int tw, int th)
    {
        if (w != tw || h != th)
            throw new DataException($"{prediction}: the prediction is {w}x{h}, but its ground truth {truth} is "
                + $"{tw}x{th}.", prediction);
    }

    /// <summary>
    /// Scores a folder of predicted instance masks against true instance masks (object numbers, 0 for none; 16-bit
    /// PNGs, or 8-bit under 255 objects; or the Data Science Bowl layout's one mask per object), paired by name,
    /// whatever made them: AP over IoU 0.50..0.95 and panoptic quality (<see cref="InstanceMetrics"/>).
    /// </summary>
    public static InstanceMetrics ScoreInstanceFolders(string predictionDir, string truthDir,
        bool skipUnpaired = false) => ScoreInstanceFolders(PairFolders(predictionDir, truthDir, skipUnpaired));

    /// <summary>Scores the instance masks of <see cref="PairFolders"/>.</summary>
    public static InstanceMetrics ScoreInstanceFolders(Pairing pairing)
    {
        var (preds, truth) = (pairing.Predictions, pairing.Truth);
        var reader = new ImageReader();
        var scorer = InstanceScorer.ForObjects();
        foreach (var key in truth.Keys.Order(StringComparer.OrdinalIgnoreCase))
        {
            var p = reader.ReadMask(preds[key]);
            ushort[] truthIds;
            if (Directory.Exists(truth[key])) truthIds = InstanceMasks.FromObjectFiles(truth[key], p.Width, p.Height,
                reader); // one mask per object: each must be the prediction's size
            else
            {
                var t = reader.ReadMask(truth[key]);
                CheckSize(preds[key], p.Width, p.Height, truth[key], t.Width, t.Height);
                truthIds = InstanceMasks.FromIds(t, truth[key]);
            }
            var predIds = Array.ConvertAll(InstanceMasks.FromIds(p, preds[key]), v => (int)v);
            scorer.Add(Array.ConvertAll(truthIds, v => (int)v), null, predIds, null);
        }
        return scorer.Compute();
    }

    /// <summary>A predicted label outside the classes at a pixel that counts is an error naming the file, the value and
    /// its pixels.</summary>
    private static void CheckPrediction(string path, long[] prediction, byte[] truth, int classes)
    {
        long bad = -1; int count = 0;
        for (int j = 0; j < prediction.Length; j++)
            if (truth[j] != Labels.Ignore && (prediction[j] < 0 || prediction[j] >= classes))
            {
                if (bad < 0) bad = prediction[j];
                if (prediction[j] == bad) count++;
            }
        if (bad >= 0)
            throw new DataException($"{path}: predicted value {bad} at {count} pixel(s), but there are {classes} "
                + $"classes (0-{classes - 1}).", path);
    }

    /// <summary>The predictions without the pictures <c>segment predict</c> writes beside each mask (X_overlay.png,
    /// X_color.png, X_prob_N.png) when X is a prediction and they have no ground truth of their own.</summary>
    private static Dictionary<string, string> WithoutPictures(Dictionary<string, string> preds,
        Dictionary<string, string> truth) =>
        preds.Where(kv => truth.ContainsKey(kv.Key) || !IsPicture(kv.Key, preds))
            .ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.OrdinalIgnoreCase);

    private static bool IsPicture(string stem, Dictionary<string, string> preds)
    {
        foreach (var suffix in new[] { "_overlay", "_color" })
            if (stem.EndsWith(suffix, StringComparison.OrdinalIgnoreCase) && preds.ContainsKey(stem[..^suffix.Length]))
                return true;
        int at = stem.LastIndexOf("_prob_", StringComparison.OrdinalIgnoreCase);
        return at > 0 && int.TryParse(stem[(at + 6)..], out _) && preds.ContainsKey(stem[..at]);
    }

    private static Dictionary<string, string> Files(string dir) =>
        Directory.EnumerateFiles(dir)
            .Where(f => Path.GetExtension(f).ToLowerInvariant() is ".png" or ".bmp" or ".tif" or ".tiff" or ".gif")
            .ToDictionary(f => Path.GetFileNameWithoutExtension(f), f => f, StringComparer.OrdinalIgnoreCase);
}
