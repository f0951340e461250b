using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Cli;

/// <summary>Flags of sliding-window and TTA prediction.</summary>
internal sealed class PredictFlags
{
    public required Option<string> Checkpoint { get; init; }
    public required Option<string?> Slide { get; init; }
    public required Option<string?> Stride { get; init; }
    public required Option<string?> Tta { get; init; }
    public required Option<string> Device { get; init; }
    public required Option<string> Precision { get; init; }

    public static PredictFlags Add(Command cmd)
    {
        var f = new PredictFlags
        {
            Checkpoint = new Option<string>("--checkpoint") { Description = "A .ckpt written by 'segment train'.", Required = true },
            Slide = new Option<string?>("--slide") { Description = "Sliding-window size HxW (logits averaged where windows overlap)." },
            Stride = new Option<string?>("--stride") { Description = "Sliding-window stride HxW (default: 2/3 of the window)." },
            Tta = new Option<string?>("--tta") { Description = "Test-time augmentation: flip." },
            Device = new Option<string>("--device") { Description = "auto, cpu or cuda.", DefaultValueFactory = _ => "auto" },
            Precision = new Option<string>("--precision") { Description = "fp32, bf16 or fp16: the convolutions' arithmetic (any checkpoint runs in any).", DefaultValueFactory = _ => "fp32" },
        };
        foreach (var o in new Option[] { f.Checkpoint, f.Slide, f.Stride, f.Tta, f.Device, f.Precision }) cmd.Options.Add(o);
        return f;
    }

    public Predictor Open(ParseResult p, Checkpoint ckpt)
    {
        var tta = p.GetValue(Tta);
        if (tta is not null && tta != "flip") throw new OptionsException($"--tta '{tta}' is not supported; use --tta flip.");
        if (p.GetValue(Stride) is not null && p.GetValue(Slide) is null) throw new OptionsException("--stride needs --slide.");
        return new Predictor(ckpt, new PredictorOptions
        {
            Device = p.GetValue(Device)!, FlipTta = tta == "flip", Size = ckpt.Trainer.Size, Precision = Precisions.Parse(p.GetValue(Precision)!),
            Window = p.GetValue(Slide) is { } s ? Size2.Parse(s) : null, Stride = p.GetValue(Stride) is { } st ? Size2.Parse(st) : null,
        });
    }
}

/// <summary><c>segment eval</c>: metrics of a checkpoint on a data set.</summary>
internal static class EvalCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("eval", "Evaluate a checkpoint (mean IoU and the rest) on a data set; by default its own validation data.");
        var f = PredictFlags.Add(cmd);
        var data = new Option<string?>("--data") { Description = "Folder with images/ and masks/ (a folder with train/ and val/ is read from val/), or builtin:shapes. Default: the checkpoint's validation data." };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 1 };
        var workers = new Option<int>("--workers") { DefaultValueFactory = _ => 0 };
        var json = new Option<bool>("--json") { Description = "Print the metrics as JSON on the last line." };
        foreach (var o in new Option[] { data, batch, workers, json }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var ckpt = Checkpoint.Load(p.GetValue(f.Checkpoint)!);
            var spec = p.GetValue(data) ?? ckpt.ValOrigin ?? throw new OptionsException("The checkpoint has no validation data; give --data.");
            if (DataFlags.IsSplitFolder(spec)) spec = Path.Combine(spec, "val");
            var set = SegmentationDataset.FromOrigin(spec, new DatasetOptions { Description = ckpt.Dataset });
            using var predictor = f.Open(p, ckpt);
            var clock = Stopwatch.StartNew();
            var metrics = predictor.Evaluate(set, p.GetValue(batch), p.GetValue(workers));
            var log = p.GetValue(json) ? ctx.Err : ctx.Out;
            log.WriteLine($"{set.Origin}: {set.Count} images in {clock.Elapsed.TotalSeconds:F1} s");
            log.Write(metrics.ToString());
            if (p.GetValue(json)) ctx.Out.WriteLine(metrics.ToJson());
            return Cli.Ok;
        });
        return cmd;
    }
}

