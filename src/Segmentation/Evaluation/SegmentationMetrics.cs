using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Segmentation.Evaluation;

/// <summary>
/// Metrics derived from one confusion matrix (see <see cref="ConfusionMatrix"/> for the rule). NaN marks a class
/// left out of the means; in JSON it is <c>null</c>.
/// </summary>
public sealed record SegmentationMetrics
{
    /// <summary>Mean over classes of IoU, NaN classes left out.</summary>
    public double MeanIoU { get; init; }
    /// <summary>Correct valid pixels / valid pixels.</summary>
    public double PixelAccuracy { get; init; }
    /// <summary>Mean over classes of per-class accuracy (recall), NaN classes left out.</summary>
    public double MeanAccuracy { get; init; }
    /// <summary>Mean over classes of Dice (F1), NaN classes left out.</summary>
    public double MeanDice { get; init; }
    /// <summary>IoU weighted by each class's share of the ground-truth pixels.</summary>
    public double FrequencyWeightedIoU { get; init; }
    /// <summary>The other rule: the mean over images of each image's mean IoU; null unless tracked.</summary>
    public double? PerImageMeanIoU { get; init; }
    /// <summary>IoU per class.</summary>
    public double[] PerClassIoU { get; init; } = Array.Empty<double>();
    /// <summary>Accuracy (recall) per class.</summary>
    public double[] PerClassAccuracy { get; init; } = Array.Empty<double>();
    /// <summary>Dice per class.</summary>
    public double[] PerClassDice { get; init; } = Array.Empty<double>();
    /// <summary>Class names (class indices as text when none were given).</summary>
    public string[] ClassNames { get; init; } = Array.Empty<string>();
    /// <summary>Counts [truth, prediction].</summary>
    public long[,] ConfusionMatrix { get; init; } = new long[0, 0];
    /// <summary>Instance data: detection (AP) and panoptic quality of the decoded objects; null otherwise. Its keys
    /// join the JSON object's top level.</summary>
    public InstanceMetrics? Instances { get; init; }

    /// <summary>Derives the metrics from a confusion matrix [truth, prediction].</summary>
    public static SegmentationMetrics FromConfusion(long[,] m, IReadOnlyList<string>? names = null,
        double? perImageMeanIoU = null)
    {
        int n = m.GetLength(0);
        var iou = new double[n]; var acc = new double[n]; var dice = new double[n];
        double totalGt = 0, totalCorrect = 0;
        var gt = new double[n];
        for (int c = 0; c < n; c++)
        {
            double inter = m[c, c], g = 0, p = 0;
            for (int k = 0; k < n; k++) { g += m[c, k]; p += m[k, c]; }
            double union = p + g - inter;
            iou[c] = union > 0 ? inter / union : double.NaN;
            acc[c] = g > 0 ? inter / g : double.NaN;
            dice[c] = p + g > 0 ? 2 * inter / (p + g) : double.NaN;
            gt[c] = g; totalGt += g; totalCorrect += inter;
        }
        double fw = 0;
        for (int c = 0; c < n; c++)
            if (gt[c] > 0 && !double.IsNaN(iou[c])) fw += gt[c] / totalGt * iou[c];
        return new SegmentationMetrics
        {
            MeanIoU = NanMean(iou),
            PixelAccuracy = totalGt > 0 ? totalCorrect / totalGt : double.NaN,
            MeanAccuracy = NanMean(acc),
            MeanDice = NanMean(dice),
            FrequencyWeightedIoU = totalGt > 0 ? fw : double.NaN,
            PerImageMeanIoU = perImageMeanIoU,
            PerClassIoU = iou, PerClassAccuracy = acc, PerClassDice = dice,
            ClassNames = names?.ToArray() ?? Enumerable.Range(0, n)
                .Select(i => i.ToString(CultureInfo.InvariantCulture)).ToArray(),
            ConfusionMatrix = (long[,])m.Clone(),
        };
    }

    private static double NanMean(double[] values)
    {
        double sum = 0; int count = 0;
        foreach (var v in values) if (!double.IsNaN(v)) { sum += v; count++; }
        return count > 0 ? sum / count : double.NaN;
    }

