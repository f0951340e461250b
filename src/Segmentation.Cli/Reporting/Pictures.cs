using ScottPlot;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Training;
using SkiaSharp;

namespace Segmentation.Cli;

/// <summary>
/// The run's pictures, drawn with ScottPlot 5 (and SkiaSharp for the panels' captions): the curves with the best epoch
/// marked, the row-normalised confusion matrix with class names, and validation panels with a class-colour legend.
/// </summary>
internal static class Pictures
{
    public static readonly Color Train = Color.FromHex("#1f77b4"), Val = Color.FromHex("#ff7f0e"),
        MeanIoU = Color.FromHex("#2ca02c"), Ap = Color.FromHex("#9467bd");

    /// <summary>Losses (left axis) and validation mean IoU (right axis, 0-1) per epoch, and AP for objects; the best
    /// epoch (by AP for objects) is a dashed line.</summary>
    public static byte[] Curves(IReadOnlyList<EpochRecord> history, int width = 900, int height = 450)
    {
        var plot = new Plot();
        double[] epochs = history.Select(h => (double)h.Epoch).ToArray();
        Series(plot, epochs, history.Select(h => h.TrainLoss), "train loss", Train, right: false);
        Series(plot, epochs, history.Select(h => h.ValLoss), "validation loss", Val, right: false);
        Series(plot, epochs, history.Select(h => h.MeanIoU), "validation mean IoU", MeanIoU, right: true);
        bool objects = history.Any(h => double.IsFinite(h.Ap));
        if (objects) Series(plot, epochs, history.Select(h => h.Ap), "validation AP (IoU 0.50:0.95)", Ap, right: true);
        Func<EpochRecord, double> score = objects ? h => h.Ap : h => h.MeanIoU;
        var evaluated = history.Where(h => double.IsFinite(score(h))).ToList();
        if (evaluated.Count > 0)
        {
            var best = evaluated.MaxBy(score)!;
            var line = plot.Add.VerticalLine(best.Epoch);
            line.LinePattern = LinePattern.Dashed;
            line.Color = Colors.Gray;
            line.LegendText = $"best epoch {best.Epoch}: {(objects ? "AP" : "mean IoU")} {score(best):F4}";
        }
        plot.Axes.Bottom.Label.Text = "epoch";
        plot.Axes.Left.Label.Text = "loss";
        plot.Axes.Right.Label.Text = objects ? "mean IoU, AP" : "mean IoU";
        plot.Axes.SetLimitsY(0, 1, plot.Axes.Right);
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plot.ShowLegend(Edge.Bottom);
        return plot.GetImage(width, height).GetImageBytes(ImageFormat.Png);
    }

    private static void Series(Plot plot, double[] x, IEnumerable<double> y, string label, Color color, bool right)
    {
        var points = x.Zip(y).Where(p => double.IsFinite(p.Second)).ToArray();
        if (points.Length == 0) return;
        var s = plot.Add.Scatter(points.Select(p => p.First).ToArray(), points.Select(p => p.Second).ToArray(), color);
        s.LegendText = label;
        s.LineWidth = 2;
        s.MarkerSize = 5;
        if (right) s.Axes.YAxis = plot.Axes.Right;
    }

