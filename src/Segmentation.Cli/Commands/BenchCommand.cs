using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Models;
using Segmentation.Models.Layers;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Cli;

/// <summary><c>segment bench train|loader|eval|predict|instances</c>.</summary>
internal static class BenchCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("bench", "Benchmarks: training step, data loader, evaluator.");
        cmd.Subcommands.Add(Train(ctx));
        cmd.Subcommands.Add(Loader(ctx));
        cmd.Subcommands.Add(Eval(ctx));
        cmd.Subcommands.Add(Predict(ctx));
        cmd.Subcommands.Add(BenchInstances.Create(ctx));
        cmd.Subcommands.Add(BenchOptimizer.Create(ctx));
        return cmd;
    }

    /// <summary>
    /// bench predict: the same images through the checkpoint on TorchSharp and through its ONNX export on ONNX Runtime,
    /// rounds alternating, after one image each to warm up (the convolution check, the session's first run); decoding
    /// is outside the timing, the rest of prediction (normalise, resize, model, argmax) inside. Also counts how many
    /// pixels of the two masks agree.
    /// </summary>
    private static Command Predict(CommandContext ctx)
    {
        var cmd = new Command("predict",
            "Time prediction on TorchSharp (a checkpoint) and on ONNX Runtime (its export) side by side, on a folder "
                + "of images.");
        var checkpoint = new Option<string>("--checkpoint") { Required = true };
        var onnx = new Option<string>("--onnx") { Description =
            "The checkpoint's ONNX export (segment export --format onnx).", Required = true };
        var input = new Option<string>("--input") { Description = "A folder of images.", Required = true };
        var rounds = new Option<int>("--rounds") { DefaultValueFactory = _ => 3 };
        var json = new Option<bool>("--json");
        foreach (var o in new Option[] { checkpoint, onnx, input, rounds, json }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var files = Directory.Exists(p.GetValue(input)!) ? Directory.EnumerateFiles(p.GetValue(input)!)
                .Where(f => f.EndsWith(".png", StringComparison.OrdinalIgnoreCase)
                    || f.EndsWith(".jpg", StringComparison.OrdinalIgnoreCase)).Order().ToList()
                : throw new DataException($"{p.GetValue(input)}: no such folder.", p.GetValue(input)!);
            if (files.Count == 0) throw new DataException($"{p.GetValue(input)}: no .png or .jpg images.",
                p.GetValue(input)!);
            using var torchPredictor = Segmentation.Inference.Predictor.FromFile(p.GetValue(checkpoint)!,
                new Segmentation.Inference.PredictorOptions { Device = "cpu" });
            using var onnxPredictor = new Segmentation.Onnx.OnnxPredictor(p.GetValue(onnx)!);
            var reader = new ImageReader();
            var images = files.Select(f => reader.ReadImage(f, torchPredictor.Model.InChannels)).ToList();
            var raw = files.Select(onnxPredictor.Read).ToList();
            byte[] Torch(int i) => torchPredictor.Predict(images[i]).Labels;
            byte[] Ort(int i) => onnxPredictor.Predict(raw[i]);
            Torch(0); Ort(0);
            var torchTimes = new List<double>(); var ortTimes = new List<double>();
            long agree = 0, total = 0;
            for (int r = 0; r < p.GetValue(rounds); r++)
            {
                var clock = Stopwatch.StartNew();
                var a = images.Select((_, i) => Torch(i)).ToList();
                torchTimes.Add(clock.Elapsed.TotalSeconds);
                clock.Restart();
                var b = images.Select((_, i) => Ort(i)).ToList();
                ortTimes.Add(clock.Elapsed.TotalSeconds);
                if (r == 0) for (int i = 0; i < a.Count; i++) { total += a[i].Length; agree += a[i].Zip(b[i])
                    .LongCount(x => x.First == x.Second); }
                ctx.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"round {r + 1}: torchsharp {torchTimes[^1]:F2} s, onnx runtime {ortTimes[^1]:F2} s"));
            }
            double Median(List<double> v) => v.Order().ElementAt(v.Count / 2);
            double tps = files.Count / Median(torchTimes), ops = files.Count / Median(ortTimes);
            ctx.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{files.Count} images, {get_num_threads()} libtorch thread(s): torchsharp {tps:F2} images/s, onnx "
                    + $"runtime {ops:F2} images/s ({ops / tps:F2}x); masks agree at {100.0 * agree / total:F3} % of "
                    + $"{total} pixels"));
            if (p.GetValue(json))
                ctx.Out.WriteLine(new JsonObject { ["images"] = files.Count, ["torchsharpImagesPerSecond"] = tps,
                    ["onnxRuntimeImagesPerSecond"] = ops, ["agreement"] = (double)agree / total }.ToJsonString());
            return Cli.Ok;
        });
        return cmd;
    }

    private static Command Train(CommandContext ctx)
    {
        var cmd = new Command("train",
            "Time the training step on random data, side by side with a bare TorchSharp loop.");
        var m = ModelFlags.Add(cmd);
        var inChannels = new Option<int>("--in-channels") { DefaultValueFactory = _ => 3 };
        var classes = new Option<int>("--classes") { DefaultValueFactory = _ => 2 };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 2 };
        var size = new Option<string>("--size") { DefaultValueFactory = _ => "256x256" };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 10 };
        var warmup = new Option<int>("--warmup") { DefaultValueFactory = _ => 2 };
        var device = new Option<string>("--device") { DefaultValueFactory = _ => "auto" };
        var noBare = new Option<bool>("--no-bare") { Description = "Skip the bare TorchSharp loop." };
        var precision = new Option<string>("--precision") { Description =
            "Comma-separated precisions to time side by side (fp32, bf16, fp16); the first is the baseline.",
                DefaultValueFactory = _ => "fp32" };
        var allocator = new Option<string>("--allocator") { Description =
            "tuned (mallopt, the trainer's default) or default (glibc as it is).", DefaultValueFactory = _ => "tuned" };
        var json = new Option<bool>("--json");
        var threads = new Option<string?>("--threads") { Description =
            "libtorch's CPU threads: a number, or auto (one per core the load leaves free); default: as libtorch "
                + "starts, one per core, so that figures compare across runs." };
        var distributed = new Option<string?>("--dist-backend") { Description =
            "Also time the trainer as one process of a data-parallel run on this engine (mpi or nccl; world size 1 "
                + "unless started by a launcher), alternating with the plain trainer." };
        var perParameter = new Option<bool>("--compare-per-parameter") { Description =
            "Also time the trainer with TorchSharp's per-parameter AdamW instead of the fused step." };
        var profile = new Option<bool>("--profile") { Description =
            "After the timed steps, as many more of the first contender timed by part: forward (encoder, decoder, "
                + "head; Mask2Former's deformable sampling), loss (its matcher), backward, optimiser step." };
        foreach (var o in new Option[] { inChannels, classes, batch, size, steps, warmup, device, noBare, precision,
            allocator, json, threads, distributed, perParameter, profile }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            if (p.GetValue(threads) is { } t) CpuThreads.Apply(Cli.ResolveThreads(t, ctx.Err));
            var mode = Cli.ParseEnum(p.GetValue(allocator)!, "--allocator", ("tuned", true), ("default", false));
            if (mode) AllocatorTuning.Apply();
            var options = new TrainingBenchmarkOptions
            {
                Model = ModelFlags.Read(p, m, shapes: false, p.GetValue(inChannels), p.GetValue(classes)),
                    BatchSize = p.GetValue(batch),
                Size = Size2.Parse(p.GetValue(size)!), Steps = p.GetValue(steps), Warmup = p.GetValue(warmup),
                    Device = p.GetValue(device)!, CompareBare = !p.GetValue(noBare),
                Precisions = p.GetValue(precision)!.Split(',',
                    StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Precisions.Parse)
                        .ToArray(),
            };
            var log = p.GetValue(json) ? ctx.Err : ctx.Out;
            using var group = p.GetValue(distributed) is { } backend ? OneProcessGroup(backend, options.Device) : null;
            var r = TrainingBenchmark.Run(options with { Group = group, ComparePerParameterOptimizer =
                p.GetValue(perParameter), Profile = p.GetValue(profile) }, new Progress(log));
            PrintTrainBenchmark(log, r, mode);
            if (p.GetValue(json)) ctx.Out.WriteLine(TrainBenchmarkJson(r, mode).ToJsonString());
            return Cli.Ok;
        });
        return cmd;
    }

    /// <summary>The group of the launcher that started this process, or this process alone on the engine
    /// named.</summary>
    private static Segmentation.Distributed.ProcessGroup OneProcessGroup(string backend, string device)
    {
        var d = Devices.Resolve(device);
        var env = Segmentation.Distributed.LaunchEnvironment.Detect()
            ?? new Segmentation.Distributed.LaunchEnvironment(backend == "mpi" ? "mpirun" : "torchrun", 0, 1, 0, 1,
                null, 29500);
        return Segmentation.Distributed.ProcessGroup.Create(env, d, backend, Segmentation.Distributed.ProcessGroup
            .DefaultTimeout);
    }

    private static void PrintTrainBenchmark(TextWriter log, TrainingBenchmarkResult r, bool tunedAllocator)
    {
        log.WriteLine($"{r.Parameters:N0} parameters, device {r.Device}, allocator "
            + $"{(tunedAllocator ? r.Allocator : "default")}"
            + (r.DeviceMemoryMiB is { } mib ? string.Create(CultureInfo.InvariantCulture,
            $", device memory in use after the steps {mib:F0} MiB") : ""));
        var first = r.Contenders[0];
        foreach (var c in r.Contenders)
        {
            var ratio = ReferenceEquals(c, first) ? ""
                : string.Create(CultureInfo.InvariantCulture,
                $"; {first.Name}/{c.Name} = {first.StepSeconds / c.StepSeconds:F3}");
            log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{c.Name,-14} median {c.StepSeconds:F3} s ({c.ImagesPerSecond:F2} images/s){ratio}"));
        }
        foreach (var (c, paired) in r.RatiosToFirst)
            log.WriteLine($"a step of {c.Name} takes {paired} times as long as one of {first.Name}");
        if (r.Profile.Count == 0) return;
        double step = r.Profile[0].Seconds;
        log.WriteLine($"profile of {first.Name}, mean of {first.Steps.Count()} more step(s) (a part's parts follow "
            + $"it):");
        foreach (var (part, seconds) in r.Profile)
            log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {part,-42} {seconds:F3} s  {seconds / step,6:P1}"));
    }

    private static JsonObject TrainBenchmarkJson(TrainingBenchmarkResult r, bool tunedAllocator) => new()
    {
        ["stepSeconds"] = r.StepSeconds, ["imagesPerSecond"] = r.ImagesPerSecond, ["params"] = r.Parameters,
            ["device"] = r.Device,
        ["bareStepSeconds"] = double.IsNaN(r.BareStepSeconds) ? null : r.BareStepSeconds,
        ["overheadRatio"] = double.IsNaN(r.BareStepSeconds) ? null : r.OverheadRatio,
        ["deviceMemoryMiB"] = r.DeviceMemoryMiB,
        ["allocator"] = tunedAllocator ? r.Allocator : "default",
        ["profile"] = new JsonObject(r.Profile.Select(x => KeyValuePair.Create(x.Part, (JsonNode?)x.Seconds))),
        ["steps"] = new JsonArray(r.Contenders[0].Steps.Select(x => (JsonNode?)x).ToArray()),
        ["ratiosToFirst"] = new JsonArray(r.RatiosToFirst.Select(x => (JsonNode?)new JsonObject
        {
            ["name"] = x.Contender.Name, ["ratio"] = x.Ratio.Ratio, ["low"] = x.Ratio.Low, ["high"] = x.Ratio.High,
            ["pairs"] = x.Ratio.Pairs,
        }).ToArray()),
        ["contenders"] = new JsonArray(r.Contenders.Select(c => (JsonNode?)new JsonObject
        {
            ["name"] = c.Name, ["precision"] = c.Precision.ShortName(), ["stepSeconds"] = c.StepSeconds,
                ["imagesPerSecond"] = c.ImagesPerSecond,
            ["steps"] = new JsonArray(c.Steps.Select(x => (JsonNode?)x).ToArray()),
        }).ToArray()),
    };

    private static Command Loader(CommandContext ctx)
    {
        var cmd = new Command("loader", "Time the data pipeline (read, decode, augment, collate) on a folder.");
        var data = new Option<string>("--data") { Description =
            "Folder with images/ and masks/ (or train/ and val/: train/ is read).", Required = true };
        var d = DataFlags.Add(cmd);
        var workers = new Option<int>("--workers") { DefaultValueFactory = _ => 2 };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 8 };
        var crop = new Option<string>("--crop") { DefaultValueFactory = _ => "256x256" };
        var epochs = new Option<int>("--epochs") { DefaultValueFactory = _ => 3 };
        var cache = new Option<bool>("--cache") { Description =
            "Cache decoded samples in memory (epochs after the first skip decoding)." };
        var tensors = new Option<bool>("--tensors") { Description =
            "Also turn each batch into tensors (uint8 images, int64 masks)." };
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
                Transform = new Compose(new RandomCrop(c.Height, c.Width), new HorizontalFlip()),
                    CacheBytes = p.GetValue(cache) ? 8L << 30 : 0,
            });
            var log = p.GetValue(json) ? ctx.Err : ctx.Out;
            var rates = Enumerable.Range(0, p.GetValue(epochs))
                .Select(e => TimeLoaderEpoch(loader, e, p.GetValue(tensors), log)).ToList();
            double steady = rates.Count > 1 ? rates.Skip(1).Average() : rates[0];
            log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{set.Origin}: {loader.Workers} workers, batch {loader.Options.BatchSize}, crop {c}: {steady:F1} "
                    + $"images/s (epochs after the first{(p.GetValue(cache) ? ", cached" : "")})"));
            if (p.GetValue(json))
                ctx.Out.WriteLine(new JsonObject
                {
                    ["imagesPerSecond"] = steady, ["firstEpochImagesPerSecond"] = rates[0],
                        ["workers"] = loader.Workers, ["batchSize"] = loader.Options.BatchSize,
                    ["cache"] = p.GetValue(cache),
                        ["epochs"] = new JsonArray(rates.Select(x => (JsonNode?)x).ToArray()),
                }.ToJsonString());
            return Cli.Ok;
        });
        return cmd;
    }

    /// <summary>One epoch of the loader, timed (with the batches turned into tensors when asked); its images per
    /// second.</summary>
    private static double TimeLoaderEpoch(DataLoader loader, int epoch, bool tensors, TextWriter log)
    {
        var clock = Stopwatch.StartNew();
        int images = 0;
        foreach (var b in loader.Epoch(epoch))
        {
            images += b.Count;
            if (!tensors) continue;
            using var scope = NewDisposeScope();
            b.ToDevice(CPU);
        }
        double rate = images / clock.Elapsed.TotalSeconds;
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"epoch {epoch + 1}: {images} images in {clock.Elapsed.TotalSeconds:F2} s = {rate:F1} images/s"));
        return rate;
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
            log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"evaluator: {done} images of {s} with {n} classes (argmax from logits) in "
                    + $"{clock.Elapsed.TotalSeconds:F2} s = {rate:F1} images/s on {dev} (mean IoU "
                    + $"{metrics.MeanIoU:F4})"));
            if (p.GetValue(json)) ctx.Out.WriteLine(new JsonObject { ["imagesPerSecond"] = rate, ["images"] = done,
                ["device"] = dev.ToString() }.ToJsonString());
            return Cli.Ok;
        });
        return cmd;
    }

    private sealed class Progress(TextWriter log) : IProgress<string>
    {
        public void Report(string value) => log.WriteLine(value);
    }
}
