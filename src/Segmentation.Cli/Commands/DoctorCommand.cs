using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Layers;
using Segmentation.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Cli;

/// <summary>
/// <c>segment doctor</c>: what the numbers depend on here (versions, device, threads, instruction sets, allocator),
/// and the convolution check of a model configuration (the trainer's own, run at the shapes that model sees) with a
/// verdict.
/// </summary>
internal static class DoctorCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("doctor",
            "Check this machine's kernels for a model configuration against float64, and print what the numbers "
                + "depend on. Defaults: the main job's model (segment train).");
        var m = ModelFlags.Add(cmd);
        var inChannels = new Option<int>("--in-channels") { DefaultValueFactory = _ => 3 };
        var classes = new Option<int>("--classes") { DefaultValueFactory = _ => 4 };
        var size = new Option<string>("--size") { Description = "Training input HxW (the crop, or the image size).",
            DefaultValueFactory = _ => $"{TrainCommand.ShapesDefaults.Size}x{TrainCommand.ShapesDefaults.Size}" };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _
            => TrainCommand.ShapesDefaults.BatchSize };
        var threads = new Option<int?>("--threads") { Description =
            "libtorch threads to check with (default: as training would run)." };
        var device = new Option<string>("--device") { Description = "auto, cpu or cuda.", DefaultValueFactory = _
            => "auto" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object." };
        var precision = new Option<string>("--precision") { Description =
            "auto, fp32, bf16 or fp16: the type the convolutions are checked in (as --precision trains them); auto "
                + "prints what training would pick and why, and checks that.", DefaultValueFactory = _ => "auto" };
        var (sweep, channels, sizes) = SweepFlags();
        foreach (var o in new Option[] { inChannels, classes, size, batch, threads, device, json, precision, sweep,
            channels, sizes }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var type = Precisions.Parse(p.GetValue(precision)!);
            if (p.GetValue(sweep) && type == Precision.Auto) type = Precision.Float32;
            if (p.GetValue(sweep)) return Sweep(ctx, p.GetValue(channels)!, p.GetValue(sizes)!, p.GetValue(threads),
                p.GetValue(json), type, Devices.Resolve(p.GetValue(device)));
            var options = ModelFlags.Read(p, m, shapes: true, p.GetValue(inChannels), p.GetValue(classes));
            var s = Size2.Parse(p.GetValue(size)!);
            if (p.GetValue(batch) < 1)
                throw new OptionsException($"--batch-size {p.GetValue(batch)} must be at least 1.");
            SetThreads(p.GetValue(threads));
            NativeRuntime.EnsureInitialized();
            var dev = Devices.Resolve(p.GetValue(device));
            AllocatorTuning.Apply();
            var facts = Facts(dev);
            using var model = new SegmentationModel(options);
            model.to(dev);
            var shape = new long[] { p.GetValue(batch), options.InChannels, s.Height, s.Width };
            type = Resolve(type, model, dev, shape, facts);
            model.Precision = type;
            model.train();
            var report = model.CheckLayers(shape, training: true)!;
            string verdict = Verdict(report);
            if (p.GetValue(json)) return PrintJson(ctx, verdict, type, report, facts);
            PrintTable(ctx, facts, $"model: {Cli.Shape(options)}, {type.ShortName()}; training input "
                + string.Join("x", shape), report, type, dev);
            ctx.Out.WriteLine($"verdict: {verdict}");
            return Cli.Ok;
        });
        return cmd;
    }

    /// <summary>auto becomes what training would pick, with the reason among the facts.</summary>
    private static Precision Resolve(Precision type, SegmentationModel model, Device dev, long[] shape,
        List<KeyValuePair<string, string>> facts)
    {
        if (type != Precision.Auto) return type;
        var decision = AutoPrecision.Choose(model, dev, shape);
        facts.Add(new("precision", $"auto chose {decision.Chosen.ShortName()}: {decision.Reason}"));
        return decision.Chosen;
    }

    /// <summary>--sweep and the grid it checks.</summary>
    private static (Option<bool> Sweep, Option<string> Channels, Option<string> Sizes) SweepFlags()
    {
        var sweep = new Option<bool>("--sweep") { Description =
            "Instead of a model: check every route on a grid of channel counts (--channels), sizes (--sizes) and "
                + "kernels (3x3, 3x3/s2, 7x7/s2, 1x1, 1x1/s2, transposed 2x2)." };
        var channels = new Option<string>("--channels") { Description =
            "Channel counts for --sweep (every in/out pair).", DefaultValueFactory = _
                => "1,3,4,8,12,16,20,24,40,48,64" };
        var sizes = new Option<string>("--sizes") { Description = "Input sizes for --sweep (square).",
            DefaultValueFactory = _ => "5,8,13,32" };
        return (sweep, channels, sizes);
    }

    private static void SetThreads(int? threads)
    {
        if (threads is not { } t) return;
        if (t < 1) throw new OptionsException($"--threads {t} must be at least 1.");
        set_num_threads(t);
    }

    /// <summary>The facts, the model line and the per-layer table of routes.</summary>
    private static void PrintTable(CommandContext ctx, List<KeyValuePair<string, string>> facts, string model,
        ConvolutionReport report, Precision type, TorchSharp.torch.Device dev)
    {
        int kw = facts.Max(f => f.Key.Length);
        foreach (var (k, v) in facts) ctx.Out.WriteLine($"{k.PadRight(kw)}  {v}");
        ctx.Out.WriteLine();
        ctx.Out.WriteLine(model);
        int w = Math.Max(5, report.Layers.Max(l => l.Layer.Length));
        ctx.Out.WriteLine($"{"layer".PadRight(w)}  {"checked at",-44}  {"direct",-18}  {"padded",-18}  "
            + $"{"unfold",-18}  route");
        foreach (var l in report.Layers)
            ctx.Out.WriteLine($"{l.Layer.PadRight(w)}  {l.Shapes[0],-44}  {Cell(l, ConvolutionRoute.Direct),-18}  "
                + $"{Cell(l, ConvolutionRoute.Padded),-18}  {Cell(l, ConvolutionRoute.Unfold),-18}  "
                + $"{l.Route.ToString().ToLowerInvariant()}");
        ctx.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"checked in {report.Seconds:F2} s; tolerance "
                + $"{ConvolutionCheck.ToleranceFor(type.ComputeType(), dev):0e0} of the float64 result's largest "
                + $"magnitude"));
        if (report.OtherLayers.Count == 0) return;
        ctx.Out.WriteLine();
        int ow = Math.Max(5, report.OtherLayers.Max(l => l.Layer.Length));
        ctx.Out.WriteLine($"{"layer".PadRight(ow)}  {"kind",-10}  {"checked at",-20}  {"libtorch",-10}  route");
        foreach (var l in report.OtherLayers)
            ctx.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{l.Layer.PadRight(ow)}  {l.Kind,-10}  {l.Shape,-20}  {l.Errors[0],-10:0.0e0}  "
                    + $"{(l.Route == 0 ? "libtorch" : "spelled out")}"));
    }

    /// <summary>The model check as one JSON object.</summary>
    private static int PrintJson(CommandContext ctx, string verdict, Precision type, ConvolutionReport report,
        List<KeyValuePair<string, string>> facts)
    {
        var o = new JsonObject { ["verdict"] = verdict, ["ok"] = true, ["precision"] = type.ShortName(),
            ["seconds"] = Math.Round(report.Seconds, 3) };
        foreach (var (k, v) in facts) o[k] = v;
        o["otherLayers"] = new JsonArray(report.OtherLayers.Select(l => (JsonNode?)new JsonObject
        {
            ["layer"] = l.Layer, ["kind"] = l.Kind, ["shape"] = l.Shape, ["route"] = l.Route == 0 ? "libtorch"
                : "spelled out",
            ["errors"] = new JsonArray(l.Errors.Select(e => (JsonNode?)e).ToArray()), ["tolerance"] = l.Tolerance,
        }).ToArray());
        o["layers"] = new JsonArray(report.Layers.Select(l => (JsonNode?)new JsonObject
        {
            ["layer"] = l.Layer, ["shape"] = l.Shapes[0].ToString(), ["route"] = l.Route.ToString().ToLowerInvariant(),
            ["tried"] = new JsonArray(l.Tried.Select(x => (JsonNode?)new JsonObject
            {
                ["route"] = x.Result.Route.ToString().ToLowerInvariant(), ["passed"] = x.Result.Passed,
                    ["finite"] = x.Result.Finite,
                ["outputError"] = x.Result.OutputError, ["inputGradientError"] = x.Result.InputGradientError,
                    ["weightGradientError"] = x.Result.WeightGradientError,
            }).ToArray()),
        }).ToArray());
        ctx.Out.WriteLine(o.ToJsonString());
        return Cli.Ok;
    }

    /// <summary>
    /// Every route on every (in, out, size, kernel) of a grid, against float64: how many shapes each route gets wrong
    /// here, and the first of them. What the README's figures on this machine's kernels come from.
    /// </summary>
    private static int Sweep(CommandContext ctx, string channelList, string sizeList, int? threads, bool asJson,
        Precision precision, Device device)
    {
        var cs = Ints(channelList, "--channels");
        var ss = Ints(sizeList, "--sizes");
        SetThreads(threads);
        NativeRuntime.EnsureInitialized();
        var kinds = new (string Name, int K, int S, int P, bool T)[] { ("3x3", 3, 1, 1, false),
            ("3x3/s2", 3, 2, 1, false), ("7x7/s2", 7, 2, 3, false), ("1x1", 1, 1, 0, false),
                ("1x1/s2", 1, 2, 0, false), ("T2x2", 2, 2, 0, true) };
        var wrong = Enum.GetValues<ConvolutionRoute>().ToDictionary(r => r, _ => new List<string>());
        // largest error among the shapes that passed
        var worst = Enum.GetValues<ConvolutionRoute>().ToDictionary(r => r, _ => 0.0);
        // not tried: known to kill the process
        var quarantined = Enum.GetValues<ConvolutionRoute>().ToDictionary(r => r, _ => 0);
        int total = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        foreach (var cin in cs) foreach (var cout in cs) foreach (var hw in ss) foreach (var k in kinds)
        {
            if (hw < k.K && !k.T) continue;
            var shape = new ConvolutionShape(k.T, cin, cout, k.K, k.S, k.P, 2, hw, hw, true, true,
                precision.ComputeType());
            total++;
            foreach (var route in Enum.GetValues<ConvolutionRoute>())
            {
                if (!ConvolutionCheck.Candidates(shape, device).Contains(route)) { quarantined[route]++; continue; }
                var r = ConvolutionCheck.Check(shape, route, device);
                if (r.Passed) worst[route] = Math.Max(worst[route],
                    Math.Max(r.OutputError, Math.Max(r.InputGradientError, r.WeightGradientError)));
                else wrong[route].Add(shape.ToString());
            }
            ctx.Status(ctx.Err, $"swept {total} shapes");
        }
        ctx.FinishLine();
        if (asJson) return SweepJson(ctx, total, precision, device, clock.Elapsed.TotalSeconds, wrong, quarantined,
            worst);
        ctx.Out.WriteLine($"{total} shapes (channels {channelList} in and out, sizes {sizeList}, {kinds.Length} "
            + $"kernels), batch 2, {precision.ShortName()} on {device}, {get_num_threads()} thread(s), against "
            + $"float64 with junk-filled allocations, {clock.Elapsed.TotalSeconds:F0} s; tolerance "
            + $"{ConvolutionCheck.ToleranceFor(precision.ComputeType(), device):0e0}:");
        foreach (var (route, list) in wrong)
        {
            var notTried = quarantined[route] > 0
                ? $", {quarantined[route]} not tried (1x1 stride-2 backward: the kernel crashes the process)" : "";
            var examples = list.Count > 0 ? $", e.g. {string.Join("; ", list.Take(4))}" : "";
            ctx.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {route.ToString().ToLowerInvariant(),-7} {list.Count,5} wrong (largest error of the rest "
                    + $"{worst[route]:0.0e0}){notTried}{examples}"));
        }
        return Cli.Ok;
    }

    private static int[] Ints(string list, string flag)
        => list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Select(x => int.TryParse(x, out var v) && v is > 0 and <= 4096 ? v
            : throw new OptionsException($"{flag} '{x}' is not a whole number from 1 to 4096.")).ToArray();

    /// <summary>The sweep as one JSON object.</summary>
    private static int SweepJson(CommandContext ctx, int total, Precision precision, Device device, double seconds,
        Dictionary<ConvolutionRoute, List<string>> wrong, Dictionary<ConvolutionRoute, int> quarantined,
            Dictionary<ConvolutionRoute, double> worst)
    {
        var o = new JsonObject
        {
            ["shapes"] = total, ["threads"] = get_num_threads(), ["device"] = device.ToString(),
                ["precision"] = precision.ShortName(),
            ["seconds"] = Math.Round(seconds, 1),
        };
        foreach (var (route, list) in wrong)
            o[route.ToString().ToLowerInvariant()] = new JsonObject
            {
                ["wrong"] = list.Count, ["notTried"] = quarantined[route], ["largestPassingError"] = worst[route],
                ["first"] = new JsonArray(list.Take(10).Select(x => (JsonNode?)x).ToArray()),
            };
        ctx.Out.WriteLine(o.ToJsonString());
        return Cli.Ok;
    }

    /// <summary>The facts a numerical result depends on, in print order.</summary>
    internal static List<KeyValuePair<string, string>> Facts(Device dev)
    {
        var torchSharp = typeof(TorchSharp.torch).Assembly.GetName().Version;
        return new()
        {
            new("segmentation", typeof(SegmentationModel).Assembly.GetName().Version?.ToString(3) ?? "?"),
            new("torchsharp", torchSharp?.ToString(3) ?? "?"),
            new("libtorch", __version__ ?? "?"),
            new("device", dev.ToString()),
            new("cuda", cuda.is_available() ? $"available, {cuda.device_count()} device(s)" : "not available"),
            new("cpu", $"{NativeRuntime.CpuModel()}, {Environment.ProcessorCount} logical core(s)"),
            new("threads", $"{get_num_threads()} (libtorch intra-op)"),
            new("load", LoadAdvice()),
            new("aten cpu capability", NativeRuntime.CpuCapability() ?? "unknown"),
            new("onednn isa", NativeRuntime.OneDnnIsa()),
            new("allocator", AllocatorTuning.Status),
            new("libtorch log level", NativeRuntime.LogLevel is { } lv
                ? $"{lv} ({(lv >= 2 ? "warnings silenced" : "warnings shown")})" : "unknown"),
        };
    }

    /// <summary>The machine's load and what --threads auto makes of it: on a busy machine, more threads than free
    /// cores can make a step several times slower.</summary>
    internal static string LoadAdvice()
    {
        var (auto, reason) = CpuThreads.Auto();
        if (CpuThreads.BusyCores() is null) return $"unknown; --threads auto uses {auto} ({reason})";
        return auto < Environment.ProcessorCount
            ? $"{reason}: the machine is busy, so --threads auto (the default) uses {auto}; measure another count with "
                + $"segment bench train --threads N"
            : $"{reason}: --threads auto (the default) uses all {auto}";
    }

    private static string Cell(LayerRoute l, ConvolutionRoute route)
    {
        var tries = l.Tried.Where(t => t.Result.Route == route).Select(t => t.Result).ToList();
        if (tries.Count == 0) return "-";
        if (tries.Any(r => !r.Finite)) return "FAIL non-finite";
        double e = tries.Max(r => Math.Max(r.OutputError, Math.Max(r.InputGradientError, r.WeightGradientError)));
        return string.Create(CultureInfo.InvariantCulture, $"{(tries.All(r => r.Passed) ? "ok" : "FAIL")} {e:0.0e0}");
    }

    private static string Verdict(ConvolutionReport report)
    {
        var rerouted = report.Layers.Where(l => l.Route != ConvolutionRoute.Direct
            && l.Tried.Any(t => t.Result.Route == ConvolutionRoute.Direct)).ToList();
        var untried = report.Layers.Where(l => !l.Tried.Any(t => t.Result.Route == ConvolutionRoute.Direct)).ToList();
        string crashing = untried.Count == 0 ? ""
            : $"; {untried.Count} take "
            + $"{string.Join(", ", untried.Select(l => $"{l.Layer}: {l.Route.ToString().ToLowerInvariant()}"))} "
            + $"without trying the direct kernel, which crashes the process for 1x1 stride-2 gradients on the CPU";
        int spelled = report.OtherLayers.Count(l => l.Route != 0);
        string others = report.OtherLayers.Count == 0 ? ""
            : spelled == 0 ? $"; so do its {report.OtherLayers.Count} other checked layers"
            : $"; {spelled} of its {report.OtherLayers.Count} other checked layers take the spelled-out computation "
            + $"(libtorch's was wrong)";
        if (rerouted.Count == 0 && untried.Count == 0)
            return $"OK: all {report.Layers.Count} convolutions match float64 with libtorch's direct kernels{others}";
        string wrong = rerouted.Count == 0 ? ""
            : $"; the direct kernel was wrong for {rerouted.Count} "
            + $"({string.Join(", ", rerouted.Select(l => $"{l.Layer}: {l.Route.ToString().ToLowerInvariant()}"))}), "
            + $"so training uses the route shown";
        return $"OK: all {report.Layers.Count} convolutions have a route that matches float64{wrong}{crashing}{others}";
    }
}
