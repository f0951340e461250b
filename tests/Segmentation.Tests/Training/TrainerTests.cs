using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using Segmentation.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Tests.Training;

public class TrainerTests
{
    private static readonly ModelDescription Tiny = ModelDescription.UNet(classes: 4, baseChannels: 8, depth: 3);

    private static (SegmentationDataset Train, SegmentationDataset Val) Shapes(int count = 48, int size = 32)
        => SegmentationDataset.Shapes(new ShapesOptions { Count = count, Size = size, Seed = 11, MaxShapes = 2 }).Split(0.75, seed: 0);

    private static TrainerOptions Quick(string? dir = null, int epochs = 2) => new()
    {
        Epochs = epochs, BatchSize = 4, Seed = 5, Workers = 2, Device = "cpu", ManageProcessMemory = false,
        Optimizer = new() { LearningRate = 3e-3 }, Checkpoints = new() { Directory = dir },
    };

    private static SegmentationModel Build(int seed = 5) => new(Tiny with { Seed = seed });

    private static float[] Flat(SegmentationModel m) => m.parameters().SelectMany(p => p.detach().cpu().data<float>().ToArray()).ToArray();

    [Fact]
    public void The_same_seed_gives_the_same_losses()
    {
        var (train, val) = Shapes(24);
        double[] Run()
        {
            using var model = Build();
            using var trainer = new Trainer(model, Quick());
            return trainer.Fit(train, val).History.Select(h => h.TrainLoss).ToArray();
        }
        Assert.Equal(Run(), Run());
    }

    /// <summary>
    /// The SegFormer case draws random numbers in every step (dropout, stochastic depth), trains in two parameter groups
    /// on the paper's recipe, and has layers whose route changes when the validation shapes are checked after the
    /// training shapes: the resumed run must restore the generator, the schedule and the routes (it checks the
    /// interrupted run's inputs again, in order; without that its weights differed in the last bits).
    /// </summary>
    [Theory]
    [InlineData("unet")]
    [InlineData("unet, weight average")]
    [InlineData("segformer")]
    public void Training_four_epochs_equals_two_then_resuming_for_two(string architecture)
    {
        using var dir = new TempDir();
        var (train, val) = Shapes(24);
        bool average = architecture.EndsWith("weight average", StringComparison.Ordinal);
        if (average) architecture = "unet";
        var description = architecture == "unet" ? Tiny : new ModelDescription
        {
            Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = 4, Seed = 5,
        };
        SegmentationModel Build() => new(description);
        TrainerOptions Options(string sub) => architecture == "unet" ? Quick(dir.Sub(sub), 4) with
            { Optimizer = new() { LearningRate = 3e-3, WeightAverageDecay = average ? 0.9 : null } }
            : TrainerOptions.Recommended(description, pretrainedEncoder: true) with
            {
                Epochs = 4, BatchSize = 4, Seed = 5, Workers = 2, Device = "cpu",
                Checkpoints = new() { Directory = dir.Sub(sub) },
            };
        using var straight = Build();
        using (var t = new Trainer(straight, Options("a"))) t.Fit(train, val);

        // Two epochs of a 4-epoch run, stopped (cancelled) after the second; then a fresh model resumes from last.ckpt.
        using (var first = Build())
        using (var t = new Trainer(first, Options("b")))
        using (var cts = new CancellationTokenSource())
        {
            var stopAfterTwo = new SynchronousProgress<TrainingProgress>(p => { if (p.Kind == ProgressKind.Epoch && p.Epoch == 2) cts.Cancel(); });
            var stopped = t.Fit(train, val, stopAfterTwo, cancellation: cts.Token);
            Assert.Equal("interrupted", stopped.StopReason);
            Assert.Equal(2, stopped.Epochs);
        }
        var ckpt = Checkpoint.Load(dir["b/last.ckpt"]);
        Assert.Equal(2, ckpt.State.Epoch);
        using var resumed = ckpt.CreateModel();
        using (var t = new Trainer(resumed, Options("b")))
        {
            var r = t.Fit(train, val, resumeFrom: ckpt);
            Assert.Equal(4, r.Epochs);
            Assert.Equal(4, r.History.Count);
        }
        Assert.Equal(Flat(straight), Flat(resumed));
        var (a, b) = (Checkpoint.Load(dir["a/last.ckpt"]), Checkpoint.Load(dir["b/last.ckpt"]));
        // the schedule moved on every step: 18 training images at batch 4, 4 epochs
        Assert.InRange(a.State.OptimizerStep, 16, 20);
        Assert.Equal(4, a.State.History.Select(h => h.LearningRate).Distinct().Count());
        Assert.Equal(a.Weights, b.Weights);
        Assert.Equal(a.TrainingWeights, b.TrainingWeights);
        Assert.Equal(a.State.History.Select(h => h.ValLoss), b.State.History.Select(h => h.ValLoss));
        if (average)
        {
            // the checkpoint predicts with the average and resumes from the weights as trained
            Assert.NotEqual(a.Weights, a.TrainingWeights);
            Assert.Equal(Checkpoint.SerializeWeights(straight), a.TrainingWeights);
        }
        else Assert.Empty(a.TrainingWeights);
    }