/// <summary><c>segment predict</c>: masks for images.</summary>
internal static class PredictCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("predict", "Predict masks: <name>.png holds class indices; --color, --overlay and --probabilities add pictures.");
        var f = PredictFlags.Add(cmd);
        var input = new Option<string>("--input") { Description = "An image file or a folder of images.", Required = true };
        var outDir = new Option<string>("--out") { Description = "Output folder.", Required = true };
        var overlay = new Option<bool>("--overlay") { Description = "Also write <name>_overlay.png (classes blended over the image)." };
        var color = new Option<bool>("--color") { Description = "Also write <name>_color.png (each class in its colour)." };
        var probabilities = new Option<bool>("--probabilities") { Description = "Also write <name>_prob_<class>.png per class (probability x 255)." };
        foreach (var o in new Option[] { input, outDir, overlay, color, probabilities }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var ckpt = Checkpoint.Load(p.GetValue(f.Checkpoint)!);
            var path = p.GetValue(input)!;
            var files = Directory.Exists(path)
                ? Directory.EnumerateFiles(path).Where(x => Path.GetExtension(x).ToLowerInvariant() is ".png" or ".jpg" or ".jpeg" or ".bmp" or ".gif" or ".tif" or ".tiff" or ".webp" or ".tga").Order().ToList()
                : File.Exists(path) ? new List<string> { path } : throw new DataException($"{path}: no such file or folder.", path);
            if (files.Count == 0) throw new DataException($"{path}: no images found.", path);
            var dir = p.GetValue(outDir)!;
            var outputs = OutputNames(files, p.GetValue(color), p.GetValue(overlay), p.GetValue(probabilities) ? ckpt.Dataset.Classes : 0);
            CheckOutputs(files, outputs, dir);
            Directory.CreateDirectory(dir);
            using var predictor = f.Open(p, ckpt);
            var reader = new ImageReader();
            var d = predictor.Description;
            var clock = Stopwatch.StartNew();
            foreach (var file in files)
            {
                var image = reader.ReadImage(file, d.InChannels);
                var pred = predictor.Predict(image, p.GetValue(probabilities));
                var stem = Path.GetFileNameWithoutExtension(file);
                MaskWriter.SaveLabels(Path.Combine(dir, stem + ".png"), pred.Labels, pred.Width, pred.Height);
                if (p.GetValue(color)) MaskWriter.SaveColorized(Path.Combine(dir, stem + "_color.png"), pred.Labels, pred.Width, pred.Height, d.ClassColors);
                if (p.GetValue(overlay)) MaskWriter.SaveOverlay(Path.Combine(dir, stem + "_overlay.png"), image, pred.Labels, d.ClassColors);
                if (pred.Probabilities is { } probs)
                    for (int c = 0; c < pred.Classes; c++)
                        MaskWriter.SaveProbability(Path.Combine(dir, $"{stem}_prob_{c}.png"), probs, c, pred.Width, pred.Height);
                ctx.Status(ctx.Out, $"{Path.GetFileName(file)} -> {stem}.png");
            }
            ctx.FinishLine();
            ctx.Out.WriteLine($"predicted {files.Count} image(s) in {clock.Elapsed.TotalSeconds:F1} s into {dir}");
            return Cli.Ok;
        });
        return cmd;
    }

    /// <summary>For each input, the names of the files predict writes for it (the mask first).</summary>
    internal static List<List<string>> OutputNames(List<string> inputs, bool color, bool overlay, int probabilityClasses) =>
        inputs.Select(file =>
        {
            var stem = Path.GetFileNameWithoutExtension(file);
            var names = new List<string> { stem + ".png" };
            if (color) names.Add(stem + "_color.png");
            if (overlay) names.Add(stem + "_overlay.png");
            for (int c = 0; c < probabilityClasses; c++) names.Add($"{stem}_prob_{c}.png");
            return names;
        }).ToList();

    /// <summary>
    /// Refuses, before anything is written, two inputs whose outputs share a name (a.png and a.jpg; a.png's overlay and
    /// an input named a_overlay.png) and outputs that would overwrite an input.
    /// </summary>
    internal static void CheckOutputs(List<string> inputs, List<List<string>> outputs, string dir)
    {
        var owner = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var clashes = new List<string>();
        for (int i = 0; i < inputs.Count; i++)
            foreach (var name in outputs[i])
                if (!owner.TryAdd(name, inputs[i]) && clashes.Count < 5)
                    clashes.Add($"{Path.GetFileName(owner[name])} and {Path.GetFileName(inputs[i])} would both write {name}");
        if (clashes.Count > 0)
            throw new DataException($"{dir}: {string.Join("; ", clashes)}. Rename the inputs, or predict them into separate folders.", dir);
        var inputSet = inputs.Select(Path.GetFullPath).ToHashSet(StringComparer.Ordinal);
        var overwrites = owner.Keys.Select(n => Path.GetFullPath(Path.Combine(dir, n))).Where(inputSet.Contains).Take(3).ToList();
        if (overwrites.Count > 0)
            throw new DataException($"{dir}: predicting here would overwrite the input {string.Join(", ", overwrites.Select(Path.GetFileName))}; choose another --out folder.", overwrites[0]);
    }
}

