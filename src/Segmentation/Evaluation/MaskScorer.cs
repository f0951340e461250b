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
    /// ground-truth mask needs a prediction; extra predictions are an error too.
    /// </summary>
    public static SegmentationMetrics ScoreFolders(string predictionDir, string truthDir, int classes,
        int ignoreIndex = Labels.Ignore,
        MaskEncoding encoding = MaskEncoding.Auto, string? paletteFile = null, string[]? classNames = null,
            bool perImage = true)
    {
        var (preds, truth) = PairedFiles(predictionDir, truthDir);

        // Pairing through the data layer: each prediction stands as the "image" of its ground-truth mask, so sizes
        // are checked and the truth is decoded and validated with the requested encoding.
        var keys = truth.Keys.Order(StringComparer.OrdinalIgnoreCase).ToList();
        var truthSet = SegmentationDataset.FromPairs(keys.Select(k => (preds[k], truth[k])),
            new DatasetOptions { Classes = classes, IgnoreIndex = ignoreIndex, Encoding = encoding,
                PaletteFile = paletteFile, ClassNames = classNames, InChannels = 1 });
        var d = truthSet.Description;
        var reader = new ImageReader();
        using var cm = new ConfusionMatrix(d.Classes, Labels.Ignore, d.ClassNames, perImage);
        for (int i = 0; i < keys.Count; i++)
        {
            var t = truthSet.Load(i);
            var raw = reader.ReadMask(preds[keys[i]], paletteIndices: d.Encoding != MaskEncoding.Palette);
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

    /// <summary>The prediction and truth files of two folders, paired by name; unpaired files are an error.</summary>
    private static (Dictionary<string, string> Predictions, Dictionary<string, string> Truth) PairedFiles(
        string predictionDir, string truthDir)
    {
        if (!Directory.Exists(predictionDir)) throw new DataException($"{predictionDir}: prediction folder not found.",
            predictionDir);
        if (!Directory.Exists(truthDir)) throw new DataException($"{truthDir}: ground-truth folder not found.",
            truthDir);
        // The data layer pairs the folders: predictions stand in as "images", truth as "masks".
        var truth = Files(truthDir);
        var preds = WithoutPictures(Files(predictionDir), truth);
        var missing = truth.Keys.Where(k => !preds.ContainsKey(k)).Order().ToList();
        var extra = preds.Keys.Where(k => !truth.ContainsKey(k)).Order().ToList();
        if (missing.Count > 0 || extra.Count > 0)
        {
            static string List(List<string> names) => string.Join(", ", names.Take(5))
                + (names.Count > 5 ? $", ... ({names.Count} in all)" : "");
            var parts = new List<string>();
            if (missing.Count > 0) parts.Add($"{missing.Count} ground-truth mask(s) in {truthDir} have no prediction "
                + $"({List(missing)})");
            if (extra.Count > 0) parts.Add($"{extra.Count} prediction(s) have no ground-truth mask ({List(extra)})");
            throw new DataException($"{predictionDir}: {string.Join("; ", parts)}. Masks pair by file name.",
                predictionDir);
        }
        if (truth.Count == 0) throw new DataException($"{truthDir}: no masks found.", truthDir);
        return (preds, truth);
    }

    /// <summary>
    /// Scores a folder of predicted instance masks against one of true instance masks (object numbers, 0 for none;
    /// 16-bit PNGs, or 8-bit under 255 objects), paired by file name, whatever made them: AP over IoU 0.50..0.95 and
    /// panoptic quality (<see cref="InstanceMetrics"/>).
    /// </summary>
    public static InstanceMetrics ScoreInstanceFolders(string predictionDir, string truthDir)
    {
        var (preds, truth) = PairedFiles(predictionDir, truthDir);
        var reader = new ImageReader();
        var scorer = InstanceScorer.ForObjects();
        foreach (var key in truth.Keys.Order(StringComparer.OrdinalIgnoreCase))
        {
            var t = reader.ReadMask(truth[key]);
            var p = reader.ReadMask(preds[key]);
            if (t.Width != p.Width || t.Height != p.Height)
                throw new DataException($"{preds[key]}: {p.Width}x{p.Height}, but its ground truth {truth[key]} is "
                    + $"{t.Width}x{t.Height}.", preds[key]);
            var truthIds = Array.ConvertAll(InstanceMasks.FromIds(t, truth[key]), v => (int)v);
            var predIds = Array.ConvertAll(InstanceMasks.FromIds(p, preds[key]), v => (int)v);
            scorer.Add(truthIds, null, predIds, null);
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
