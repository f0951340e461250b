using System.Diagnostics;
using System.Text.Json.Nodes;
using Segmentation.Checkpoints;
using Segmentation.Cli;

namespace Segmentation.Tests.Cli;

public class CliTests
{
    private static CliResult Run(params string[] args) => CliResult.Run(args);

    // A tiny shapes run: 24 images of 32x32, a small U-Net, seconds on a CPU.
    private const string TinyShapes = "builtin:shapes?count=24&size=32&seed=2";
    private static readonly string[] TinyModel = { "--base-channels", "8", "--depth", "3", "--batch-size", "4",
        "--workers", "1", "--device", "cpu" };

    [Theory]
    [InlineData("train", "--no-such-flag")]
    [InlineData("frobnicate")]
    [InlineData("score", "--gt", "x")] // --pred is required
    [InlineData("train", "--epochs", "many")]
    public void Usage_errors_exit_with_2_and_point_to_help(params string[] args)
    {
        var r = Run(args);
        Assert.Equal(2, r.Code);
        Assert.Contains("segment --help", r.Err);
    }

    [Theory]
    [InlineData("--crop", "256by256", "Size '256by256'")]
    [InlineData("--upsampling", "nearest", "--upsampling 'nearest' is not one of: transposed, bilinear")]
    [InlineData("--time-limit", "soon", "Duration 'soon'")]
    [InlineData("--val-split", "1.5", "--val-split 1.5")]
    public void Bad_option_values_exit_with_2_and_name_the_value(string flag, string value, string expected)
    {
        using var d = new TempDir();
        var r = Run(new[] { "train", "--data", TinyShapes, "--out", d.Path, flag, value }.Concat(TinyModel).ToArray());
        Assert.Equal(2, r.Code);
        Assert.Contains(expected, r.Err);
        Assert.DoesNotContain("   at ", r.Err); // no stack trace
    }

    /// <summary>segment.dll beside the test assembly (not AppContext.BaseDirectory, which is the runner's under xUnit's
    /// console runner).</summary>
    private static string SegmentDll => Path.Combine(Path.GetDirectoryName(typeof(CliTests).Assembly.Location)!,
        "segment.dll");

    [Fact]
    public void A_missing_data_folder_exits_with_1_and_one_line_naming_it()
    {
        using var d = new TempDir();
        var missing = d["no-such-folder"];
        var r = Run("train", "--data", missing, "--out", d["run"]);
        Assert.Equal(1, r.Code);
        Assert.Contains(missing, r.Err);
        Assert.Single(r.Err.Trim().Split('\n'));
    }

    [Fact]
    public void A_damaged_checkpoint_exits_with_1_naming_the_file_and_verbose_adds_the_stack_trace()
    {
        using var d = new TempDir();
        File.WriteAllText(d["bad.ckpt"], "not a checkpoint");
        var r = Run("eval", "--checkpoint", d["bad.ckpt"]);
        Assert.Equal(1, r.Code);
        Assert.Contains("bad.ckpt", r.Err);
        Assert.DoesNotContain("   at ", r.Err);
        var v = Run("eval", "--checkpoint", d["bad.ckpt"], "--verbose");
        Assert.Equal(1, v.Code);
        Assert.Contains("   at ", v.Err);
    }

    [Fact]
    public void Summary_json_has_the_canonical_parameter_count_and_the_layers()
    {
        var r = Run("summary", "--json");
        Assert.Equal(0, r.Code);
        var j = r.LastJson();
        Assert.Equal(31_037_698, (long)j["params"]!);
        var layers = j["layers"]!.AsArray();
        Assert.Equal(31_037_698, layers.Sum(l => (long)l!["params"]!));
        Assert.True((long)j["macs"]! > 0);
        Assert.Equal(new long[] { 2, 256, 256 }, layers[^1]!["output"]!.AsArray().Select(x => (long)x!).ToArray());
    }

    [Fact]
    public void Score_gives_the_evaluator_keys_and_the_known_answer()
    {
        using var d = new TempDir();
        // Truth 0 0 1 1 / 2 2 255 0; prediction 0 1 1 1 / 2 0 2 0: class IoUs 2/4, 2/3, 1/2.
        byte[] truth = { 0, 0, 1, 1, 2, 2, 255, 0 }, pred = { 0, 1, 1, 1, 2, 0, 2, 0 };
        TempDir.SaveGray(d["gt/m.png"], 4, 2, (x, y) => truth[y * 4 + x]);
        TempDir.SaveGray(d["pred/m.png"], 4, 2, (x, y) => pred[y * 4 + x]);
        var r = Run("score", "--pred", d["pred"], "--gt", d["gt"], "--classes", "3", "--mask", "index", "--json");
        Assert.Equal(0, r.Code);
        var j = r.LastJson();
        foreach (var key in new[] { "meanIoU", "pixelAccuracy", "meanAccuracy", "meanDice", "frequencyWeightedIoU",
            "perClassIoU", "perClassAccuracy", "perClassDice", "classNames", "confusionMatrix" })
            Assert.True(j.ContainsKey(key), key);
        Assert.Equal((0.5 + 2.0 / 3 + 0.5) / 3, (double)j["meanIoU"]!, 10);
        Assert.Equal(5.0 / 7, (double)j["pixelAccuracy"]!, 10);
    }

