using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Segmentation.Evaluation;

/// <summary>Panoptic quality of one class: panopticapi's counts and the ratios derived from them.</summary>
/// <param name="Name">The class.</param>
/// <param name="IsThing">Counted objects (true) or stuff (one region per image).</param>
/// <param name="TruePositives">Matched pairs (IoU above 0.5).</param>
/// <param name="FalsePositives">Predicted segments left unmatched (not mostly void).</param>
/// <param name="FalseNegatives">True segments left unmatched.</param>
/// <param name="IoUSum">The IoU of the matched pairs, summed.</param>
public sealed record ClassQuality(string Name, bool IsThing, long TruePositives, long FalsePositives,
    long FalseNegatives, double IoUSum)
{
    private double Denominator => TruePositives + 0.5 * FalsePositives + 0.5 * FalseNegatives;
    /// <summary>Panoptic quality, SQ x RQ (NaN when the class appears nowhere).</summary>
    public double Pq => Denominator == 0 ? double.NaN : IoUSum / Denominator;
    /// <summary>Segmentation quality: the mean IoU of the matches (0 without one, as panopticapi).</summary>
    public double Sq => Denominator == 0 ? double.NaN : TruePositives == 0 ? 0 : IoUSum / TruePositives;
    /// <summary>Recognition quality: an F1 score of the matching.</summary>
    public double Rq => Denominator == 0 ? double.NaN : TruePositives / Denominator;
}

/// <summary>
/// Instance and panoptic metrics of a data set, every count summed over all images before any ratio is taken.
/// <list type="bullet">
/// <item>Detection (the Data Science Bowl 2018 metric, over thing objects, class-agnostic): true and predicted objects
/// of an image are matched one to one by linear assignment on IoU (StarDist's <c>matching</c>); at threshold t a match
/// needs IoU &gt;= t; AP(t) = TP / (TP + FP + FN) for t = 0.50, 0.55, ..., 0.95; <see cref="Ap"/> is their
/// mean.</item>
/// <item>Panoptic quality (panopticapi's <c>pq_compute</c>): per class, segments match at IoU &gt; 0.5 with void
/// pixels left out of the union; an unmatched prediction more than half void is not a false positive; PQ = sum IoU /
/// (TP + FP/2 + FN/2) = SQ x RQ; the averages are over classes that appear, for things, stuff and all.</item>
/// </list>
/// </summary>
public sealed record InstanceMetrics
{
    /// <summary>The IoU thresholds of <see cref="ApPerThreshold"/>: 0.50 to 0.95 by 0.05.</summary>
    public static IReadOnlyList<double> Thresholds { get; } = Enumerable.Range(0, 10).Select(i => 0.5 + 0.05 * i)
        .Select(t => Math.Round(t, 2)).ToArray();

    /// <summary>Images scored.</summary>
    public int Images { get; init; }
    /// <summary>True thing objects.</summary>
    public long InstancesTrue { get; init; }
    /// <summary>Predicted thing objects.</summary>
    public long InstancesPredicted { get; init; }
    /// <summary>Matches at each threshold of <see cref="Thresholds"/>.</summary>
    public long[] TruePositives { get; init; } = new long[10];
    /// <summary>Panoptic counts per class that has segments (things and stuff).</summary>
    public ClassQuality[] PerClass { get; init; } = Array.Empty<ClassQuality>();

    /// <summary>AP(t) = TP / (TP + FP + FN) at each threshold (NaN with no object on either side).</summary>
    public double[] ApPerThreshold => TruePositives.Select(tp => InstancesTrue + InstancesPredicted - tp is var d
        && d > 0 ? (double)tp / d : double.NaN).ToArray();
    /// <summary>The mean of <see cref="ApPerThreshold"/>.</summary>
    public double Ap => ApPerThreshold.Average();
    /// <summary>AP at IoU 0.5.</summary>
    public double Ap50 => ApPerThreshold[0];
    /// <summary>AP at IoU 0.75.</summary>
    public double Ap75 => ApPerThreshold[5];
    /// <summary>Matched share of the predicted objects at IoU 0.5.</summary>
    public double Precision50 => InstancesPredicted == 0 ? double.NaN : (double)TruePositives[0] / InstancesPredicted;
    /// <summary>Matched share of the true objects at IoU 0.5.</summary>
    public double Recall50 => InstancesTrue == 0 ? double.NaN : (double)TruePositives[0] / InstancesTrue;
    /// <summary>F1 at IoU 0.5.</summary>
    public double F1At50 => InstancesTrue + InstancesPredicted == 0 ? double.NaN
        : 2.0 * TruePositives[0] / (InstancesTrue + InstancesPredicted);

