using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Tests.Training;

/// <summary>
/// The fused AdamW step (libtorch's <c>_fused_adamw_</c> through TorchScript, clipping and float16's loss scaling on
/// the device) against TorchSharp's per-parameter AdamW with the host-side loss scaler: the same weights after 10 steps.
/// </summary>
public sealed class FusedOptimizerTests
{
    private static readonly ModelDescription Tiny = ModelDescription.UNet(classes: 4, baseChannels: 8, depth: 3, seed: 5);

    private static HostBatch Batch(int seed) => PrecisionTests.Batch(seed);

    private static TrainerOptions Options(bool fused, Precision precision, bool clip, bool twoGroups) => new()
    {
        BatchSize = 4, Seed = 5, Device = "cpu", ManageProcessMemory = false,
        Optimizer = new()
        {
            LearningRate = 3e-3, WeightDecay = 1e-2, Fused = fused, GradientClipNorm = clip ? 0.5 : null,
            EncoderLearningRateScale = twoGroups ? 0.1 : 1,
        },
        // float16: a scale that overflows the first steps' gradients, then backs off, then grows every 3 good steps
        Precision = new() { Kind = precision, InitialLossScale = 1 << 18, LossScaleGrowthInterval = 3 },
    };

    /// <summary>Whole training steps in float32 (forward, loss, backward, step), one and two parameter groups, with
    /// and without clipping.</summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void TrainingStepsWithTheFusedStepEqualThePerParameterOnes(bool clip, bool twoGroups)
    {
        Assert.Null(FusedAdamW.Unavailable);
        using var a = new SegmentationModel(Tiny);
        using var b = new SegmentationModel(Tiny);
        using var perParameter = new Trainer(a, Options(false, Precision.Float32, clip, twoGroups));
        using var fused = new Trainer(b, Options(true, Precision.Float32, clip, twoGroups));
        var norm = Normalization.DefaultFor(3);
        for (int step = 0; step < 10; step++)
        {
            var batch = Batch(step);
            Assert.Equal(perParameter.TrainStep(batch, norm, applyOptimizer: true),
                fused.TrainStep(batch, norm, applyOptimizer: true), 1e-5);
        }
        // The two steps round differently (one kernel against about ten calls per parameter), and ten forward and
        // backward passes amplify that: on an AVX-512 CPU (Zen 5) the weights ended 1.2e-5 apart. A step that was wrong
        // (say, without its weight decay, 3e-4 of a weight over these ten steps) is still far outside 1e-4.
        AssertSameWeights(a.parameters().ToArray(), b.parameters().ToArray(), tolerance: 1e-4);
    }

    /// <summary>
    /// The optimiser step alone on the same gradients, as float16 training gives them: scaled by the loss scale, two of
    /// the ten steps with an overflow. The per-parameter side is the trainer's host path (<see cref="LossScaler"/>:
    /// unscale and check with a read-back, skip, clip, TorchSharp's AdamW); the fused side keeps all of it on the
    /// device. (Whole float16 training steps cannot be compared this way: float16 convolutions round a 1e-7 difference
    /// in the weights into a different gradient, and Adam turns that into visible steps.)
    /// </summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void TheFusedStepEqualsThePerParameterStepWithLossScalingAndOverflow(bool scaled, bool clip) =>
        CompareOptimizerSteps(CPU, scaled, clip);

    /// <summary>The comparison on <paramref name="device"/> (the CUDA tests run it there).</summary>
    internal static void CompareOptimizerSteps(Device device, bool scaled, bool clip)
    {
        using var scope = NewDisposeScope();
        using var a = new SegmentationModel(Tiny);
        using var b = new SegmentationModel(Tiny);
        a.to(device); b.to(device);
        var (pa, pb) = (a.parameters().ToArray(), b.parameters().ToArray());
        using var adamA = Adam(a);
        using var adamB = Adam(b);
        using var fused = new FusedAdamW(adamB);
        var hostScaler = scaled ? new LossScaler(1 << 10, growthInterval: 3) : null;
        using var deviceScaler = scaled ? new DeviceLossScaler(new LossScaler(1 << 10, growthInterval: 3), device)
            : null;
        var generator = new Generator(7);
        for (int step = 0; step < 10; step++)
        {
            double scale = hostScaler?.Scale ?? 1;
            foreach (var (p, q) in pa.Zip(pb))
            {
                var g = (randn(p.shape, generator: generator) * 0.01 * scale).to(device);
                if (scaled && (step == 2 || step == 6) && p.numel() > 8) g[0] = float.PositiveInfinity;
                p.grad = g.clone(); q.grad = g.clone();
            }
            bool finite = hostScaler?.Unscale(pa) ?? true;
            if (finite)
            {
                if (clip) nn.utils.clip_grad_norm_(pa, 0.05);
                adamA.step();
            }
            hostScaler?.Update(finite);
            fused.Step(clip ? 0.05 : null, deviceScaler);
        }
        // CUDA's fused kernel rounds its moments differently (a lerp, fused multiply-adds): 1.07e-6 was seen there
        AssertSameWeights(pa, pb, device.type == DeviceType.CUDA ? 2e-6 : 1e-6);
        if (hostScaler is null) return;
        deviceScaler!.ReadInto();
        Assert.Equal(2, hostScaler.SkippedSteps);
        Assert.Equal(hostScaler.Scale, deviceScaler.Host.Scale);
        Assert.Equal(hostScaler.GoodSteps, deviceScaler.Host.GoodSteps);
        Assert.Equal(hostScaler.SkippedSteps, deviceScaler.Host.SkippedSteps);
    }

