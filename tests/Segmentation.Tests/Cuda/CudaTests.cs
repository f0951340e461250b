using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using Segmentation.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Tests.Cuda;

/// <summary>A test that needs CUDA: skipped, saying so, on machines without it (CI); run on a lent GPU by tools/gpu/run.sh.</summary>
public sealed class CudaFactAttribute : FactAttribute
{
    public CudaFactAttribute()
    {
        if (!CudaTests.Available) Skip = "CUDA is not available here; these run on a GPU machine (docs/gpu.md)";
    }
}

/// <summary>The same, for theories.</summary>
public sealed class CudaTheoryAttribute : TheoryAttribute
{
    public CudaTheoryAttribute()
    {
        if (!CudaTests.Available) Skip = "CUDA is not available here; these run on a GPU machine (docs/gpu.md)";
    }
}

/// <summary>The CUDA path: kernels against float64, training in each precision, and checkpoints across devices.</summary>
public class CudaTests
{
    internal static bool Available { get; } = cuda.is_available();

    private static readonly ModelDescription Tiny = ModelDescription.UNet(classes: 4, baseChannels: 8, depth: 3, seed: 5);

    private static (SegmentationDataset Train, SegmentationDataset Val) Shapes(int count = 64, int size = 32)
        => SegmentationDataset.Shapes(new ShapesOptions { Count = count, Size = size, Seed = 11, MaxShapes = 2 }).Split(0.75, seed: 0);

    /// <summary>The fused AdamW step (and its device-side loss scaling) equals TorchSharp's per-parameter step on
    /// CUDA too.</summary>
    [CudaTheory]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void The_fused_optimizer_step_equals_the_per_parameter_step_on_CUDA(bool scaled, bool clip) =>
        Segmentation.Tests.Training.FusedOptimizerTests.CompareOptimizerSteps(CUDA, scaled, clip);

    /// <summary>NCCL through our binding at world size 1: the collectives run and leave the values as they
    /// are.</summary>
    [CudaFact]
    public void NCCL_at_world_size_one_all_reduces_and_broadcasts()
    {
        using var group = Segmentation.Distributed.ProcessGroup.Nccl(0, 1, 0);
        Assert.Equal("nccl", group.Backend);
        using var t = arange(10, ScalarType.Float32, CUDA);
        group.AllReduce(t);
        group.Broadcast(t);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => (float)i), t.cpu().data<float>().ToArray());
        var host = new double[] { 1.5, 2 };
        group.AllReduce(host);
        Assert.Equal(new[] { 1.5, 2 }, host);
    }

    [CudaTheory]
    [InlineData(Precision.Float32)]
    [InlineData(Precision.BFloat16)]
    [InlineData(Precision.Float16)]
    public void Every_convolution_of_a_model_has_a_route_on_CUDA_that_matches_float64(Precision precision)
    {
        using var model = new SegmentationModel(ModelDescription.UNet(classes: 4, baseChannels: 16, depth: 3, seed: 5));
        model.to(CUDA);
        model.Precision = precision;
        model.train();
        var report = model.CheckLayers(new long[] { 2, 3, 64, 64 }, training: true)!;
        Assert.Equal("cuda:0", report.Device);
        Assert.All(report.Layers, l => Assert.True(l.Tried.Last().Result.Passed, $"{l.Layer}: {l.Tried.Last().Result}"));
        Assert.All(report.Layers, l => Assert.Equal(precision.ComputeType(), l.Shapes[0].DataType));
    }

    [CudaTheory]
    [InlineData(Precision.Float32)]
    [InlineData(Precision.BFloat16)]
    [InlineData(Precision.Float16)]
    public void A_UNet_learns_shapes_on_CUDA_in_each_precision(Precision precision)
    {
        // On the CPU this configuration goes from a loss of 1.92 to 0.36 (fp32) and 0.31 (bf16), mean IoU 0.83 and 0.85.
        var (train, val) = Shapes(400);
        using var model = new SegmentationModel(ModelDescription.UNet(classes: 4, baseChannels: 16, depth: 3, seed: 5));
        using var trainer = new Trainer(model, new TrainerOptions
        {
            Epochs = 10, BatchSize = 8, Loss = LossKind.CrossEntropyDice, Seed = 5, Workers = 2, Device = "cuda",
            ManageProcessMemory = false,
            Optimizer = new() { LearningRate = 3e-3 },
            Precision = new() { Kind = precision },
        });
        var result = trainer.Fit(train, val);
        Assert.All(result.History, h => Assert.True(double.IsFinite(h.TrainLoss), $"epoch {h.Epoch}: loss {h.TrainLoss}"));
        Assert.True(result.History[^1].TrainLoss < 0.5 * result.History[0].TrainLoss, string.Join(", ", result.History.Select(h => h.TrainLoss.ToString("F3"))));
        Assert.True(result.Metrics!.MeanIoU > 0.6, $"mean IoU {result.Metrics.MeanIoU:F3}");
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));
    }

    [CudaFact]
    public void A_checkpoint_trained_on_CUDA_predicts_the_same_labels_on_the_CPU()
    {
        using var dir = new TempDir();
        var (train, val) = Shapes(32);
        using (var model = new SegmentationModel(Tiny))
        using (var trainer = new Trainer(model, new TrainerOptions { Epochs = 2, BatchSize = 8, Seed = 5, Device = "cuda", ManageProcessMemory = false, Checkpoints = new() { Directory = dir.Path } }))
            trainer.Fit(train, val);
        var ckpt = Checkpoint.Load(dir["last.ckpt"]);
        using var onCuda = new Predictor(ckpt, new PredictorOptions { Device = "cuda" });
        using var onCpu = new Predictor(ckpt, new PredictorOptions { Device = "cpu" });
        long same = 0, total = 0;
        for (int i = 0; i < val.Count; i++)
        {
            var image = val.Load(i).Image;
            var a = onCuda.Predict(image).Labels;
            var b = onCpu.Predict(image).Labels;
            same += a.Zip(b).Count(x => x.First == x.Second);
            total += a.Length;
        }
        Assert.True(same >= 0.999 * total, $"{total - same} of {total} pixels differ between CUDA and the CPU");
    }

    [CudaTheory]
    [InlineData(Precision.BFloat16, 0.95)]
    [InlineData(Precision.Float16, 0.99)]
    public void Low_precision_on_CUDA_matches_float32_within_the_documented_tolerance(Precision precision, double minCosine)
        => Segmentation.Tests.Training.PrecisionTests.AssertMatchesFloat32(precision, NormLayer.Batch, minCosine, CUDA);
}
