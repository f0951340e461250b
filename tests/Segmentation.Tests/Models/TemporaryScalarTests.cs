using Segmentation.Models.Layers;
using static TorchSharp.torch;

namespace Segmentation.Tests.Models;

/// <summary>
/// The per-step layer code passes libtorch no temporary scalars (docs/reliability.md, "Unknown scalar type"): batch
/// norm's step count, the residual addition, in place and not, run thousands of times while another thread collects
/// garbage and runs finalizers without pause. A temporary scalar there is finalized during its native call sooner or
/// later, and libtorch then reads a freed scalar.
/// </summary>
public class TemporaryScalarTests
{
    [Fact]
    public void Batch_norm_and_residual_additions_survive_collections_during_their_native_calls()
    {
        using var bn = new BatchNorm(4);
        bn.train();
        using var a = randn(2, 4, 4, 4);
        using var b = randn(2, 4, 4, 4);
        var stop = false;
        var collector = new Thread(() =>
        {
            while (!Volatile.Read(ref stop)) { GC.Collect(); GC.WaitForPendingFinalizers(); }
        });
        collector.Start();
        long steps = 0;
        try
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            for (; steps < 200000 && clock.Elapsed.TotalSeconds < 6; steps++)
            {
                using var scope = NewDisposeScope();
                var y = bn.forward(a);
                LayerOps.Add(y, b, inPlace: true);
                LayerOps.Add(y, b);
            }
        }
        finally
        {
            Volatile.Write(ref stop, true);
            collector.Join();
        }
        var counted = bn.state_dict()["num_batches_tracked"].item<long>();
        Assert.Equal(steps, counted);
    }
}