    /// <summary>The confusion matrix, each row (a true class) divided by its pixels: rows true, columns predicted, with
    /// the shares written in.</summary>
    public static byte[] Confusion(SegmentationMetrics m, int size = 640)
    {
        int n = m.ConfusionMatrix.GetLength(0);
        var shares = new double[n, n];
        for (int t = 0; t < n; t++)
        {
            double row = 0;
            for (int p = 0; p < n; p++) row += m.ConfusionMatrix[t, p];
            for (int p = 0; p < n; p++) shares[t, p] = row > 0 ? m.ConfusionMatrix[t, p] / row : double.NaN;
        }
        var plot = new Plot();
        var colormap = new ScottPlot.Colormaps.Viridis();
        for (int t = 0; t < n; t++)
            for (int p = 0; p < n; p++)
            {
                // True class t is row t from the top: y = n - 1 - t.
                var cell = plot.Add.Rectangle(p - 0.5, p + 0.5, n - 1.5 - t, n - 0.5 - t);
                cell.FillStyle.Color = double.IsFinite(shares[t, p]) ? colormap.GetColor(shares[t, p])
                    : Colors.LightGray;
                cell.LineStyle.Width = 0;
                if (n > 24 || !double.IsFinite(shares[t, p])) continue;
                var text =
                    plot.Add.Text(shares[t, p].ToString("0.00", System.Globalization.CultureInfo.InvariantCulture), p,
                        n - 1 - t);
                text.LabelFontColor = shares[t, p] > 0.6 ? Colors.Black : Colors.White;
                text.LabelAlignment = Alignment.MiddleCenter;
                text.LabelFontSize = n > 12 ? 9 : 12;
            }
        var ticks = Enumerable.Range(0, n).Select(i => (double)i).ToArray();
        plot.Axes.Bottom.SetTicks(ticks, m.ClassNames);
        plot.Axes.Left.SetTicks(ticks.Select(t => n - 1 - t).ToArray(), m.ClassNames);
        plot.Axes.Bottom.TickLabelStyle.Rotation = -45;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleRight;
        // room for the slanted names
        plot.Axes.Bottom.MinimumSize = 12 + 7 * m.ClassNames.Select(c => c.Length).DefaultIfEmpty(4).Max();
        plot.Axes.Bottom.Label.Text = "predicted";
        plot.Axes.Left.Label.Text = "true";
        plot.Axes.SetLimits(-0.5, n - 0.5, -0.5, n - 0.5);
        plot.Title("confusion matrix, rows normalised (viridis: 0 dark, 1 yellow)");
        return plot.GetImage(size, size).GetImageBytes(ImageFormat.Png);
    }

    /// <summary>A validation panel (image | truth | prediction | errors) with captions above and a legend of the
    /// classes' colours below.</summary>
    public static byte[] Panel(Preview panel, DatasetDescription d)
    {
        const int Caption = 22, Swatch = 14, LegendRow = 20;
        int perRow = Math.Max(1, panel.Width / 160);
        int legendRows = (d.Classes + 2 + perRow - 1) / perRow; // the classes, then "wrong" and "ignored"
        int width = Math.Max(panel.Width, 480), height = Caption + panel.Height + 8 + legendRows * LegendRow;
        using var surface = SKSurface.Create(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul));
        var canvas = surface.Canvas;
        canvas.Clear(SKColors.White);
        var pixels = new byte[panel.Width * panel.Height * 4];
        for (int i = 0; i < panel.Width * panel.Height; i++)
            (pixels[i * 4], pixels[i * 4 + 1], pixels[i * 4 + 2], pixels[i * 4 + 3]) = (panel.Rgb[i * 3],
                panel.Rgb[i * 3 + 1], panel.Rgb[i * 3 + 2], 255);
        using (var bitmap = new SKBitmap(new SKImageInfo(panel.Width, panel.Height, SKColorType.Rgba8888,
            SKAlphaType.Premul)))
        {
            System.Runtime.InteropServices.Marshal.Copy(pixels, 0, bitmap.GetPixels(), pixels.Length);
            canvas.DrawBitmap(bitmap, 0, Caption);
        }
        using var font = new SKFont(SKTypeface.Default, 13);
        using var ink = new SKPaint { Color = SKColors.Black, IsAntialias = true };
        int quarter = (panel.Width - 3 * Previews.Gap) / 4;
        string[] captions = { panel.Name, "truth", "prediction", "errors" };
        for (int i = 0; i < 4; i++) canvas.DrawText(captions[i], i * (quarter + Previews.Gap) + 2, Caption - 6, font,
            ink);
        var entries = d.ClassNames.Zip(d.ClassColors, (n, c) => (n, c))
            .Append(("wrong", Previews.WrongFor(d.ClassColors)))
            .Append(("ignored", Previews.Ignored)).ToList();
        for (int e = 0; e < entries.Count; e++)
        {
            int x = e % perRow * 160 + 2, y = Caption + panel.Height + 8 + e / perRow * LegendRow;
            using var fill = new SKPaint { Color = new SKColor(entries[e].Item2.R, entries[e].Item2.G,
                entries[e].Item2.B) };
            canvas.DrawRect(x, y, Swatch, Swatch, fill);
            canvas.DrawText(entries[e].Item1, x + Swatch + 6, y + Swatch - 2, font, ink);
        }
        using var image = surface.Snapshot();
        using var png = image.Encode(SKEncodedImageFormat.Png, 100);
        return png.ToArray();
    }
}