    private double Mean(Func<ClassQuality, double> f, bool? things) =>
        PerClass.Where(c => things is null || c.IsThing == things).Select(f).Where(v => !double.IsNaN(v))
            .DefaultIfEmpty(double.NaN).Average();
    /// <summary>Panoptic quality over every class that appears.</summary>
    public double Pq => Mean(c => c.Pq, null);
    /// <summary>Segmentation quality over every class that appears.</summary>
    public double Sq => Mean(c => c.Sq, null);
    /// <summary>Recognition quality over every class that appears.</summary>
    public double Rq => Mean(c => c.Rq, null);
    /// <summary>Panoptic quality over the thing classes.</summary>
    public double PqThings => Mean(c => c.Pq, true);
    /// <summary>Panoptic quality over the stuff classes (NaN for instance data, which has none).</summary>
    public double PqStuff => Mean(c => c.Pq, false);

    /// <summary>The metrics with the documented keys (NaN as null).</summary>
    public JsonObject ToJsonObject()
    {
        static JsonNode? Num(double v) => double.IsNaN(v) || double.IsInfinity(v) ? null : JsonValue.Create(v);
        var o = new JsonObject
        {
            ["ap"] = Num(Ap), ["ap50"] = Num(Ap50), ["ap75"] = Num(Ap75),
            ["apPerThreshold"] = new JsonArray(ApPerThreshold.Select(Num).ToArray()),
            ["precision50"] = Num(Precision50), ["recall50"] = Num(Recall50), ["f1At50"] = Num(F1At50),
            ["pq"] = Num(Pq), ["sq"] = Num(Sq), ["rq"] = Num(Rq),
            ["pqThings"] = Num(PqThings), ["pqStuff"] = Num(PqStuff),
            ["instancesTrue"] = InstancesTrue, ["instancesPredicted"] = InstancesPredicted, ["images"] = Images,
            ["truePositives"] = new JsonArray(TruePositives.Select(v => (JsonNode?)JsonValue.Create(v)).ToArray()),
        };
        var perClass = new JsonObject();
        foreach (var c in PerClass)
            perClass[c.Name] = new JsonObject
            {
                ["pq"] = Num(c.Pq), ["sq"] = Num(c.Sq), ["rq"] = Num(c.Rq), ["thing"] = c.IsThing,
                ["tp"] = c.TruePositives, ["fp"] = c.FalsePositives, ["fn"] = c.FalseNegatives, ["iouSum"] = c.IoUSum,
            };
        o["perClassPq"] = perClass;
        return o;
    }

    /// <summary>Reads <see cref="ToJsonObject"/>'s output back (the counts; the ratios follow from them).</summary>
    public static InstanceMetrics FromJsonObject(JsonObject o) => new()
    {
        Images = o["images"]?.GetValue<int>() ?? 0,
        InstancesTrue = o["instancesTrue"]!.GetValue<long>(),
        InstancesPredicted = o["instancesPredicted"]!.GetValue<long>(),
        TruePositives = o["truePositives"]!.AsArray().Select(v => v!.GetValue<long>()).ToArray(),
        PerClass = (o["perClassPq"] as JsonObject ?? new JsonObject()).Select(kv => new ClassQuality(kv.Key,
            kv.Value!["thing"]!.GetValue<bool>(), kv.Value["tp"]!.GetValue<long>(), kv.Value["fp"]!.GetValue<long>(),
            kv.Value["fn"]!.GetValue<long>(), kv.Value["iouSum"]!.GetValue<double>())).ToArray(),
    };

    /// <summary>Two readable lines: detection, then panoptic quality.</summary>
    public override string ToString()
    {
        static string F(double v) => double.IsNaN(v) ? "-" : v.ToString("0.0000", CultureInfo.InvariantCulture);
        var sb = new StringBuilder();
        sb.AppendLine($"AP {F(Ap)}  AP50 {F(Ap50)}  AP75 {F(Ap75)}  precision50 {F(Precision50)}  recall50 "
            + $"{F(Recall50)}  F1@50 {F(F1At50)}  objects true {InstancesTrue}, predicted {InstancesPredicted}");
        sb.Append($"PQ {F(Pq)}  SQ {F(Sq)}  RQ {F(Rq)}");
        if (PerClass.Any(c => !c.IsThing)) sb.Append($"  PQ things {F(PqThings)}  PQ stuff {F(PqStuff)}");
        foreach (var c in PerClass.Where(_ => PerClass.Length > 1))
            sb.Append($"{Environment.NewLine}  {c.Name}: PQ {F(c.Pq)}  SQ {F(c.Sq)}  RQ {F(c.Rq)}");
        return sb.ToString();
    }
}