    /// <summary>The metrics as a JSON object with the documented keys (NaN as null).</summary>
    public JsonObject ToJsonObject()
    {
        static JsonNode? Num(double v) => double.IsNaN(v) || double.IsInfinity(v) ? null : JsonValue.Create(v);
        static JsonArray Arr(double[] a) => new(a.Select(Num).ToArray());
        int n = ConfusionMatrix.GetLength(0);
        var cm = new JsonArray();
        for (int i = 0; i < n; i++)
            cm.Add(new JsonArray(Enumerable.Range(0, n).Select(j => (JsonNode?)JsonValue.Create(ConfusionMatrix[i, j]))
                .ToArray()));
        var o = new JsonObject
        {
            ["meanIoU"] = Num(MeanIoU),
            ["pixelAccuracy"] = Num(PixelAccuracy),
            ["meanAccuracy"] = Num(MeanAccuracy),
            ["meanDice"] = Num(MeanDice),
            ["frequencyWeightedIoU"] = Num(FrequencyWeightedIoU),
        };
        if (PerImageMeanIoU is { } pi) o["perImageMeanIoU"] = Num(pi);
        o["perClassIoU"] = Arr(PerClassIoU);
        o["perClassAccuracy"] = Arr(PerClassAccuracy);
        o["perClassDice"] = Arr(PerClassDice);
        o["classNames"] = new JsonArray(ClassNames.Select(s => (JsonNode?)JsonValue.Create(s)).ToArray());
        o["confusionMatrix"] = cm;
        if (Instances is not null)
            foreach (var (key, value) in Instances.ToJsonObject()) o[key] = value?.DeepClone();
        return o;
    }

    /// <summary>The metrics as JSON text.</summary>
    public string ToJson(bool indented = false) => ToJsonObject()
        .ToJsonString(new JsonSerializerOptions { WriteIndented = indented });

    /// <summary>Reads metrics back from <see cref="ToJson"/>'s output.</summary>
    public static SegmentationMetrics FromJsonObject(JsonObject o)
    {
        static double D(JsonNode? n) => n is null ? double.NaN : n.GetValue<double>();
        static double[] A(JsonNode? n) => n is JsonArray a ? a.Select(D).ToArray() : Array.Empty<double>();
        var rows = o["confusionMatrix"] as JsonArray ?? new JsonArray();
        var cm = new long[rows.Count, rows.Count];
        for (int i = 0; i < rows.Count; i++)
            for (int j = 0; j < rows.Count; j++) cm[i, j] = rows[i]![j]!.GetValue<long>();
        return new SegmentationMetrics
        {
            MeanIoU = D(o["meanIoU"]), PixelAccuracy = D(o["pixelAccuracy"]), MeanAccuracy = D(o["meanAccuracy"]),
            MeanDice = D(o["meanDice"]), FrequencyWeightedIoU = D(o["frequencyWeightedIoU"]),
            PerImageMeanIoU = o["perImageMeanIoU"] is { } pi ? D(pi) : null,
            PerClassIoU = A(o["perClassIoU"]), PerClassAccuracy = A(o["perClassAccuracy"]),
                PerClassDice = A(o["perClassDice"]),
            ClassNames = (o["classNames"] as JsonArray)?.Select(x => x!.GetValue<string>()).ToArray()
                ?? Array.Empty<string>(),
            ConfusionMatrix = cm,
            Instances = o.ContainsKey("truePositives") ? InstanceMetrics.FromJsonObject(o) : null,
        };
    }

    /// <summary>A readable table: one row per class (IoU, accuracy, Dice), then the summary figures.</summary>
    public override string ToString()
    {
        static string F(double v) => double.IsNaN(v) ? "   -  " : v.ToString("0.0000", CultureInfo.InvariantCulture);
        int w = Math.Max(5, ClassNames.Length == 0 ? 5 : ClassNames.Max(s => s.Length));
        var sb = new StringBuilder();
        sb.AppendLine($"{"class".PadRight(w)}  IoU     Acc     Dice");
        for (int c = 0; c < PerClassIoU.Length; c++)
            sb.AppendLine($"{ClassNames[c].PadRight(w)}  {F(PerClassIoU[c])}  {F(PerClassAccuracy[c])}  "
                + $"{F(PerClassDice[c])}");
        sb.AppendLine($"mean IoU {F(MeanIoU)}  pixel acc {F(PixelAccuracy)}  mean acc {F(MeanAccuracy)}  mean Dice "
            + $"{F(MeanDice)}  fwIoU {F(FrequencyWeightedIoU)}"
            + (PerImageMeanIoU is { } p ? $"  per-image mIoU {F(p)}" : ""));
        if (Instances is not null) sb.AppendLine(Instances.ToString());
        return sb.ToString();
    }
}