    [Fact]
    public void Train_eval_predict_round_trip_on_a_tiny_shapes_run()
    {
        using var d = new TempDir();
        var run = d["run"];
        var train = Run(new[] { "train", "--data", TinyShapes, "--epochs", "2", "--out", run,
            "--json" }.Concat(TinyModel).ToArray());
        Assert.True(train.Code == 0, train.Err);

        // summary.json, and the same object as the last line of standard output.
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "summary.json")))!.AsObject();
        Assert.Equal(summary.ToJsonString(), train.LastJson().ToJsonString());
        foreach (var key in new[] { "meanIoU", "pixelAccuracy", "perClassIoU", "confusionMatrix", "bestEpoch",
            "params", "device", "seconds" })
            Assert.True(summary.ContainsKey(key), key);
        Assert.Equal("cpu", (string)summary["device"]!);

        // metrics.jsonl: one object per epoch with the documented keys.
        var lines = File.ReadAllLines(Path.Combine(run, "metrics.jsonl"));
        Assert.Equal(2, lines.Length);
        for (int i = 0; i < 2; i++)
        {
            var e = JsonNode.Parse(lines[i])!.AsObject();
            Assert.Equal(i + 1, (int)e["epoch"]!);
            foreach (var key in new[] { "trainLoss", "valLoss", "meanIoU", "pixelAccuracy", "lr", "seconds",
                "imagesPerSecond" })
                Assert.True(e.ContainsKey(key), key);
        }
        foreach (var f in new[] { "last.ckpt", "best.ckpt", "curves.png",
            "run.json" }) Assert.True(File.Exists(Path.Combine(run, f)), f);
        Assert.NotEmpty(Directory.GetFiles(Path.Combine(run, "overlays"), "*.png"));

        // eval on the checkpoint's own validation data gives the best epoch's numbers again.
        var eval = Run("eval", "--checkpoint", Path.Combine(run, "best.ckpt"), "--device", "cpu", "--json");
        Assert.True(eval.Code == 0, eval.Err);
        var bestEpoch = (int)summary["bestEpoch"]!;
        var bestLine = JsonNode.Parse(lines[bestEpoch - 1])!.AsObject();
        Assert.Equal((double)bestLine["meanIoU"]!, (double)eval.LastJson()["meanIoU"]!, 6);
        Assert.Equal((double)summary["pixelAccuracy"]!, (double)eval.LastJson()["pixelAccuracy"]!, 6);

        // predict writes one class-index PNG per input, of the input's size, plus the requested pictures.
        TempDir.SaveRgb(d["in/a.png"], 40, 36, (x, y) => new SixLabors.ImageSharp.PixelFormats.Rgb24((byte)(x * 6),
            (byte)(y * 7), 90));
        TempDir.SaveRgb(d["in/b.png"], 32, 32, (x, y) => new SixLabors.ImageSharp.PixelFormats.Rgb24(200,
            (byte)(x * 8), (byte)(y * 8)));
        var predict = Run("predict", "--checkpoint", Path.Combine(run, "best.ckpt"), "--input", d["in"], "--out",
            d["out"], "--overlay", "--color", "--device", "cpu");
        Assert.True(predict.Code == 0, predict.Err);
        var mask = new Segmentation.Data.ImageReader().ReadMask(d["out/a.png"]);
        Assert.Equal((40, 36), (mask.Width, mask.Height));
        Assert.All(mask.Values, v => Assert.InRange(v, 0, 3));
        foreach (var f in new[] { "b.png", "a_overlay.png", "a_color.png" }) Assert.True(File.Exists(d["out/" + f]), f);

        // --resume continues the same run to 3 epochs.
        var resumed = Run("train", "--out", run, "--resume", "--epochs", "3", "--json");
        Assert.True(resumed.Code == 0, resumed.Err);
        Assert.Equal(3, File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Length);
        Assert.Equal(3, (int)resumed.LastJson()["epochs"]!);
    }

    [Fact]
    public void Export_to_onnx_then_predict_with_it_gives_the_checkpoints_masks_and_pytorch_export_reimports()
    {
        using var d = new TempDir();
        var run = d["run"];
        var train = Run(new[] { "train", "--data", TinyShapes, "--epochs", "2", "--out", run }.Concat(TinyModel)
            .ToArray());
        Assert.True(train.Code == 0, train.Err);
        var best = Path.Combine(run, "best.ckpt");
        TempDir.SaveRgb(d["in/a.png"], 45, 37, (x, y) => new SixLabors.ImageSharp.PixelFormats.Rgb24((byte)(x * 5),
            (byte)(y * 6), (byte)((x / 6 + y / 6) % 2 * 255)));

        var export = Run("export", "--checkpoint", best, "--format", "onnx", "--out", d["m.onnx"]);
        Assert.True(export.Code == 0, export.Err);
        Assert.True(Run("predict", "--checkpoint", best, "--input", d["in"], "--out", d["torch"], "--device", "cpu")
            .Code == 0);
        var onnx = Run("predict", "--onnx", d["m.onnx"], "--input", d["in"], "--out", d["onnx"], "--overlay");
        Assert.True(onnx.Code == 0, onnx.Err);
        var reader = new Segmentation.Data.ImageReader();
        var a = reader.ReadMask(d["torch/a.png"]).Values;
        var b = reader.ReadMask(d["onnx/a.png"]).Values;
        Assert.True(a.Zip(b).Count(p => p.First == p.Second) >= 0.999 * a.Length,
            "ONNX Runtime's mask differs from TorchSharp's");
        Assert.True(File.Exists(d["onnx/a_overlay.png"]));
        var bench = Run("bench", "predict", "--checkpoint", best, "--onnx", d["m.onnx"], "--input", d["in"],
            "--rounds", "1", "--json");
        Assert.True(bench.Code == 0, bench.Err);
        Assert.True((double)bench.LastJson()["agreement"]! >= 0.999);
        Assert.True((double)bench.LastJson()["onnxRuntimeImagesPerSecond"]! > 0
            && (double)bench.LastJson()["torchsharpImagesPerSecond"]! > 0);

        // The plain U-Net of the tiny run is not milesial's class (base 64, depth 4): a usage error that says so.
        var milesial = Run("export", "--checkpoint", best, "--format", "pytorch", "--out", d["m.pth"]);
        Assert.Equal(2, milesial.Code);
        Assert.Contains("64 base channels and depth 4", milesial.Err);
        Assert.Equal(2, Run("predict", "--checkpoint", best, "--onnx", d["m.onnx"], "--input", d["in"], "--out",
            d["both"]).Code);
    }

    [Fact]
    public void A_run_repeats_from_its_record_and_flags_override_it()
    {
        using var d = new TempDir();
        var first = Run(new[] { "train", "--data", TinyShapes, "--epochs", "2", "--out", d["a"], "--augment",
            "hflip rot90 elastic(alpha=20,sigma=3)", "--no-tensorboard" }.Concat(TinyModel).ToArray());
        Assert.True(first.Code == 0, first.Err);
        var record = JsonNode.Parse(File.ReadAllText(d["a/run.json"]))!.AsObject();
        Assert.Equal("hflip rot90 elastic(alpha=20,sigma=3)", (string)record["Trainer"]!["Augmentation"]!);
        Assert.False(string.IsNullOrEmpty((string?)record["Versions"]?["torchsharp"]));

        var again = Run("train", "--config", d["a/run.json"], "--out", d["b"], "--no-tensorboard");
        Assert.True(again.Code == 0, again.Err);
        static double[] Losses(string file) => File.ReadAllLines(file)
            .Select(l => (double)JsonNode.Parse(l)!["trainLoss"]!).ToArray();
        // same data, model, seed, augmentation: the same losses
        Assert.Equal(Losses(d["a/metrics.jsonl"]), Losses(d["b/metrics.jsonl"]));

        var longer = Run("train", "--config", d["a/run.json"], "--out", d["c"], "--epochs", "3", "--no-tensorboard");
        Assert.True(longer.Code == 0, longer.Err);
        Assert.Contains("with --epochs from the command line", longer.Out);
        Assert.Equal(3, File.ReadAllLines(d["c/metrics.jsonl"]).Length);
        Assert.Equal((string)record["Data"]!, (string)JsonNode.Parse(File.ReadAllText(d["c/run.json"]))!["Data"]!);

        // A flag given with its default value still overrides the record (16 base channels is the default; the record
        // has 8).
        var wider = Run("train", "--config", d["a/run.json"], "--out", d["e"], "--base-channels", "16", "--epochs",
            "1", "--no-tensorboard");
        Assert.True(wider.Code == 0, wider.Err);
        var e = JsonNode.Parse(File.ReadAllText(d["e/run.json"]))!;
        Assert.Equal(16, (int)e["Model"]!["Encoder"]!["Options"]!["BaseChannels"]!);
        Assert.Equal(3, (int)e["Model"]!["Encoder"]!["Options"]!["Depth"]!); // the rest as recorded
        Assert.Equal("hflip rot90 elastic(alpha=20,sigma=3)", (string)e["Trainer"]!["Augmentation"]!);

        // A field edited in the record, which its command line does not say, is refused by name, not ignored.
        var edited = JsonNode.Parse(File.ReadAllText(d["a/run.json"]))!.AsObject();
        edited["Trainer"]!["Optimizer"]!["LearningRate"] = 0.5;
        File.WriteAllText(d["edited.json"], edited.ToJsonString());
        var refused = Run("train", "--config", d["edited.json"], "--out", d["g"], "--no-tensorboard");
        Assert.Equal(2, refused.Code);
        Assert.Contains("Trainer.Optimizer.LearningRate is 0.5 in the record", refused.Err);

        // A record from before the command line was kept: merged field by field.
        var old = JsonNode.Parse(File.ReadAllText(d["a/run.json"]))!.AsObject();
        old.Remove("Arguments");
        File.WriteAllText(d["old.json"], old.ToJsonString());
        var fromOld = Run("train", "--config", d["old.json"], "--out", d["f"], "--epochs", "3", "--no-tensorboard");
        Assert.True(fromOld.Code == 0, fromOld.Err);
        Assert.Contains("Trainer.Epochs", fromOld.Out);
        Assert.Equal(3, File.ReadAllLines(d["f/metrics.jsonl"]).Length);
    }

    [Fact]
    public void Bench_train_json_has_the_step_time_and_the_bare_loop_ratio()
    {
        var r = Run("bench", "train", "--base-channels", "8", "--depth", "3", "--size", "32x32", "--steps", "3",
            "--warmup", "1", "--device", "cpu", "--json");
        Assert.True(r.Code == 0, r.Err);
        var j = r.LastJson();
        foreach (var key in new[] { "stepSeconds", "imagesPerSecond", "params", "device", "bareStepSeconds",
            "overheadRatio" })
            Assert.True(j.ContainsKey(key), key);
        Assert.True((double)j["stepSeconds"]! > 0);
        Assert.Equal(3, j["steps"]!.AsArray().Count);
    }

    [Fact]
    public void Train_with_a_pretrained_ResNet_encoder_runs_end_to_end_and_summary_counts_it()
    {
        using var d = new TempDir();
        // Pretrained weights as torchvision writes them: made here, saved as a .pth with the classifier.
        using (var scope = TorchSharp.torch.NewDisposeScope())
        {
            var file = new System.Collections.Hashtable();
            foreach (var (key, shape) in Segmentation.Tests.Models.EncoderTests.TorchvisionLayout("resnet18"))
                file[key] = key.EndsWith("num_batches_tracked") ? TorchSharp.torch.tensor(0L)
                    : TorchSharp.torch.randn(shape) * 0.01;
            TorchSharp.PyBridge.PyTorchPickler.PickleStateDict(d["resnet18.pth"], file);
        }
        var r = Run("train", "--data", "builtin:shapes?count=24&size=32&seed=3", "--encoder", "resnet18",
            "--encoder-weights", d["resnet18.pth"],
            "--freeze-encoder-epochs", "1", "--encoder-lr-scale", "0.1", "--epochs", "2", "--batch-size", "4",
                "--workers", "1", "--device", "cpu", "--out", d["run"], "--json");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains($"encoder weights: 120 tensors from {d["resnet18.pth"]}", r.Err);
        var summary = r.LastJson();
        // smp's count for 1 class, plus 3 more 3x3 head filters (4 classes)
        Assert.Equal(14_328_209 + 3 * (16 * 9 + 1), (long)summary["params"]!);
        Assert.True(Segmentation.Checkpoints.Checkpoint.Load(d["run/last.ckpt"]).Model.Encoder.Name == "resnet18");

        var s = Run("summary", "--encoder", "resnet34", "--classes", "1", "--json");
        Assert.Equal(0, s.Code);
        Assert.Equal(24_436_369, (long)s.LastJson()["params"]!);
        var bad = Run("train", "--encoder", "resnet18", "--encoder-weights", d["missing.pth"], "--out", d["run2"]);
        Assert.Equal(1, bad.Code);
        Assert.Contains("missing.pth: no such weights file", bad.Err);
    }

    [Fact]
    public void Bench_train_times_each_precision_side_by_side()
    {
        var r = Run("bench", "train", "--base-channels", "8", "--depth", "3", "--size", "32x32", "--steps", "2",
            "--warmup", "0", "--device", "cpu", "--precision", "fp32,bf16", "--no-bare", "--json");
        Assert.True(r.Code == 0, r.Err);
        var contenders = r.LastJson()["contenders"]!.AsArray();
        Assert.Equal(new[] { "trainer fp32", "trainer bf16" }, contenders.Select(c => (string)c!["name"]!));
        Assert.All(contenders, c => Assert.Equal(2, c!["steps"]!.AsArray().Count));
        // the ratio against the first (the log is on standard error with --json)
        Assert.Contains("trainer fp32/trainer bf16 = ", r.Err);
        var bad = Run("bench", "train", "--precision", "fp8");
        Assert.Equal(2, bad.Code);
        Assert.Contains("Precision 'fp8' is not one of: auto, fp32, bf16, fp16.", bad.Err);
    }

    [Fact]
    public void Durations_take_seconds_minutes_and_hours()
    {
        Assert.Equal(90, Segmentation.Cli.Cli.ParseDuration("90s"));
        Assert.Equal(1200, Segmentation.Cli.Cli.ParseDuration("20m"));
        Assert.Equal(5400, Segmentation.Cli.Cli.ParseDuration("1.5h"));
    }

    [Fact]
    public void Doctor_checks_every_convolution_of_the_model_and_names_what_it_found_and_chose()
    {
        var r = Run("doctor", "--base-channels", "8", "--depth", "2", "--size", "32x32", "--batch-size", "2", "--json");
        Assert.Equal(0, r.Code);
        var o = r.LastJson();
        Assert.StartsWith("OK", o["verdict"]!.GetValue<string>());
        foreach (var key in new[] { "torchsharp", "libtorch", "device", "threads", "aten cpu capability", "onednn isa",
            "allocator" })
            Assert.False(string.IsNullOrEmpty(o[key]?.GetValue<string>()), key);
        var layers = o["layers"]!.AsArray();
        // stem, 2 encoder blocks, 2 decoder blocks (up + 2 convs), head
        Assert.Equal(2 + 2 * 2 + 2 * 3 + 1, layers.Count);
        foreach (var l in layers)
        {
            var tried = l!["tried"]!.AsArray();
            Assert.True(tried[^1]!["passed"]!.GetValue<bool>(), l.ToJsonString());
            Assert.Equal(tried[^1]!["route"]!.GetValue<string>(), l["route"]!.GetValue<string>());
        }
    }

    [Fact]
    public async Task No_libtorch_warning_reaches_the_user()
    {
        // A separate process, as a user runs it: libtorch writes its warnings to file descriptor 2 directly, so an
        // in-process run cannot see them. Without the fix this CPU printed "NNPACK.cpp:56 Could not initialize NNPACK!"
        // once per convolution shape.
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true,
            UseShellExecute = false };
        foreach (var a in new[] { SegmentDll, "doctor", "--base-channels", "4", "--depth", "2", "--size", "32x32",
            "--batch-size", "2" })
            psi.ArgumentList.Add(a);
        psi.Environment.Remove("TORCH_CPP_LOG_LEVEL");
        using var p = Process.Start(psi)!;
        var errTask = p.StandardError.ReadToEndAsync();
        var output = await p.StandardOutput.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await p.WaitForExitAsync(timeout.Token);
        string err = await errTask;
        Assert.Equal(0, p.ExitCode);
        Assert.Contains("verdict: OK", output);
        Assert.DoesNotContain("NNPACK", err);
        Assert.DoesNotContain("[W", err);
    }

    [Fact]
    public void Without_a_terminal_training_prints_a_plain_progress_line_at_the_interval()
    {

        var log = new StringWriter();
        var ctx = new CommandContext(log, new StringWriter(), outIsTerminal: false, errIsTerminal: false);
        var reporter = new TrainingReporter(ctx, log) { PlainInterval = TimeSpan.Zero };
        reporter.Report(new Segmentation.Training.TrainingProgress { Kind = Segmentation.Training.ProgressKind.Step,
            Epoch = 1, Epochs = 3, Step = 5, StepsPerEpoch = 10, Loss = 0.5 });
        reporter.Report(new Segmentation.Training.TrainingProgress { Kind =
            Segmentation.Training.ProgressKind.ValidationStep, Epoch = 1, Epochs = 3, Step = 2, StepsPerEpoch = 4 });
        var lines = log.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.StartsWith("epoch 1/3 step 5/10 loss 0.5000", lines[0]);
        Assert.Equal("epoch 1/3 validating 2/4", lines[1].TrimEnd());
        Assert.DoesNotContain('\r', log.ToString()); // no status-line rewriting without a terminal

        var quiet = new StringWriter();
        var slow = new TrainingReporter(new CommandContext(quiet, new StringWriter(), false, false), quiet);
        slow.Report(new Segmentation.Training.TrainingProgress { Kind = Segmentation.Training.ProgressKind.Step,
            Epoch = 1, Epochs = 3, Step = 1, StepsPerEpoch = 10 });
        Assert.Equal("", quiet.ToString()); // the default interval (30 s) has not passed
    }

    [Fact]
    public void Training_into_a_folder_that_holds_a_run_is_refused_unless_resumed_or_overwritten()
    {
        using var d = new TempDir();
        var first = Run(new[] { "train", "--data", TinyShapes, "--epochs", "1", "--out", d["run"] }.Concat(TinyModel)
            .ToArray());
        Assert.Equal(0, first.Code);
        var before = File.ReadAllBytes(d["run/last.ckpt"]);

        var again = Run(new[] { "train", "--data", TinyShapes, "--epochs", "1", "--out", d["run"] }.Concat(TinyModel)
            .ToArray());
        Assert.Equal(2, again.Code);
        Assert.Contains("already holds a run (epoch 1 of 1 in last.ckpt", again.Err);
        Assert.Contains("--resume", again.Err);
        Assert.Contains("--overwrite", again.Err);
        Assert.Equal(before, File.ReadAllBytes(d["run/last.ckpt"])); // nothing was touched

        var over = Run(new[] { "train", "--data", TinyShapes, "--epochs", "1", "--seed", "9", "--out", d["run"],
            "--overwrite" }.Concat(TinyModel).ToArray());
        Assert.Equal(0, over.Code);
        Assert.NotEqual(before, File.ReadAllBytes(d["run/last.ckpt"]));
    }

    [Fact]
    public async Task A_termination_signal_stops_training_at_a_safe_point_writes_an_interrupted_summary_and_says_how_to_resume()
    {
        using var d = new TempDir();
        using var p = StartLongTraining(d["run"]);
        var err = p.StandardError.ReadToEndAsync();
        // Wait for the first finished epoch (its row in metrics.jsonl), then interrupt as Ctrl-C does.
        var lines = new List<string>();
        string? line;
        while ((line = await p.StandardOutput.ReadLineAsync()) is not null)
        {
            lines.Add(line);
            if (line.TrimStart().StartsWith("1 ", StringComparison.Ordinal)) break;
        }
        Assert.NotNull(line);
        // SIGTERM, handled as Ctrl-C's SIGINT is. (SIGINT itself cannot be tested from here: a shell that starts a job
        // in the background, as CI may, starts it with SIGINT ignored, and the runtime rightly keeps it ignored.)
        Assert.Equal(0, kill(p.Id, 15));
        lines.AddRange((await p.StandardOutput.ReadToEndAsync()).Split('\n'));
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await p.WaitForExitAsync(timeout.Token);
        Assert.Equal(130, p.ExitCode);
        var summary = JsonNode.Parse(File.ReadAllText(d["run/summary.json"]))!;
        Assert.Equal("interrupted", summary["stopReason"]!.GetValue<string>());
        int epochs = summary["epochs"]!.GetValue<int>();
        Assert.InRange(epochs, 1, 49);
        Assert.Equal(epochs, Segmentation.Checkpoints.Checkpoint.Load(d["run/last.ckpt"]).State.Epoch);
        Assert.Contains(lines, l => l.Contains("interrupted: stopped after epoch") && l.Contains("--resume"));
        Assert.DoesNotContain("Unhandled", await err);
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);

    /// <summary>segment train in a process of its own, 50 epochs of the tiny shapes run into <paramref name="dir"/>:
    /// long enough to be signalled or killed while it trains.</summary>
    private static Process StartLongTraining(string dir)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true,
            UseShellExecute = false };
        foreach (var a in new[] { SegmentDll, "train", "--data", "builtin:shapes?count=64&size=32&seed=2", "--epochs",
            "50", "--out", dir }.Concat(TinyModel))
            psi.ArgumentList.Add(a);
        return Process.Start(psi)!;
    }

    [Fact]
    public async Task A_run_folder_is_owned_by_one_process_and_freed_when_that_process_dies()
    {
        using var d = new TempDir();
        using var p = StartLongTraining(d["run"]);
        _ = p.StandardError.ReadToEndAsync();
        string? line;
        while ((line = await p.StandardOutput.ReadLineAsync()) is not null && !line.StartsWith("run folder:", StringComparison.Ordinal)) { }
        Assert.NotNull(line);

        // A second writer, even one that asks to start over or to resume, is refused by name; nothing of the first is touched.
        foreach (var extra in new[] { "--overwrite", "--resume" })
        {
            var second = Run(new[] { "train", "--data", TinyShapes, "--epochs", "1", "--out", d["run"], extra }.Concat(TinyModel).ToArray());
            Assert.Equal(1, second.Code);
            Assert.Contains($"in use by process {p.Id}", second.Err);
            Assert.True(File.Exists(d["run/run.json"]));
        }

        // The kernel releases the lock when its holder dies (SIGKILL: no handler runs), so the folder is free again.
        Assert.Equal(0, kill(p.Id, 9));
        await p.WaitForExitAsync();
        var after = Run(new[] { "train", "--data", TinyShapes, "--epochs", "1", "--out", d["run"], "--overwrite" }.Concat(TinyModel).ToArray());
        Assert.True(after.Code == 0, after.Err);
    }

    [Fact]
    public void Import_export_and_predict_replace_no_file_without_overwrite()
    {
        using var d = new TempDir();
        Assert.Equal(0, Run(new[] { "train", "--data", TinyShapes, "--epochs", "1", "--out", d["run"] }.Concat(TinyModel).ToArray()).Code);
        var best = File.ReadAllBytes(d["run/best.ckpt"]);

        // import into a run's best.ckpt: refused before the source is even read (it does not exist)
        var import = Run("import", "--from", "milesial", "--pytorch", d["missing.pth"], "--out", d["run/best.ckpt"]);
        Assert.Equal(2, import.Code);
        Assert.Contains("exists already; give --overwrite", import.Err);
        var export = Run("export", "--checkpoint", d["run/last.ckpt"], "--format", "onnx", "--out", d["run/best.ckpt"]);
        Assert.Equal(2, export.Code);
        Assert.Contains("exists already; give --overwrite", export.Err);
        Assert.Equal(best, File.ReadAllBytes(d["run/best.ckpt"]));
        // --out naming a folder (a trailing slash) where a file is written: said so, with a file name to use.
        var folder = Run("export", "--checkpoint", d["run/last.ckpt"], "--format", "onnx", "--out", d["exports"] + "/");
        Assert.Equal(2, folder.Code);
        Assert.Contains("is a folder; name the file to write (say " + Path.Combine(d["exports"] + "/", "model.onnx"), folder.Err);

        TempDir.SaveRgb(d["in/a.png"], 32, 32, (x, y) => new SixLabors.ImageSharp.PixelFormats.Rgb24((byte)(x * 6), 0, 90));
        Assert.Equal(0, Run("predict", "--checkpoint", d["run/best.ckpt"], "--input", d["in"], "--out", d["out"]).Code);
        File.WriteAllText(d["out/a.png"], "the user's own file");
        var again = Run("predict", "--checkpoint", d["run/best.ckpt"], "--input", d["in"], "--out", d["out"]);
        Assert.Equal(2, again.Code);
        Assert.Contains("1 of the output files exist already (a.png)", again.Err);
        Assert.Equal("the user's own file", File.ReadAllText(d["out/a.png"]));
        Assert.Equal(0, Run("predict", "--checkpoint", d["run/best.ckpt"], "--input", d["in"], "--out", d["out"], "--overwrite").Code);
        Assert.Equal(32, SixLabors.ImageSharp.Image.Identify(d["out/a.png"]).Width);
    }

    /// <summary>A folder of <paramref name="count"/> image-mask pairs named 0.png, 1.png, ... of the sizes given, with
    /// two classes in every mask.</summary>
    private static void SaveData(string dir, int count, Func<int, (int Width, int Height)> size)
    {
        for (int i = 0; i < count; i++)
        {
            var (w, h) = size(i);
            byte shade = (byte)i;
            TempDir.SaveRgb(Path.Combine(dir, "images", $"{i}.png"), w, h, (x, y) => new SixLabors.ImageSharp.PixelFormats.Rgb24(9, 9, shade));
            TempDir.SaveGray(Path.Combine(dir, "masks", $"{i}.png"), w, h, (x, y) => (byte)(x % 2));
        }
    }

    [Fact]
    public void Training_images_smaller_than_the_model_takes_are_named_before_training()
    {
        using var d = new TempDir();
        SaveData(d["data"], 6, i => i == 3 ? (1, 1) : (16, 16));
        var r = Run(new[] { "train", "--data", d["data"], "--val-split", "0.5", "--epochs", "1", "--out", d["run"] }.Concat(TinyModel).ToArray());
        Assert.Equal(1, r.Code);
        Assert.Contains("3.png: 1x1 is smaller than the smallest input this model takes (8x8", r.Err);
        Assert.Contains("--size", r.Err);
        Assert.DoesNotContain("unexpected", r.Err);
    }

    [Fact]
    public void Training_images_of_mixed_sizes_are_caught_by_the_data_check_with_the_fix_named()
    {
        using var d = new TempDir();
        SaveData(d["data"], 6, i => (i == 4 ? 48 : 32, 32));
        var r = Run(new[] { "train", "--data", d["data"], "--val-split", "0.34", "--epochs", "1", "--out", d["run"] }.Concat(TinyModel).ToArray());
        Assert.Equal(1, r.Code);
        Assert.Contains("the training images differ in size", r.Err);
        Assert.Contains("is 48x32", r.Err);
        Assert.Contains("--size 32x32", r.Err);
        Assert.False(Directory.Exists(d["run"]));
        // Resized as they are read, the same data trains.
        var resized = Run(new[] { "train", "--data", d["data"], "--val-split", "0.34", "--epochs", "1", "--size", "32x32", "--out", d["run"] }.Concat(TinyModel).ToArray());
        Assert.True(resized.Code == 0, resized.Err);
    }

    [Fact]
    public void Threads_are_chosen_from_the_load_by_default_given_by_flag_recorded_and_changeable_on_resume()
    {
        var (auto, reason) = Segmentation.Models.CpuThreads.Auto();
        Assert.InRange(auto, 1, Environment.ProcessorCount);
        Assert.Contains("core(s)", reason);

        using var d = new TempDir();
        var first = Run(new[] { "train", "--data", TinyShapes, "--epochs", "1", "--out", d["a"] }.Concat(TinyModel).ToArray());
        Assert.True(first.Code == 0, first.Err);
        Assert.Contains("threads: ", first.Out);
        Assert.Null(JsonNode.Parse(File.ReadAllText(d["a/run.json"]))!["Trainer"]!["Threads"]); // asked: auto
        var used = Segmentation.Training.TrainerOptions.FromCheckpoint(Segmentation.Checkpoints.Checkpoint.Load(d["a/last.ckpt"])).Threads;
        Assert.InRange(used!.Value, 1, Environment.ProcessorCount); // used: recorded with the weights

        var given = Run(new[] { "train", "--data", TinyShapes, "--epochs", "1", "--out", d["b"], "--threads", "1" }.Concat(TinyModel).ToArray());
        Assert.True(given.Code == 0, given.Err);
        Assert.Equal(1, (int)JsonNode.Parse(File.ReadAllText(d["b/run.json"]))!["Trainer"]!["Threads"]!);
        var resumed = Run("train", "--resume", "--out", d["b"], "--epochs", "2", "--threads", "2", "--workers", "2", "--eval-every", "3");
        Assert.True(resumed.Code == 0, resumed.Err);
        var after = Segmentation.Training.TrainerOptions.FromCheckpoint(Segmentation.Checkpoints.Checkpoint.Load(d["b/last.ckpt"]));
        Assert.Equal((2, 2, 3), (after.Threads, after.Workers, after.Checkpoints.EvalEvery)); // the resume's flags took effect

        var bad = Run(new[] { "train", "--data", TinyShapes, "--out", d["c"], "--threads", "0" }.Concat(TinyModel).ToArray());
        Assert.Equal(2, bad.Code);
        Assert.Contains("--threads '0' must be a whole number of at least 1, or auto", bad.Err);
    }

    [Fact]
    public void A_broken_record_given_to_config_is_named_without_pointing_at_resume()
    {
        using var d = new TempDir();
        File.WriteAllText(d["run.json"], "{ \"Data\": ");
        var r = Run(new[] { "train", "--config", d["run.json"], "--out", d["run"] }.Concat(TinyModel).ToArray());
        Assert.Equal(1, r.Code);
        Assert.Contains("run.json: cannot read the run configuration", r.Err);
        Assert.Contains("the run.json that 'segment train' writes", r.Err);
        Assert.DoesNotContain("--resume", r.Err);
        Assert.False(Directory.Exists(d["run"]));
    }

    [Fact]
    public void Segment_alone_lists_the_commands_and_records_hold_what_the_run_resolved()
    {
        var alone = Run();
        Assert.Equal(0, alone.Code);
        foreach (var command in new[] { "train", "predict", "export", "import", "report" }) Assert.Contains(command, alone.Out);
        Assert.DoesNotContain("Required command", alone.Out + alone.Err);

        // A 4-class shapes run records 4 classes (not the default 2) and the panels it draws for TensorBoard.
        using var d = new TempDir();
        Assert.Equal(0, Run(new[] { "train", "--data", TinyShapes, "--epochs", "1", "--out", d["run"] }.Concat(TinyModel).ToArray()).Code);
        var record = JsonNode.Parse(File.ReadAllText(d["run/run.json"]))!;
        Assert.Equal(4, (int)record["Model"]!["Classes"]!);
        Assert.Equal(4, (int)record["Trainer"]!["Checkpoints"]!["PreviewImages"]!);
        var description = Segmentation.Checkpoints.Checkpoint.Load(d["run/best.ckpt"]).Dataset.ToString();
        Assert.StartsWith("4 classes (background, circle, rectangle, triangle)", description);
        Assert.DoesNotContain("System.", description);
        using var predictor = Segmentation.Inference.Predictor.FromFile(d["run/best.ckpt"]);
        TempDir.SaveRgb(d["a.jpg"], 40, 24, (x, y) => new SixLabors.ImageSharp.PixelFormats.Rgb24((byte)(x * 6), 9, 9));
        Assert.Equal(40 * 24, predictor.Predict(d["a.jpg"]).Labels.Length); // from a path
    }

    [Fact]
    public void A_start_that_fails_leaves_nothing_and_a_start_that_finished_no_epoch_does_not_block_the_folder()
    {
        using var d = new TempDir();
        // Data that fails the full check (which runs after the run is set up): one image of six is not a PNG.
        SaveData(d["data"], 6, _ => (32, 32));
        File.WriteAllText(d["data/images/5.png"], "not a png");
        var failed = Run(new[] { "train", "--data", d["data"], "--epochs", "1", "--out", d["run"] }.Concat(TinyModel).ToArray());
        Assert.Equal(1, failed.Code);
        Assert.Contains("5.png", failed.Err);
        Assert.False(Directory.Exists(d["run"]), "a failed start left " + (Directory.Exists(d["run"]) ? string.Join(", ", Directory.GetFileSystemEntries(d["run"])) : ""));

        // The record of a start that never finished an epoch (a crash before the first one) is replaced without --overwrite.
        Directory.CreateDirectory(d["run2"]);
        File.WriteAllText(d["run2/run.json"], "{}");
        File.WriteAllText(d["run2/metrics.jsonl"], "");
        var again = Run(new[] { "train", "--data", TinyShapes, "--epochs", "1", "--out", d["run2"] }.Concat(TinyModel).ToArray());
        Assert.True(again.Code == 0, again.Err);
        Assert.Contains("finished no epoch", again.Out);
        Assert.True(File.Exists(d["run2/last.ckpt"]));
    }

    [Fact]
    public void Predict_refuses_inputs_whose_outputs_would_collide_before_writing_anything()
    {
        using var d = new TempDir();
        Assert.Equal(0,
            Run(new[] { "train", "--data", TinyShapes, "--epochs", "1", "--out", d["run"] }.Concat(TinyModel).ToArray())
                .Code);
        TempDir.SaveRgb(d["in/a.png"], 32, 32, (x, y) => new SixLabors.ImageSharp.PixelFormats.Rgb24((byte)(x * 6), 0,
            90));
        TempDir.SaveRgb(d["in/a.jpg"], 32, 32, (x, y) => new SixLabors.ImageSharp.PixelFormats.Rgb24(0, (byte)(y * 6),
            90));
        TempDir.SaveRgb(d["in/a_overlay.png"], 32, 32, (x, y) => new SixLabors.ImageSharp.PixelFormats.Rgb24(9, 9, 9));
        var r = Run("predict", "--checkpoint", d["run/best.ckpt"], "--input", d["in"], "--out", d["out"], "--overlay");
        Assert.Equal(1, r.Code);
        Assert.Contains("a.jpg and a.png would both write a.png", r.Err);
        Assert.Contains("would both write a_overlay.png", r.Err);
        Assert.False(Directory.Exists(d["out"]));

        var intoInput = Run("predict", "--checkpoint", d["run/best.ckpt"], "--input", d["in/a.png"], "--out", d["in"]);
        Assert.Equal(1, intoInput.Code);
        Assert.Contains("would overwrite the input a.png", intoInput.Err);
    }

    [Fact]
    public void Doctor_sweep_checks_every_route_on_the_grid_and_im2col_is_never_wrong()
    {
        var r = Run("doctor", "--sweep", "--channels", "3,16", "--sizes", "6,9", "--json");
        Assert.Equal(0, r.Code);
        var o = r.LastJson();
        Assert.Equal(2 * 2 * 2 * 6 - 2 * 2 * 1, o["shapes"]!.GetValue<int>()); // 7x7 kernels skip the 6x6 input
        Assert.Equal(0, o["unfold"]!["wrong"]!.GetValue<int>());
        foreach (var route in new[] { "direct", "padded" }) Assert.NotNull(o[route]!["wrong"]);
    }

    [Fact]
    public void Models_lists_the_registry_with_options_pretrained_sources_and_what_each_encoder_supports()
    {
        var r = Run("models", "--json");
        Assert.True(r.Code == 0, r.Err);
        var o = r.LastJson();
        var encoders = o["encoders"]!.AsArray().Select(e => e!.AsObject()).ToList();
        Assert.Equal(new[] { "convnext-tiny", "mit-b0", "mit-b1", "mit-b2", "mit-b3", "mit-b4", "mit-b5",
            "mlnet-resnet18", "resnet18", "resnet34", "resnet50", "swin-base", "swin-large", "swin-small", "swin-tiny",
            "unet" },
            encoders.Select(e => (string)e["name"]!).Where(n => !n.StartsWith("test-")).ToArray());
        Assert.All(encoders.Where(e => !((string)e["name"]!).StartsWith("test-")),
            e => Assert.True((bool)e["supports"]!["precision"]! && (bool)e["supports"]!["check"]!
                && (bool)e["supports"]!["export"]!, (string)e["name"]!));
        Assert.Equal(64, (int)encoders.Single(e => (string)e["name"]! == "unet")["options"]!["BaseChannels"]!);
        Assert.Contains(encoders.Single(e => (string)e["name"]! == "mlnet-resnet18")["pretrained"]!.AsArray(),
            w => (string)w!["name"]! == "builtin");
        var heads = o["heads"]!.AsArray().Select(e => e!.AsObject()).ToList();
        Assert.Equal(3, (int)heads.Single(h => (string)h["name"]! == "smp-conv")["options"]!["Kernel"]!);
        Assert.Equal(1, (int)heads.Single(h => (string)h["name"]! == "conv")["options"]!["Kernel"]!);
    }

    [Fact]
    public void Summary_of_segformer_b0_at_150_classes_counts_transformers_parameters()
    {
        var r = Run("summary", "--arch", "segformer", "--encoder", "mit-b0", "--classes", "150", "--json");
        Assert.True(r.Code == 0, r.Err);
        Assert.Equal(3_752_694, (long)r.LastJson()["params"]!);
        var refused = Run("summary", "--arch", "segformer");
        Assert.Equal(2, refused.Code);
        Assert.Contains("--encoder mit-b0", refused.Err);
    }
}