    /// <summary>Two groups (the encoder at a tenth of the rate), weight decay, as the trainer builds them.</summary>
    private static TorchSharp.Modules.AdamW Adam(SegmentationModel m)
    {
        var encoder = m.Encoder.parameters().ToHashSet();
        return optim.AdamW(new[]
        {
            new TorchSharp.Modules.AdamW.ParamGroup(m.parameters().Where(encoder.Contains), 1e-4, weight_decay: 1e-2),
            new TorchSharp.Modules.AdamW.ParamGroup(m.parameters().Where(p => !encoder.Contains(p)), 1e-3,
                weight_decay: 1e-2),
        }, 1e-3);
    }

    private static void AssertSameWeights(Tensor[] a, Tensor[] b, double tolerance = 1e-6)
    {
        foreach (var (p, q) in a.Zip(b))
        {
            double scale = Math.Max(1, p.abs().max().item<float>());
            double error = (p - q).abs().max().item<float>();
            Assert.True(error <= tolerance * scale, $"{error:g3} against {scale:g3}");
        }
    }

    /// <summary>
    /// What the fused step saves on the host: tensors that cross into .NET during one training step (every libtorch
    /// call that returns one; a proxy for kernel launches, which the CPU build cannot count) and read-backs.
    /// </summary>
    [Fact]
    public void TheFusedStepMakesFarFewerCalls()
    {
        long Calls(bool fused, Precision precision)
        {
            using var model = new SegmentationModel(Tiny);
            var options = Options(fused, precision, clip: true, twoGroups: false);
            using var trainer = new Trainer(model, options with
            {
                Precision = options.Precision with { InitialLossScale = 256 },
            });
            var norm = Normalization.DefaultFor(3);
            trainer.TrainStep(Batch(0), norm, applyOptimizer: true); // state and checks made on the first step
            long before = DisposeScopeManager.Statistics.CreatedInScopeCount;
            trainer.TrainStep(Batch(1), norm, applyOptimizer: true);
            return DisposeScopeManager.Statistics.CreatedInScopeCount - before;
        }
        long plain = Calls(false, Precision.Float32), fast = Calls(true, Precision.Float32);
        int parameters = new SegmentationModel(Tiny).parameters().Count();
        // per parameter: each gradient fetched for AdamW and again for clipping (and the norms, their stack);
        // fused: the gradient lists once. AdamW's own nine kernels per parameter (TorchSharp's AdamW.step: decay,
        // two moment updates of two calls each, square root, division, epsilon, the update) return no new tensor and
        // go uncounted here; the fused step makes three calls per parameter group instead.
        Assert.True(plain - fast >= 2 * parameters, $"per-parameter {plain}, fused {fast}, {parameters} parameters");
    }
    /// <summary>
    /// The cause of "Unknown scalar type" (issue 37): the TorchScript calls' arguments are handed to libtorch as raw
    /// handles, so a temporary <see cref="Scalar"/> built for a call (the learning rate, the clip norm) was unreachable
    /// during the native call, and a garbage collection on another thread (the loader's allocations) could finalize it
    /// mid-call: libtorch then read freed memory. Here collections and finalizers run without pause beside thousands
    /// of fused steps with clipping and loss scaling; before the fix this failed within seconds.
    /// </summary>
    [Fact]
    public void TheFusedStepSurvivesCollectionsDuringItsNativeCalls()
    {
        Assert.Null(FusedAdamW.Unavailable);
        using var layer = nn.Linear(8, 4);
        var parameters = layer.parameters().ToList();
        using var adamw = optim.AdamW(parameters, 1e-3);
        using var fused = new FusedAdamW(adamw);
        using var scaler = new DeviceLossScaler(new LossScaler(256, 2.0, 0.5, 100), CPU);
        using (var x = randn(16, 8)) using (var loss = layer.forward(x).square().sum()) loss.backward();
        var stop = false;
        var collector = new Thread(() =>
        {
            while (!Volatile.Read(ref stop)) { GC.Collect(); GC.WaitForPendingFinalizers(); }
        });
        collector.Start();
        try
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            for (int i = 0; i < 20000 && clock.Elapsed.TotalSeconds < 8; i++)
                fused.Step(clipNorm: 1.0, scaler: i % 2 == 0 ? scaler : null);
        }
        finally
        {
            Volatile.Write(ref stop, true);
            collector.Join();
        }
        foreach (var p in parameters) Assert.True(isfinite(p).all().item<bool>());
    }
}
