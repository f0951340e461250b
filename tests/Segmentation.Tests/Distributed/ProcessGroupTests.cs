using Segmentation.Distributed;
using Segmentation.Models.Layers;
using static TorchSharp.torch;

namespace Segmentation.Tests.Distributed;

/// <summary>
/// A process group of two identical processes inside this one: every all-reduce doubles its input, as the sum over a
/// twin that holds the same values. With it, a synchronised layer must compute what the unsynchronised one computes on
/// the batch concatenated with itself.
/// </summary>
internal sealed class TwinGroup : ProcessGroup
{
    public TwinGroup() { Rank = 0; WorldSize = 2; }
    public override string Backend => "twin";
    public int Calls { get; private set; }
    public override void AllReduce(Tensor tensor, string what = "all-reduce")
    {
        Calls++;
        using (no_grad()) tensor.mul_(2);
    }
    public override void Broadcast(Tensor tensor, int root = 0, string what = "broadcast") => Calls++;
}

public sealed class ProcessGroupTests
{
    [Fact]
    public void LaunchersAreReadFromTheirVariables()
    {
        var mpi = LaunchEnvironment.Detect(new Dictionary<string, string?> { ["OMPI_COMM_WORLD_RANK"] = "1",
            ["OMPI_COMM_WORLD_SIZE"] = "4", ["OMPI_COMM_WORLD_LOCAL_RANK"] = "1", ["OMPI_COMM_WORLD_LOCAL_SIZE"] = "2" }
            .GetValueOrDefault);
        Assert.Equal(new LaunchEnvironment("mpirun", 1, 4, 1, 2, null, 29500), mpi);
        Assert.True(mpi!.ByMpi);
        var torchrun = LaunchEnvironment.Detect(new Dictionary<string, string?> { ["RANK"] = "3", ["WORLD_SIZE"] = "8",
            ["LOCAL_RANK"] = "3", ["LOCAL_WORLD_SIZE"] = "4", ["MASTER_ADDR"] = "node0", ["MASTER_PORT"] = "29400" }
            .GetValueOrDefault);
        Assert.Equal(new LaunchEnvironment("torchrun", 3, 8, 3, 4, "node0", 29400), torchrun);
        Assert.False(torchrun!.ByMpi);
        var slurm = LaunchEnvironment.Detect(new Dictionary<string, string?> { ["SLURM_STEP_ID"] = "0",
            ["SLURM_PROCID"] = "5", ["SLURM_NTASKS"] = "16", ["SLURM_LOCALID"] = "1" }.GetValueOrDefault);
        Assert.Equal(("srun", 5, 16, 1), (slurm!.Launcher, slurm.Rank, slurm.WorldSize, slurm.LocalRank));
        // an allocation's shell is not a run: no step, no world
        Assert.Null(LaunchEnvironment.Detect(new Dictionary<string, string?> { ["SLURM_NTASKS"] = "16" }
            .GetValueOrDefault));
        Assert.Null(LaunchEnvironment.Detect(_ => null));
    }

    [Fact]
    public void BadLaunchVariablesAreRefusedByName()
    {
        var e = Assert.Throws<OptionsException>(() => LaunchEnvironment.Detect(new Dictionary<string, string?>
            { ["WORLD_SIZE"] = "two", ["RANK"] = "0" }.GetValueOrDefault));
        Assert.Contains("WORLD_SIZE is 'two'", e.Message);
        e = Assert.Throws<OptionsException>(() => LaunchEnvironment.Detect(new Dictionary<string, string?>
            { ["WORLD_SIZE"] = "2", ["RANK"] = "2" }.GetValueOrDefault));
        Assert.Contains("rank 2 of 2", e.Message);
        e = Assert.Throws<OptionsException>(() => LaunchEnvironment.Detect(new Dictionary<string, string?>
            { ["WORLD_SIZE"] = "2" }.GetValueOrDefault));
        Assert.Contains("RANK is not", e.Message);
    }

    [Fact]
    public void CpuProcessesStartedWithoutMpiAreToldToUseMpirun()
    {
        var env = new LaunchEnvironment("torchrun", 0, 2, 0, 2, "localhost", 29500);
        var e = Assert.Throws<OptionsException>(() => ProcessGroup.Create(env, CPU, "auto", TimeSpan.FromSeconds(5)));
        Assert.Contains("mpirun -np N", e.Message);
        e = Assert.Throws<OptionsException>(() => ProcessGroup.Create(env, CPU, "nccl", TimeSpan.FromSeconds(5)));
        Assert.Contains("NCCL reduces CUDA tensors", e.Message);
        e = Assert.Throws<OptionsException>(() => ProcessGroup.Create(env, CPU, "gloo", TimeSpan.FromSeconds(5)));
        Assert.Contains("'gloo' is not known", e.Message);
    }

    /// <summary>
    /// Synchronised batch norm on a batch x with a twin process holding x equals batch norm over [x; x] in float64:
    /// the output, the running statistics (unbiased variance over 2N), and the gradients of input, weight and bias
    /// (the input's gradient is that of the loss summed over both processes; weight and bias get this process's part).
    /// </summary>
    [Fact]
    public void SynchronisedBatchNormMatchesAFloat64ReferenceOverTheGlobalBatch()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var x = (randn(3, 5, 6, 7) * 2 + 1).requires_grad_();
        var upstream = randn(3, 5, 6, 7);
        var twin = new TwinGroup();
        var bn = new BatchNorm(5) { Sync = twin };
        using (no_grad())
        {
            bn.Weight.copy_(rand(5) + 0.5);
            bn.Bias.copy_(randn(5));
        }
        bn.train();
        var y = bn.forward(x);
        (y * upstream).sum().backward();
        Assert.Equal(2, twin.Calls); // statistics forward, gradient sums backward

