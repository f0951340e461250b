using Segmentation.Checkpoints;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Cli;

/// <summary>
/// curves.png: two panels side by side, left the training (blue) and validation (orange) loss, right the validation
/// mean IoU (green) on a 0–1 axis with grid lines at every 0.1; one point per epoch. Titles, legend and axis values
/// are drawn with a small built-in 5x7 font, so no font file is needed.
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

        var black = new Rgb24(0, 0, 0);
        string epochs = history.Count == 0 ? "0" : history[^1].Epoch.ToString(System.Globalization.CultureInfo.InvariantCulture);
        Text(img, Margin + 8, 4, "train loss", new Rgb24(31, 119, 180));
        Text(img, Margin + 8 + 12 * 11, 4, "val loss", new Rgb24(255, 127, 14));
        Text(img, PanelW + Margin + 8, 4, "mean IoU", new Rgb24(44, 160, 44));
        Text(img, 2, Y(1) + 12, maxLoss.ToString(maxLoss >= 10 ? "0" : "0.00", System.Globalization.CultureInfo.InvariantCulture), black, 1);
        Text(img, PanelW + 2, Y(1) + 2, "1.0", black, 1);
        Text(img, PanelW + 2, Y(0.5) - 3, "0.5", black, 1);
        foreach (var x0 in new[] { 0, PanelW })
        {
            Text(img, x0 + 2, Y(0) - 7, "0", black, 1);
            Text(img, x0 + PanelW / 2 - 15, PanelH - Margin + 6, "epoch", black, 1);
            Text(img, x0 + PanelW - Margin / 2 - 6 * epochs.Length, PanelH - Margin + 6, epochs, black, 1);
        }
        AtomicFile.Write(path, stream => img.SaveAsPng(stream));
    }

    // 5x7 glyphs, one string of 35 cells per character ('#' = ink), for the few characters the plot writes.
    private static readonly Dictionary<char, string> Glyphs = new()
    {
        ['0'] = ".###.#...##..###.#.###..##...#.###.", ['1'] = "..#...##....#....#....#....#...###.",
        ['2'] = ".###.#...#....#...#...#...#...#####", ['3'] = "#####...#...#.....#.....##...#.###.",
        ['4'] = "...#...##..#.#.#..#.#####...#....#.", ['5'] = "######....####.....#....##...#.###.",
        ['6'] = "..##..#...#....####.#...##...#.###.", ['7'] = "#####....#...#...#...#....#....#...",
        ['8'] = ".###.#...##...#.###.#...##...#.###.", ['9'] = ".###.#...##...#.####....#...#..##..",
        ['.'] = "..........................##...##..", ['a'] = "...........###.....#.#####...#.####",
        ['c'] = "...........###.#....#....#...#.###.", ['e'] = "...........###.#...#######.....###.",
        ['h'] = "#....#....#.##.##..##...##...##...#", ['i'] = "..#........##....#....#....#...###.",
        ['l'] = ".##....#....#....#....#....#...###.", ['m'] = "..........##.#.#.#.##.#.##...##...#",
        ['n'] = "..........#.##.##..##...##...##...#", ['o'] = "...........###.#...##...##...#.###.",
        ['p'] = "..........####.#...#####.#....#....", ['r'] = "..........#.##.##..##....#....#....",
        ['s'] = "...........#####.....###.....#####.", ['t'] = ".#....#...###...#....#....#..#..##.",
        ['v'] = "..........#...##...##...#.#.#...#..", ['I'] = ".###...#....#....#....#....#...###.",
        ['U'] = "#...##...##...##...##...##...#.###.", [' '] = "...................................",
    };

    private static void Text(Image<Rgb24> img, int x, int y, string text, Rgb24 color, int scale = 2)
    {
        foreach (var ch in text)
        {
            if (Glyphs.TryGetValue(ch, out var g))
                for (int i = 0; i < 35 && i < g.Length; i++)
                    if (g[i] == '#')
                        for (int sy = 0; sy < scale; sy++)
                            for (int sx = 0; sx < scale; sx++)
                            {
                                int px = x + (i % 5) * scale + sx, py = y + (i / 5) * scale + sy;
                                if (px >= 0 && px < img.Width && py >= 0 && py < img.Height) img[px, py] = color;
                            }
            x += 6 * scale;
        }
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
