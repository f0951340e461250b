using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Inference;

namespace Segmentation.Cli;

/// <summary>
/// <c>segment bench instances</c>: the instance post-processing (softmax, seeds, watershed, small objects, numbering)
/// on a synthetic scene of touching nuclei-sized discs, timed over rounds. <c>--out</c> writes its logits as
/// <c>logits.npy</c> so <c>tools/bench/instances.sh</c> can run scikit-image's watershed on the same input, side by
/// side.
/// </summary>
internal static class BenchInstances
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("instances", "Time the instance post-processing (seeded watershed) on a synthetic scene "
            + "of touching objects; --out writes its input for tools/bench/instances.sh (scikit-image side by side).");
        var size = new Option<int>("--size") { DefaultValueFactory = _ => 512, Description = "Image side, pixels." };
        var objects = new Option<int>("--objects") { DefaultValueFactory = _ => 150, Description = "Discs placed." };
        var rounds = new Option<int>("--rounds") { DefaultValueFactory = _ => 20 };
        var outDir = new Option<string?>("--out") { Description =
            "Write logits.npy (3 x H x W float32), truth.png and ours.png (16-bit object numbers) here." };
        var json = new Option<bool>("--json");
        var overwrite = Cli.OverwriteFlag();
        foreach (var o in new Option[] { size, objects, rounds, outDir, json, overwrite }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            if (p.GetValue(outDir) is { } target)
                Cli.RefuseToReplace(target, new[] { "logits.npy", "truth.png", "ours.png" }, p.GetValue(overwrite));
            int n = p.GetValue(size), r = p.GetValue(rounds);
            if (n is < 16 or > 8192 || r < 1 || p.GetValue(objects) < 1)
                throw new OptionsException("--size 16..8192, --rounds and --objects at least 1.");
            var settings = new InstanceSettings();
            var (truth, logits) = Scene(n, p.GetValue(objects), settings);
            InstanceDecoding.Decode(logits, n, n, settings); // warm-up
            var times = new List<double>();
            InstancePrediction? decoded = null;
            for (int i = 0; i < r; i++)
            {
                var clock = Stopwatch.StartNew();
                decoded = InstanceDecoding.Decode(logits, n, n, settings);
                times.Add(clock.Elapsed.TotalMilliseconds);
            }
            times.Sort();
            double median = times[times.Count / 2];
            if (p.GetValue(outDir) is { } dir)
            {
                Directory.CreateDirectory(dir);
                WriteNpy(Path.Combine(dir, "logits.npy"), logits, 3, n, n);
                MaskWriter.SaveInstances(Path.Combine(dir, "truth.png"), truth, n, n);
                MaskWriter.SaveInstances(Path.Combine(dir, "ours.png"), decoded!.Objects, n, n);
            }
            var log = p.GetValue(json) ? ctx.Err : ctx.Out;
            log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"instance post-processing of a {n}x{n} image "
                + $"({truth.Max()} objects placed, {decoded!.Count} found): median {median:F2} ms (min {times[0]:F2}, "
                + $"max {times[^1]:F2}) over {r} rounds, one thread"));
            if (p.GetValue(json))
                ctx.Out.WriteLine(new JsonObject { ["size"] = n, ["objects"] = decoded.Count, ["medianMs"] = median,
                    ["minMs"] = times[0], ["maxMs"] = times[^1], ["rounds"] = r }.ToJsonString());
            return Cli.Ok;
        });
        return cmd;
    }

    /// <summary>
    /// Touching discs of radius 6 to 16 (nuclei at 20x in a 512x512 tile), their boundary target, and logits a
    /// trained model might give: a margin of 3 for the target class and uniform noise of +-1.5 on every class, so
    /// P(interior) varies from pixel to pixel and some pixels are misclassified.
    /// </summary>
    private static (int[] Truth, float[] Logits) Scene(int n, int objects, InstanceSettings s)
    {
        var rng = new Random(12345);
        var ids = new ushort[n * n];
        var centres = new List<(double X, double Y, double R)>();
        for (int k = 0; k < objects; k++)
        {
            double r = 6 + rng.NextDouble() * 10, cx, cy;
            if (centres.Count > 0 && rng.NextDouble() < 0.6)
            {
                var (px, py, pr) = centres[rng.Next(centres.Count)];
                double a = rng.NextDouble() * 2 * Math.PI, d = (pr + r) * 0.85;
                (cx, cy) = (px + d * Math.Cos(a), py + d * Math.Sin(a));
            }
            else (cx, cy) = (rng.NextDouble() * n, rng.NextDouble() * n);
            centres.Add((cx, cy, r));
            for (int y = Math.Max(0, (int)(cy - r)); y <= Math.Min(n - 1, (int)(cy + r)); y++)
                for (int x = Math.Max(0, (int)(cx - r)); x <= Math.Min(n - 1, (int)(cx + r)); x++)
                    if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r) ids[y * n + x] = (ushort)(k + 1);
        }
        var mask = Array.ConvertAll(ids, v => v == 0 ? (byte)0 : (byte)1);
        var target = InstanceTargets.Make(mask, ids, 1, n, n, s.BoundaryWidth, 2);
        var noise = new float[n * n];
        for (int i = 0; i < noise.Length; i++) noise[i] = (float)(rng.NextDouble() * 2 - 1);
        var logits = new float[3 * n * n];
        for (int i = 0; i < n * n; i++)
            for (int c = 0; c < 3; c++)
                logits[c * n * n + i] = (target[i] == c ? 3f : 0f) + 1.5f * noise[(i + c * 7919) % noise.Length];
        var truth = Array.ConvertAll(ids, v => (int)v);
        return (truth, logits);
    }

    /// <summary>A float32 array as NumPy's .npy (format 1.0, little-endian, C order).</summary>
    private static void WriteNpy(string path, float[] data, params int[] shape)
    {
        string header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({string.Join(", ", shape)}), }}";
        int total = 10 + header.Length + 1;
        header = header.PadRight(header.Length + (64 - total % 64) % 64) + "\n";
        AtomicFile.Write(path, stream =>
        {
            using var w = new BinaryWriter(stream, System.Text.Encoding.ASCII, leaveOpen: true);
            w.Write((byte)0x93); w.Write("NUMPY"u8.ToArray()); w.Write((byte)1); w.Write((byte)0);
            w.Write((ushort)header.Length); w.Write(System.Text.Encoding.ASCII.GetBytes(header));
            var bytes = new byte[data.Length * 4];
            Buffer.BlockCopy(data, 0, bytes, 0, bytes.Length);
            w.Write(bytes);
        });
    }
}
