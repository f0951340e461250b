using Segmentation.Training;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Cli;

/// <summary>
/// curves.png: two panels side by side, left the training (blue) and validation (orange) loss, right the validation
/// mean IoU (green) on a 0–1 axis with grid lines at every 0.1; one point per epoch.
/// </summary>
internal static class CurvePlot
{
    private const int PanelW = 400, PanelH = 300, Margin = 24;

    public static void Save(string path, IReadOnlyList<EpochRecord> history)
    {
        using var img = new Image<Rgb24>(2 * PanelW, PanelH, new Rgb24(255, 255, 255));
        var train = history.Select(h => h.TrainLoss).ToArray();
        var val = history.Select(h => h.ValLoss).ToArray();
        double maxLoss = train.Concat(val).Where(double.IsFinite).DefaultIfEmpty(1).Max();
        Axes(img, 0);
        Axes(img, PanelW);
        for (int g = 1; g < 10; g++) HLine(img, PanelW, 1 - g / 10.0, new Rgb24(230, 230, 230));
        Series(img, 0, train, maxLoss, new Rgb24(31, 119, 180));
        Series(img, 0, val, maxLoss, new Rgb24(255, 127, 14));
        Series(img, PanelW, history.Select(h => h.MeanIoU).ToArray(), 1, new Rgb24(44, 160, 44));
        img.SaveAsPng(path);
    }

    private static void Axes(Image<Rgb24> img, int x0)
    {
        var black = new Rgb24(0, 0, 0);
        for (int x = x0 + Margin; x < x0 + PanelW - Margin / 2; x++) img[x, PanelH - Margin] = black;
        for (int y = Margin / 2; y <= PanelH - Margin; y++) img[x0 + Margin, y] = black;
    }

    private static void HLine(Image<Rgb24> img, int x0, double fraction, Rgb24 color)
    {
        int y = Y(fraction);
        for (int x = x0 + Margin + 1; x < x0 + PanelW - Margin / 2; x++) img[x, y] = color;
    }

    private static int X(int x0, int i, int n) => x0 + Margin + (n <= 1 ? 0 : (int)Math.Round((double)i / (n - 1) * (PanelW - 1.5 * Margin)));
    private static int Y(double fraction) => PanelH - Margin - (int)Math.Round(Math.Clamp(fraction, 0, 1) * (PanelH - 1.5 * Margin));

    private static void Series(Image<Rgb24> img, int x0, double[] values, double max, Rgb24 color)
    {
        (int X, int Y)? prev = null;
        for (int i = 0; i < values.Length; i++)
        {
            if (!double.IsFinite(values[i])) { prev = null; continue; }
            var p = (X(x0, i, values.Length), Y(values[i] / max));
            Dot(img, p.Item1, p.Item2, color);
            if (prev is { } q) Line(img, q.X, q.Y, p.Item1, p.Item2, color);
            prev = p;
        }
    }

    private static void Dot(Image<Rgb24> img, int cx, int cy, Rgb24 c)
    {
        for (int dy = -2; dy <= 2; dy++)
            for (int dx = -2; dx <= 2; dx++)
                if (cx + dx >= 0 && cx + dx < img.Width && cy + dy >= 0 && cy + dy < img.Height) img[cx + dx, cy + dy] = c;
    }

    private static void Line(Image<Rgb24> img, int x0, int y0, int x1, int y1, Rgb24 c)
    {
        int dx = Math.Abs(x1 - x0), dy = -Math.Abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
        while (true)
        {
            for (int t = -1; t <= 0; t++) if (y0 + t >= 0 && y0 + t < img.Height) img[x0, y0 + t] = c;
            if (x0 == x1 && y0 == y1) break;
            int e2 = 2 * err;
            if (e2 >= dy) { err += dy; x0 += sx; }
            if (e2 <= dx) { err += dx; y0 += sy; }
        }
    }
}