    [Fact]
    public void A_resumed_run_counts_the_time_before_it_against_the_time_limit()
    {
        using var dir = new TempDir();
        var (train, val) = Shapes(24);
        using (var first = Build())
        using (var t = new Trainer(first, Quick(dir.Path, 4)))
        using (var cts = new CancellationTokenSource())
        {
            var stopAfterTwo = new SynchronousProgress<TrainingProgress>(p => { if (p.Kind == ProgressKind.Epoch && p.Epoch == 2) cts.Cancel(); });
            t.Fit(train, val, stopAfterTwo, cancellation: cts.Token);
        }
        var ckpt = Checkpoint.Load(dir["last.ckpt"]);
        Assert.Equal(2, ckpt.State.Epoch);
        // a budget the first two epochs nearly spent: the resumed run trains one more epoch and stops for time
        using var resumed = ckpt.CreateModel();
        using var trainer = new Trainer(resumed, Quick(dir.Path, 4) with { Schedule = new() { TimeLimit = TimeSpan.FromSeconds(ckpt.State.Seconds + 0.01) } });
        var r = trainer.Fit(train, val, resumeFrom: ckpt);
        Assert.Equal("time limit", r.StopReason);
        Assert.Equal(3, r.Epochs);
    }

    [Fact]
    public void The_best_checkpoint_is_required_by_a_non_null_path_or_an_error_that_says_why()
    {
        using var dir = new TempDir();
        var (train, val) = Shapes(16);
        using var model = Build();
        using (var t = new Trainer(model, Quick(dir.Path, 1)))
        {
            var result = t.Fit(train, val);
            using var predictor = Segmentation.Inference.Predictor.FromFile(result.RequireBestCheckpoint()); // no CS8604
            Assert.Equal(dir["best.ckpt"], result.RequireBestCheckpoint());
        }
        using var other = Build();
        using var none = new Trainer(other, Quick(null, 1));
        var e = Assert.Throws<OptionsException>(() => none.Fit(train, val).RequireBestCheckpoint());
        Assert.Contains("Checkpoints.Directory", e.Message);
    }

