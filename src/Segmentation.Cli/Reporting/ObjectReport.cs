using System.Globalization;
using System.Net;
using System.Text;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Inference;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Cli;

/// <summary>
/// The parts of <c>segment report</c>'s page for instance and panoptic runs: the object metrics as a table with AP per
/// IoU threshold as a plot, and the worst validation images ranked by their own AP (not by per-class IoU, which counts
/// the boundary class and paints every predicted boundary ring wrong), each as image | true objects | predicted
/// objects, a colour and an outline per object.
/// </summary>
internal static class ObjectReport
{
    private static string E(string? text) => WebUtility.HtmlEncode(text ?? "");

    private static string F(double v) => double.IsFinite(v) ? v.ToString("F4", CultureInfo.InvariantCulture) : "-";

    /// <summary>The object metrics: a table and the AP-per-threshold plot (inline SVG).</summary>
    public static string Metrics(InstanceMetrics m)
    {
        var html = new StringBuilder("<h2>Objects</h2><table class=\"objects\"><tr><th>metric</th><th>value</th></tr>");
        foreach (var (name, value) in new[] { ("AP (IoU 0.50:0.95)", m.Ap), ("AP50", m.Ap50), ("AP75", m.Ap75),
            ("precision at 0.5", m.Precision50), ("recall at 0.5", m.Recall50), ("F1 at 0.5", m.F1At50),
            ("PQ", m.Pq), ("SQ", m.Sq), ("RQ", m.Rq) })
            html.Append("<tr><td>").Append(E(name)).Append("</td><td>").Append(F(value)).Append("</td></tr>");
        html.Append("<tr><td>objects true / predicted</td><td>").Append(m.InstancesTrue.ToString("N0",
            CultureInfo.InvariantCulture)).Append(" / ").Append(m.InstancesPredicted.ToString("N0",
            CultureInfo.InvariantCulture)).Append("</td></tr></table>");
        return html.Append(ApPlot(m.ApPerThreshold)).ToString();
    }

    /// <summary>AP at each IoU threshold 0.50..0.95 as a line on a 0-1 scale, inline SVG.</summary>
    private static string ApPlot(IReadOnlyList<double> ap)
    {
        const int w = 480, h = 240, left = 50, bottom = 30, top = 10, right = 10;
        double X(int i) => left + i * (w - left - right) / (double)(ap.Count - 1);
        double Y(double v) => top + (1 - v) * (h - top - bottom);
        var inv = CultureInfo.InvariantCulture;
        var svg = new StringBuilder($"<figure><svg class=\"ap-plot\" width=\"{w}\" height=\"{h}\" "
            + "xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"AP per IoU threshold\">");
        for (int k = 0; k <= 4; k++)
            svg.Append(string.Create(inv, $"<line x1=\"{left}\" x2=\"{w - right}\" y1=\"{Y(k / 4.0):F1}\" "
                + $"y2=\"{Y(k / 4.0):F1}\" stroke=\"#ddd\"/><text x=\"{left - 6}\" y=\"{Y(k / 4.0) + 4:F1}\" "
                + $"font-size=\"11\" text-anchor=\"end\">{k / 4.0:F2}</text>"));
        for (int i = 0; i < ap.Count; i++)
            svg.Append(string.Create(inv, $"<text x=\"{X(i):F1}\" y=\"{h - 12}\" font-size=\"11\" "
                + $"text-anchor=\"middle\">{0.5 + 0.05 * i:F2}</text><circle cx=\"{X(i):F1}\" "
                + $"cy=\"{Y(double.IsFinite(ap[i]) ? ap[i] : 0):F1}\" r=\"3\" fill=\"#1f77b4\"/>"));
        svg.Append("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"")
            .Append(string.Join(" ", ap.Select((v, i) => string.Create(inv,
                $"{X(i):F1},{Y(double.IsFinite(v) ? v : 0):F1}")))).Append("\"/></svg>")
            .Append("<figcaption>AP at each IoU threshold (the mean of the ten is AP)</figcaption></figure>");
        return svg.ToString();
    }

    /// <summary>The <paramref name="count"/> validation images with the lowest AP of their own, each with its objects
    /// drawn.</summary>
    public static string Worst(Predictor predictor, SegmentationDataset val, int count)
    {
        var scored = new List<(double Ap, InstanceMetrics Metrics, Sample Sample, int[] Predicted)>();
        for (int i = 0; i < val.Count; i++)
        {
            var sample = val.Load(i);
            var truth = Array.ConvertAll(sample.Instances ?? new ushort[sample.Mask.Length], v => (int)v);
            var predicted = predictor.Predict(sample.Image).Instances?.Objects ?? new int[truth.Length];
            var scorer = InstanceScorer.ForObjects();
            scorer.Add(truth, null, predicted, null);
            var m = scorer.Compute();
            // an image with no objects on either side is right
            scored.Add((m.InstancesTrue + m.InstancesPredicted == 0 ? 1 : m.Ap, m, sample, predicted));
            scored = scored.OrderBy(s => s.Ap).Take(count).ToList(); // only the worst few in memory
        }
        var html = new StringBuilder($"<h2>The {scored.Count} worst validation images, by their own AP</h2>"
            + "<p>Each: the image, its true objects, the predicted objects (a colour and an outline per object).</p>");
        foreach (var (ap, m, sample, predicted) in scored)
        {
            var truth = Array.ConvertAll(sample.Instances ?? new ushort[sample.Mask.Length], v => (int)v);
            html.Append("<figure class=\"objects-panel\">")
                .Append(Img(Panel(sample.Image, truth, predicted), sample.Name)).Append("<figcaption>")
                .Append(E(string.Create(CultureInfo.InvariantCulture, $"{sample.Name}: AP {ap:F4}, AP50 {F(m.Ap50)}, "
                    + $"{m.InstancesTrue} true and {m.InstancesPredicted} predicted objects")))
                .Append("</figcaption></figure>");
        }
        return html.ToString();
    }

    /// <summary>image | true objects | predicted objects, side by side with a gap, as PNG.</summary>
    private static byte[] Panel(ImageBuffer image, int[] truth, int[] predicted)
    {
        image = image.ForDisplay();
        int w = image.Width, h = image.Height, gap = 4, total = 3 * w + 2 * gap;
        var plain = Shared.InstanceOverlay.Draw(image.Pixels, image.Channels, new int[w * h], w, h, alpha: 0);
        var parts = new[] { plain, Shared.InstanceOverlay.Draw(image.Pixels, image.Channels, truth, w, h),
            Shared.InstanceOverlay.Draw(image.Pixels, image.Channels, predicted, w, h) };
        var rgb = new byte[total * h * 3];
        Array.Fill(rgb, (byte)255);
        for (int p = 0; p < 3; p++)
            for (int y = 0; y < h; y++)
                Array.Copy(parts[p], y * w * 3, rgb, (y * total + p * (w + gap)) * 3, w * 3);
        using var picture = Image.LoadPixelData<Rgb24>(rgb, total, h);
        using var png = new MemoryStream();
        picture.SaveAsPng(png);
        return png.ToArray();
    }

    private static string Img(byte[] png, string alt)
        => $"<img alt=\"{E(alt)}\" src=\"data:image/png;base64,{Convert.ToBase64String(png)}\">";
}
