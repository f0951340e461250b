using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Tests.Training;

/// <summary>--precision auto: bf16 only where the CPU has it natively and this model is measured faster in it.</summary>
public sealed class AutoPrecisionTests
{
    private const string Avx2Cpu = "flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c";
    private const string Bf16Cpu = Avx2Cpu + " avx512f avx512dq avx512bw avx512vl avx512_bf16";

    private static readonly ModelDescription Tiny = ModelDescription.UNet(inChannels: 3, classes: 3, baseChannels: 4,
        depth: 2);

    [Fact]
    public void NativeBfloat16IsReadFromTheCpuFlags()
    {
        Assert.Contains("neither avx512_bf16 nor amx_bf16", AutoPrecision.NoNativeBf16(Avx2Cpu, maxIsa: ""));
        Assert.Null(AutoPrecision.NoNativeBf16(Bf16Cpu, maxIsa: ""));
        Assert.Null(AutoPrecision.NoNativeBf16(Avx2Cpu + " amx_tile amx_bf16", maxIsa: ""));
        Assert.Contains("ONEDNN_MAX_CPU_ISA=AVX2", AutoPrecision.NoNativeBf16(Bf16Cpu, maxIsa: "AVX2"));
        Assert.Null(AutoPrecision.NoNativeBf16(Bf16Cpu, maxIsa: "AVX512_CORE_BF16"));
        Assert.Equal(Precision.Auto, Precisions.Parse("auto"));
    }

    [Fact]
    public void ACpuWithoutBfloat16FlagsGetsFloat32WithoutTiming()
    {
        using var model = new SegmentationModel(Tiny);
        var decision = AutoPrecision.Choose(model, CPU, new long[] { 2, 3, 32, 32 }, cpuFlags: Avx2Cpu);
        Assert.Equal(Precision.Float32, decision.Chosen);
        Assert.Null(decision.Bf16Speedup); // nothing was timed: bf16 would be emulated
        Assert.Contains("emulated", decision.Reason);
        Assert.Equal(Precision.Float32, model.Precision);
    }

    [Fact]
    public void ASmallStepStaysFloat32WithoutTiming()
    {
        using var model = new SegmentationModel(Tiny);
        var decision = AutoPrecision.Choose(model, CPU, new long[] { 2, 3, 32, 32 }, cpuFlags: Bf16Cpu);
        Assert.Equal(Precision.Float32, decision.Chosen);
        Assert.Null(decision.Bf16Speedup);
        Assert.Contains("too little arithmetic", decision.Reason);
    }

    [Fact]
    public void ACpuWithBfloat16FlagsGetsWhatTheSideBySideSays()
    {
        // enough arithmetic to be timed: 2 x 3 x the forward pass's multiply-accumulates
        using var model = new SegmentationModel(ModelDescription.UNet(inChannels: 3, classes: 3, baseChannels: 32,
            depth: 3));
        var shape = new long[] { 2, 3, 112, 112 };
        Assert.True(6 * Segmentation.Models.ModelSummary.EstimateMultiplyAccumulates(model, 112, 112) / 1e9
            >= AutoPrecision.MinimumStepGmac);
        var before = model.parameters().Select(p => p.detach().clone()).ToArray();
        var decision = AutoPrecision.Choose(model, CPU, shape, cpuFlags: Bf16Cpu);
        Assert.NotNull(decision.Bf16Speedup);
        Assert.Equal(decision.Bf16Speedup >= AutoPrecision.Threshold, decision.Chosen == Precision.BFloat16);
        Assert.Contains($"{decision.Bf16Speedup:F2}x", decision.Reason);
        // the timing leaves the model as it was: precision, weights, no gradients, training mode
        Assert.Equal(Precision.Float32, model.Precision);
        Assert.All(model.parameters().Zip(before), pair => Assert.True(pair.First.detach().allclose(pair.Second, 0, 0)));
        Assert.All(model.parameters(), p => Assert.Null(p.grad));
        Assert.True(model.training);
    }

    [Fact]
    public void TheTrainerResolvesAutoAndRecordsWhatItChose()
    {
        var (train, val) = SegmentationDataset.Shapes(new ShapesOptions { Count = 16, Size = 32, Seed = 11,
            MaxShapes = 2 }).Split(0.75, seed: 0);
        using var model = new SegmentationModel(Tiny with { Classes = train.Description.Classes });
        using var tmp = new TempDir();
        using var trainer = new Trainer(model, new TrainerOptions { Epochs = 1, BatchSize = 4, Threads = 1,
            Precision = new() { Kind = Precision.Auto },
                Checkpoints = new() { Directory = tmp.Path } });
        var messages = new List<string>();
        trainer.Fit(train, val, new SynchronousProgress<TrainingProgress>(p =>
        {
            if (p.Message is { } m) messages.Add(m);
        }));
        Assert.NotEqual(Precision.Auto, trainer.Options.Precision.Kind);
        Assert.Equal(trainer.Options.Precision.Kind, model.Precision);
        Assert.Contains(messages, m => m.StartsWith($"precision auto: {trainer.Options.Precision.Kind.ShortName()} ("));
        if (AutoPrecision.NoNativeBf16(AutoPrecision.CpuFlags()) is not null)
            Assert.Equal(Precision.Float32, trainer.Options.Precision.Kind);
        var saved = TrainerOptions.FromCheckpoint(Segmentation.Checkpoints.Checkpoint.Load(
            Path.Combine(tmp.Path, "last.ckpt")));
        Assert.Equal(trainer.Options.Precision.Kind, saved.Precision.Kind);
    }
}