    [Fact]
    public void Checkpoint_round_trip_gives_identical_predictions_and_keeps_the_description()
    {
        using var dir = new TempDir();
        var (train, val) = Shapes(16);
        using var model = Build();
        using (var t = new Trainer(model, Quick(dir.Path, 1))) t.Fit(train, val);
        var ckpt = Checkpoint.Load(dir["last.ckpt"]);
        Assert.Equal(new[] { "background", "circle", "rectangle", "triangle" }, ckpt.Dataset.ClassNames);
        Assert.Equal((Tiny with { Seed = 5 }).Resolve(), ckpt.Model);
        Assert.Single(ckpt.State.History);
        Assert.True(ckpt.State.History[0].ResidentMemoryMB > 0); // metrics.jsonl rewritten on resume keeps rssMB
        using var loaded = ckpt.CreateModel();
        model.eval(); loaded.eval();
        using var scope = NewDisposeScope();
        var x = randn(2, 3, 32, 32);
        // The trained model's layers may take another (equally right) convolution route than the fresh one: the
        // trained one was also checked at its training shapes. Same weights, same logits to float32 rounding.
        Assert.True(model.Logits(x).allclose(loaded.Logits(x), rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void An_interrupted_save_leaves_the_old_checkpoint_readable()
    {
        using var dir = new TempDir();
        var (train, val) = Shapes(16);
        using var model = Build();
        using (var t = new Trainer(model, Quick(dir.Path, 1))) t.Fit(train, val);
        var path = dir["last.ckpt"];
        var old = Checkpoint.Load(path);
        var changed = old;
        Assert.Throws<IOException>(() => changed.Save(path, s => new FailingStream(s, failAfter: 10_000)));
        var again = Checkpoint.Load(path);
        Assert.Equal(old.Weights, again.Weights);
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp", SearchOption.AllDirectories)); // no temporary left behind
    }

    [Theory]
    [InlineData("truncated")]
    [InlineData("flipped")]
    [InlineData("other")]
    public void A_malformed_checkpoint_is_a_clear_error(string damage)
    {
        using var dir = new TempDir();
        var (train, _) = Shapes(8);
        using var model = Build();
        using (var t = new Trainer(model, Quick(dir.Path, 1))) t.Fit(train);
        var path = dir["last.ckpt"];
        var bytes = File.ReadAllBytes(path);
        if (damage == "truncated") bytes = bytes[..(bytes.Length / 2)];
        else if (damage == "flipped") bytes[bytes.Length / 2] ^= 0xFF;
        else bytes = "PK\u0003\u0004 not ours"u8.ToArray();
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<CheckpointException>(() => Checkpoint.Load(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void A_NaN_loss_stops_with_the_epoch_step_and_last_good_checkpoint()
    {
        using var dir = new TempDir();
        var (train, _) = Shapes(8);
        using var model = Build();
        var bad = new Normalization(new[] { float.NaN, 0f, 0f }, new[] { 1f, 1f, 1f });
        using var t = new Trainer(model, Quick(dir.Path, 1) with { Normalization = bad });
        var e = Assert.Throws<TrainingDivergedException>(() => t.Fit(train));
        Assert.Contains("epoch 1, step 1", e.Message);
        Assert.Contains("no checkpoint was written yet", e.Message);
        Assert.Contains("segment doctor", e.Message); // a NaN this early points at the kernels, not only the learning rate
        Assert.False(File.Exists(dir["last.ckpt"]));
    }

    [Fact]
    public void Live_tensors_stay_flat_across_epochs()
    {
        var (train, val) = Shapes(16);
        using var model = Build();
        using var t = new Trainer(model, Quick(null, 4));
        var live = new List<long>();
        t.Fit(train, val, new SynchronousProgress<TrainingProgress>(p =>
        {
            if (p.Kind == ProgressKind.Epoch) live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        }));
        Assert.Equal(4, live.Count);
        Assert.Equal(live[1], live[3]);
    }

    [Fact]
    public void Validation_reports_each_batch_before_the_epoch()
    {
        var (train, val) = Shapes(48); // 12 validation images: 3 batches of 4
        using var model = Build();
        using var t = new Trainer(model, Quick(null, 2));
        var seen = new List<string>();
        t.Fit(train, val, new SynchronousProgress<TrainingProgress>(p =>
        {
            if (p.Kind == ProgressKind.ValidationStep) seen.Add($"{p.Epoch}:{p.Step}/{p.StepsPerEpoch}");
            if (p.Kind == ProgressKind.Epoch) seen.Add($"epoch {p.Epoch}");
        }));
        Assert.Equal(new[] { "1:1/3", "1:2/3", "1:3/3", "epoch 1", "2:1/3", "2:2/3", "2:3/3", "epoch 2" }, seen);
    }

    [Fact]
    public void A_short_seeded_run_on_shapes_learns_to_segment()
    {
        // The main job's recipe (CE + Dice, AdamW 3e-3, poly) at a quarter of its cost: 320 images of 48x48, depth 3.
        var (train, val) = SegmentationDataset.Shapes(new ShapesOptions { Count = 320, Size = 48, Seed = 3, MaxShapes = 3 }).Split(0.8, seed: 0);
        random.manual_seed(1);
        using var model = new SegmentationModel(ModelDescription.UNet(inChannels: 3, classes: 4, baseChannels: 16, depth: 3));
        using var t = new Trainer(model, new TrainerOptions { Epochs = 12, BatchSize = 8, Loss = LossKind.CrossEntropyDice, Seed = 1, Workers = 2, Device = "cpu", Optimizer = new() { LearningRate = 3e-3 } });
        var r = t.Fit(train, val);
        Assert.True(r.History[^1].TrainLoss < r.History[0].TrainLoss * 0.3, $"loss per epoch {string.Join(", ", r.History.Select(h => h.TrainLoss.ToString("F3")))}");
        Assert.True(r.Metrics!.MeanIoU > 0.8, $"mean IoU {r.Metrics.MeanIoU}; per epoch {string.Join(", ", r.History.Select(h => h.MeanIoU.ToString("F3")))}");
    }

    [Theory]
    [InlineData(8, NormLayer.Batch)]
    [InlineData(16, NormLayer.Group)]
    [InlineData(8, NormLayer.Group)]
    public void Small_and_group_norm_models_lower_the_loss_without_NaN(int baseChannels, NormLayer norm)
    {
        // Both went NaN in the first step on AMD Zen 5 (oneDNN's backward kernels below 16 channels; GroupNorm's
        // uninitialised affine parameters). Right by construction now: the loss must fall on data a U-Net learns.
        var (train, val) = Shapes(32);
        using var model = new SegmentationModel(ModelDescription.UNet(classes: 4, baseChannels: baseChannels, depth: 3, norm: norm, seed: 3));
        using var trainer = new Trainer(model, Quick(epochs: 4));
        var r = trainer.Fit(train, val);
        var losses = r.History.Select(h => h.TrainLoss).ToArray();
        Assert.All(losses, l => Assert.True(double.IsFinite(l), $"losses {string.Join(", ", losses)}"));
        Assert.True(losses[^1] < losses[0] * 0.8, $"losses {string.Join(", ", losses)}");
    }

    [Fact]
    public void Progress_arrives_in_order_on_the_training_thread_before_Fit_returns()
    {
        var (train, val) = Shapes(16);
        using var model = Build();
        using var trainer = new Trainer(model, Quick(epochs: 2));
        var kinds = new List<ProgressKind>();
        int thread = Environment.CurrentManagedThreadId;
        bool otherThread = false;
        trainer.Fit(train, val, new SynchronousProgress<TrainingProgress>(p => { kinds.Add(p.Kind); otherThread |= Environment.CurrentManagedThreadId != thread; }));
        Assert.False(otherThread);
        Assert.Equal(ProgressKind.Started, kinds[0]);
        Assert.Equal(ProgressKind.Epoch, kinds[^1]);
        Assert.Contains(ProgressKind.Convolutions, kinds);
        Assert.True(kinds.IndexOf(ProgressKind.Convolutions) < kinds.IndexOf(ProgressKind.Step)); // checked before the first step
        Assert.Equal(2, kinds.Count(k => k == ProgressKind.Epoch));
    }

    private sealed class FailingStream(Stream inner, long failAfter) : Stream
    {
        private long written;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => written;
        public override long Position { get => written; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (written + buffer.Length > failAfter) throw new IOException("No space left on device (simulated)");
            inner.Write(buffer);
            written += buffer.Length;
        }
    }
}