/// <summary><c>segment score</c>: our Mean IoU rule on two folders of masks.</summary>
internal static class ScoreCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("score", "Score predicted masks against ground truth with the mmsegmentation / HF evaluate Mean IoU rule.");
        var pred = new Option<string>("--pred") { Description = "Folder of predicted masks (class indices, or colours with a palette).", Required = true };
        var gt = new Option<string>("--gt") { Description = "Folder of ground-truth masks (same file names).", Required = true };
        var d = DataFlags.Add(cmd);
        var json = new Option<bool>("--json") { Description = "Print the metrics as JSON on the last line." };
        cmd.Options.Add(pred); cmd.Options.Add(gt); cmd.Options.Add(json);
        cmd.SetAction(p =>
        {
            var o = DataFlags.Read(p, d, 1);
            if (o.Classes is null && o.PaletteFile is null && o.Encoding != MaskEncoding.Binary) throw new OptionsException("score needs --classes (or a --palette, or --mask binary).");
            var metrics = MaskScorer.ScoreFolders(p.GetValue(pred)!, p.GetValue(gt)!, o.Classes ?? 2, o.IgnoreIndex, o.Encoding, o.PaletteFile);
            var log = p.GetValue(json) ? ctx.Err : ctx.Out;
            log.Write(metrics.ToString());
            if (p.GetValue(json)) ctx.Out.WriteLine(metrics.ToJson());
            return Cli.Ok;
        });
        return cmd;
    }
}