        var x64 = x.detach().to_type(ScalarType.Float64).requires_grad_();
        var w64 = bn.Weight.detach().to_type(ScalarType.Float64).requires_grad_();
        var b64 = bn.Bias.detach().to_type(ScalarType.Float64).requires_grad_();
        var both = cat(new[] { x64, x64 });
        var mean = both.mean(new long[] { 0, 2, 3 }, keepdim: true);
        var variance = (both - mean).square().mean(new long[] { 0, 2, 3 }, keepdim: true);
        var reference = (both - mean) / (variance + 1e-5).sqrt() * w64.view(1, -1, 1, 1) + b64.view(1, -1, 1, 1);
        var up64 = upstream.to_type(ScalarType.Float64);
        (reference * cat(new[] { up64, up64 })).sum().backward();

        AssertClose(reference.narrow(0, 0, 3), y, 1e-5);
        AssertClose(x64.grad! / 2, x.grad!, 1e-5); // x64 is both halves: each process gets one half's share
        AssertClose(w64.grad! / 2, bn.Weight.grad!, 1e-5);
        AssertClose(b64.grad! / 2, bn.Bias.grad!, 1e-5);
        long n = 2 * 3 * 6 * 7;
        AssertClose(mean.flatten() * 0.1, bn.RunningMean, 1e-5);
        AssertClose(0.9 + variance.flatten() * n / (n - 1) * 0.1, bn.RunningVariance, 1e-5);
    }

    /// <summary>
    /// The reducer averages in place through bucket views: with a twin (sum twice, divide by two) every gradient is
    /// what backward made, the next backward accumulates into the same buckets, and parameters that stop training
    /// leave the buckets.
    /// </summary>
    [Fact]
    public void GradientsBecomeViewsOfBucketsAndAreAveraged()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var first = TorchSharp.torch.nn.Linear(6, 4);
        var second = TorchSharp.torch.nn.Linear(4, 3);
        var parameters = first.parameters().Concat(second.parameters()).ToArray();
        var twin = new TwinGroup();
        using var reducer = new GradientReducer(twin, parameters);
        var x = randn(5, 6);
        Tensor Loss() => second.forward(first.forward(x).relu()).square().sum();
        Loss().backward();
        var expected = parameters.Select(p => p.grad!.clone()).ToArray();
        reducer.Reduce("step 1");
        Assert.Equal(1, reducer.Buckets); // 4x6 + 4 + 3x4 + 3 floats: one bucket
        for (int i = 0; i < parameters.Length; i++) AssertClose(expected[i], parameters[i].grad!, 1e-7);
        Loss().backward(); // accumulates into the bucket views
        reducer.Reduce("step 2");
        for (int i = 0; i < parameters.Length; i++) AssertClose(expected[i] * 2, parameters[i].grad!, 1e-6);
        Assert.Equal((4 * 6 + 4 + 3 * 4 + 3) * 4L, reducer.Bytes);
        foreach (var p in first.parameters()) p.requires_grad_(false);
        reducer.Reduce("step 3");
        Assert.Equal((3 * 4 + 3) * 4L, reducer.Bytes);
    }

    /// <summary>
    /// Sharded validation sums what each process counted: with a twin holding the same counts, the confusion matrix
    /// and the instance counts double and every metric derived from them stays (ratios of sums).
    /// </summary>
    [Fact]
    public void ValidationCountsAreSummedOverProcesses()
    {
        using var scope = NewDisposeScope();
        manual_seed(9);
        var truth = randint(0, 3, new long[] { 2, 8, 8 });
        var prediction = randint(0, 3, new long[] { 2, 8, 8 });
        using var alone = new Segmentation.Evaluation.ConfusionMatrix(3);
        using var shared = new Segmentation.Evaluation.ConfusionMatrix(3);
        alone.Update(prediction, truth);
        shared.Update(prediction, truth);
        shared.AllReduce(new TwinGroup(), CPU);
        var (a, b) = (alone.ToArray(), shared.ToArray());
        for (int i = 0; i < 3; i++) for (int j = 0; j < 3; j++) Assert.Equal(2 * a[i, j], b[i, j]);
        Assert.Equal(alone.Compute().MeanIoU, shared.Compute().MeanIoU, 12);

        var objects = new[] { 0, 1, 1, 0, 2, 2, 0, 3, 3 };
        var found = new[] { 0, 1, 1, 0, 2, 0, 0, 0, 4 };
        var scorer = Segmentation.Evaluation.InstanceScorer.ForObjects();
        scorer.Add(objects, null, found, null);
        var one = scorer.Compute();
        scorer.AllReduce(new TwinGroup());
        var two = scorer.Compute();
        Assert.Equal(2 * one.Images, two.Images);
        Assert.Equal(2 * one.InstancesTrue, two.InstancesTrue);
        Assert.Equal(one.TruePositives.Select(t => 2 * t), two.TruePositives);
        Assert.Equal(one.Ap, two.Ap, 12);
        Assert.Equal(one.PerClass[0].Pq, two.PerClass[0].Pq, 12);
    }

    private static void AssertClose(Tensor expected, Tensor actual, double tolerance)
    {
        var e = expected.detach().to_type(ScalarType.Float64);
        var a = actual.detach().to_type(ScalarType.Float64);
        double error = (e - a).abs().max().item<double>(), scale = e.abs().max().item<double>() + 1e-12;
        Assert.True(error <= tolerance * Math.Max(1, scale), $"error {error:g3} against scale {scale:g3}");
    }
}