/// <summary><c>segment summary</c>: layer table, parameters and multiply-accumulates.</summary>
internal static class SummaryCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("summary", "Layer table, parameter count and multiply-accumulates of a U-Net configuration.");
        var m = ModelFlags.Add(cmd);
        var inChannels = new Option<int>("--in-channels") { DefaultValueFactory = _ => 3 };
        var classes = new Option<int>("--classes") { DefaultValueFactory = _ => 2 };
        var size = new Option<string>("--size") { Description = "Input HxW.", DefaultValueFactory = _ => "256x256" };
        var json = new Option<bool>("--json") { Description = "Print JSON (params, macs, layers)." };
        foreach (var o in new Option[] { inChannels, classes, size, json }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var options = ModelFlags.Read(p, m, shapes: false, p.GetValue(inChannels), p.GetValue(classes));
            var s = Size2.Parse(p.GetValue(size)!);
            var summary = ModelSummary.For(options, s.Height, s.Width);
            if (p.GetValue(json))
            {
                var o = new JsonObject
                {
                    ["params"] = summary.Parameters, ["macs"] = summary.MultiplyAccumulates, ["height"] = s.Height, ["width"] = s.Width,
                    ["layers"] = new JsonArray(summary.Layers.Select(l => (JsonNode?)new JsonObject
                    {
                        ["name"] = l.Name, ["type"] = l.Kind, ["output"] = new JsonArray(l.OutputShape.Select(x => (JsonNode?)x).ToArray()),
                        ["params"] = l.Parameters, ["macs"] = l.MultiplyAccumulates,
                    }).ToArray()),
                };
                ctx.Out.WriteLine(o.ToJsonString());
                return Cli.Ok;
            }
            int w = summary.Layers.Max(l => l.Name.Length);
            ctx.Out.WriteLine($"{"layer".PadRight(w)}  {"type",-15}  {"output (C x H x W)",-20}  {"params",12}  {"MACs",16}");
            foreach (var l in summary.Layers)
                ctx.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{l.Name.PadRight(w)}  {l.Kind,-15}  {string.Join(" x ", l.OutputShape),-20}  {l.Parameters,12:N0}  {l.MultiplyAccumulates,16:N0}"));
            ctx.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"total: {summary.Parameters:N0} parameters, {summary.MultiplyAccumulates / 1e9:F2} GMACs per {s.Height}x{s.Width} image"));
            return Cli.Ok;
        });
        return cmd;
    }
}

/// <summary><c>segment bench train|loader|eval</c>.</summary>
internal static class BenchCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("bench", "Benchmarks: training step, data loader, evaluator.");
        cmd.Subcommands.Add(Train(ctx));
        cmd.Subcommands.Add(Loader(ctx));
        cmd.Subcommands.Add(Eval(ctx));
        return cmd;
    }

    private static Command Train(CommandContext ctx)
    {
        var cmd = new Command("train", "Time the training step on random data, side by side with a bare TorchSharp loop.");
        var m = ModelFlags.Add(cmd);
        var inChannels = new Option<int>("--in-channels") { DefaultValueFactory = _ => 3 };
        var classes = new Option<int>("--classes") { DefaultValueFactory = _ => 2 };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 2 };
        var size = new Option<string>("--size") { DefaultValueFactory = _ => "256x256" };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 10 };
        var warmup = new Option<int>("--warmup") { DefaultValueFactory = _ => 2 };
        var device = new Option<string>("--device") { DefaultValueFactory = _ => "auto" };
        var noBare = new Option<bool>("--no-bare") { Description = "Skip the bare TorchSharp loop." };
        var precision = new Option<string>("--precision") { Description = "Comma-separated precisions to time side by side (fp32, bf16, fp16); the first is the baseline.", DefaultValueFactory = _ => "fp32" };
        var allocator = new Option<string>("--allocator") { Description = "tuned (mallopt, the trainer's default) or default (glibc as it is).", DefaultValueFactory = _ => "tuned" };
        var json = new Option<bool>("--json");
        foreach (var o in new Option[] { inChannels, classes, batch, size, steps, warmup, device, noBare, precision, allocator, json }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var mode = Cli.ParseEnum(p.GetValue(allocator)!, "--allocator", ("tuned", true), ("default", false));
            if (mode) AllocatorTuning.Apply();
            var options = new TrainingBenchmarkOptions
            {
                Model = ModelFlags.Read(p, m, shapes: false, p.GetValue(inChannels), p.GetValue(classes)), BatchSize = p.GetValue(batch),
                Size = Size2.Parse(p.GetValue(size)!), Steps = p.GetValue(steps), Warmup = p.GetValue(warmup), Device = p.GetValue(device)!, CompareBare = !p.GetValue(noBare),
                Precisions = p.GetValue(precision)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Precisions.Parse).ToArray(),
            };
            var log = p.GetValue(json) ? ctx.Err : ctx.Out;
            var r = TrainingBenchmark.Run(options, new Progress(log));
            PrintTrainBenchmark(log, r, mode);
            if (p.GetValue(json)) ctx.Out.WriteLine(TrainBenchmarkJson(r, mode).ToJsonString());
            return Cli.Ok;
        });
        return cmd;
    }

    private static void PrintTrainBenchmark(TextWriter log, TrainingBenchmarkResult r, bool tunedAllocator)
    {
        log.WriteLine($"{r.Parameters:N0} parameters, device {r.Device}, allocator {(tunedAllocator ? r.Allocator : "default")}"
            + (r.DeviceMemoryMiB is { } mib ? string.Create(CultureInfo.InvariantCulture, $", device memory in use after the steps {mib:F0} MiB") : ""));
        var first = r.Contenders[0];
        foreach (var c in r.Contenders)
            log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{c.Name,-14} median {c.StepSeconds:F3} s ({c.ImagesPerSecond:F2} images/s){(ReferenceEquals(c, first) ? "" : $"; {first.Name}/{c.Name} = {first.StepSeconds / c.StepSeconds:F3}")}"));
    }

    private static JsonObject TrainBenchmarkJson(TrainingBenchmarkResult r, bool tunedAllocator) => new()
    {
        ["stepSeconds"] = r.StepSeconds, ["imagesPerSecond"] = r.ImagesPerSecond, ["params"] = r.Parameters, ["device"] = r.Device,
        ["bareStepSeconds"] = double.IsNaN(r.BareStepSeconds) ? null : r.BareStepSeconds,
        ["overheadRatio"] = double.IsNaN(r.BareStepSeconds) ? null : r.OverheadRatio,
        ["deviceMemoryMiB"] = r.DeviceMemoryMiB,
        ["allocator"] = tunedAllocator ? r.Allocator : "default",
        ["steps"] = new JsonArray(r.Contenders[0].Steps.Select(x => (JsonNode?)x).ToArray()),
        ["contenders"] = new JsonArray(r.Contenders.Select(c => (JsonNode?)new JsonObject
        {
            ["name"] = c.Name, ["precision"] = c.Precision.ShortName(), ["stepSeconds"] = c.StepSeconds, ["imagesPerSecond"] = c.ImagesPerSecond,
            ["steps"] = new JsonArray(c.Steps.Select(x => (JsonNode?)x).ToArray()),
        }).ToArray()),
    };

    private static Command Loader(CommandContext ctx)
    {
        var cmd = new Command("loader", "Time the data pipeline (read, decode, augment, collate) on a folder.");
        var data = new Option<string>("--data") { Description = "Folder with images/ and masks/ (or train/ and val/: train/ is read).", Required = true };
        var d = DataFlags.Add(cmd);
        var workers = new Option<int>("--workers") { DefaultValueFactory = _ => 2 };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 8 };
        var crop = new Option<string>("--crop") { DefaultValueFactory = _ => "256x256" };
        var epochs = new Option<int>("--epochs") { DefaultValueFactory = _ => 3 };
        var cache = new Option<bool>("--cache") { Description = "Cache decoded samples in memory (epochs after the first skip decoding)." };
        var tensors = new Option<bool>("--tensors") { Description = "Also turn each batch into tensors (uint8 images, int64 masks)." };
        var json = new Option<bool>("--json");
        foreach (var o in new Option[] { data, workers, batch, crop, epochs, cache, tensors, json }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var spec = p.GetValue(data)!;
            if (DataFlags.IsSplitFolder(spec)) spec = Path.Combine(spec, "train");
            var set = SegmentationDataset.FromOrigin(spec, DataFlags.Read(p, d, null));
            var c = Size2.Parse(p.GetValue(crop)!);
            var loader = new DataLoader(set, new DataLoaderOptions
            {
                BatchSize = p.GetValue(batch), Workers = p.GetValue(workers), Shuffle = true, DropLast = false,
                Transform = new Compose(new RandomCrop(c.Height, c.Width), new HorizontalFlip()), CacheBytes = p.GetValue(cache) ? 8L << 30 : 0,
            });
            var log = p.GetValue(json) ? ctx.Err : ctx.Out;
            var rates = new List<double>();
            for (int e = 0; e < p.GetValue(epochs); e++)
            {
                var clock = Stopwatch.StartNew();
                int images = 0;
                foreach (var b in loader.Epoch(e))
                {
                    images += b.Count;
                    if (p.GetValue(tensors))
                    {
                        using var scope = NewDisposeScope();
                        b.ToDevice(CPU);
                    }
                }
                rates.Add(images / clock.Elapsed.TotalSeconds);
                log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"epoch {e + 1}: {images} images in {clock.Elapsed.TotalSeconds:F2} s = {rates[^1]:F1} images/s"));
            }
            double steady = rates.Count > 1 ? rates.Skip(1).Average() : rates[0];
            log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{set.Origin}: {loader.Workers} workers, batch {loader.Options.BatchSize}, crop {c}: {steady:F1} images/s (epochs after the first{(p.GetValue(cache) ? ", cached" : "")})"));
            if (p.GetValue(json))
                ctx.Out.WriteLine(new JsonObject
                {
                    ["imagesPerSecond"] = steady, ["firstEpochImagesPerSecond"] = rates[0], ["workers"] = loader.Workers, ["batchSize"] = loader.Options.BatchSize,
                    ["cache"] = p.GetValue(cache), ["epochs"] = new JsonArray(rates.Select(x => (JsonNode?)x).ToArray()),
                }.ToJsonString());
            return Cli.Ok;
        });
        return cmd;
    }

    private static Command Eval(CommandContext ctx)
    {
        var cmd = new Command("eval", "Time the evaluator's confusion-matrix updates on random predictions.");
        var classes = new Option<int>("--classes") { DefaultValueFactory = _ => 12 };
        var size = new Option<string>("--size") { DefaultValueFactory = _ => "360x480" };
        var images = new Option<int>("--images") { DefaultValueFactory = _ => 200 };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 8 };
        var device = new Option<string>("--device") { DefaultValueFactory = _ => "auto" };
        var json = new Option<bool>("--json");
        foreach (var o in new Option[] { classes, size, images, batch, device, json }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var s = Size2.Parse(p.GetValue(size)!);
            int n = p.GetValue(classes), b = p.GetValue(batch), total = p.GetValue(images);
            var dev = Devices.Resolve(p.GetValue(device));
            random.manual_seed(0);
            using var logits = randn(new long[] { b, n, s.Height, s.Width }, device: dev);
            using var target = randint(0, n, new long[] { b, s.Height, s.Width }, device: dev);
            using var cm = new ConfusionMatrix(n, trackPerImage: true);
            cm.Update(logits, target); // warm-up
            cm.Reset();
            var clock = Stopwatch.StartNew();
            int done = 0;
            while (done < total) { cm.Update(logits, target); done += b; }
            var metrics = cm.Compute();
            double rate = done / clock.Elapsed.TotalSeconds;
            var log = p.GetValue(json) ? ctx.Err : ctx.Out;
            log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"evaluator: {done} images of {s} with {n} classes (argmax from logits) in {clock.Elapsed.TotalSeconds:F2} s = {rate:F1} images/s on {dev} (mean IoU {metrics.MeanIoU:F4})"));
            if (p.GetValue(json)) ctx.Out.WriteLine(new JsonObject { ["imagesPerSecond"] = rate, ["images"] = done, ["device"] = dev.ToString() }.ToJsonString());
            return Cli.Ok;
        });
        return cmd;
    }

    private sealed class Progress(TextWriter log) : IProgress<string>
    {
        public void Report(string value) => log.WriteLine(value);
    }
}
