using Segmentation.Data;
using static TorchSharp.torch;

namespace Segmentation.Tests.Data;

public class DataLoaderTests
{
    private static SegmentationDataset Shapes(int count = 21) => SegmentationDataset.Shapes(new ShapesOptions { Count = count, Size = 32, Seed = 1 });

    [Fact]
    public void Batches_and_their_augmentations_are_identical_for_1_and_4_workers()
    {
        var ds = Shapes();
        List<HostBatch> Run(int workers) => new DataLoader(ds, new DataLoaderOptions
        {
            BatchSize = 4, Workers = workers, Seed = 9, Transform = Compose.TrainPreset(24, 24),
        }).Epoch(2).ToList();
        var one = Run(1);
        var four = Run(4);
        Assert.Equal(6, one.Count);
        for (int b = 0; b < one.Count; b++)
        {
            Assert.Equal(one[b].Names, four[b].Names);
            Assert.Equal(one[b].Images, four[b].Images);
            Assert.Equal(one[b].Masks, four[b].Masks);
        }
        Assert.Equal(1, one[^1].Count); // 21 = 5 * 4 + 1
    }

    [Fact]
    public void Shuffle_changes_with_the_epoch_and_covers_every_sample_once()
    {
        var loader = new DataLoader(Shapes(), new DataLoaderOptions { BatchSize = 5, Workers = 2, DropLast = true });
        var e0 = loader.Epoch(0).SelectMany(b => b.Names).ToList();
        var e1 = loader.Epoch(1).SelectMany(b => b.Names).ToList();
        Assert.Equal(20, e0.Count);
        Assert.Equal(e0.Count, e0.Distinct().Count());
        Assert.NotEqual(e0, e1);
    }

    [Fact]
    public void No_worker_outlives_an_epoch_that_ends_is_abandoned_or_fails()
    {
        var loader = new DataLoader(Shapes(40), new DataLoaderOptions { BatchSize = 2, Workers = 3 });
        foreach (var _ in loader.Epoch(0)) { }
        Assert.Equal(0, loader.ActiveWorkers);

        foreach (var _ in loader.Epoch(1)) break;
        Assert.Equal(0, loader.ActiveWorkers);

        var failing = new DataLoader(Shapes(40), new DataLoaderOptions { BatchSize = 2, Workers = 3, Transform = new Failing() });
        var e = Assert.Throws<DataException>(() => failing.Epoch(0).ToList());
        Assert.Contains("boom", e.Message);
        Assert.Equal(0, failing.ActiveWorkers);
    }

    [Fact]
    public void Batches_become_uint8_images_and_int64_masks()
    {
        using var scope = NewDisposeScope();
        var batch = new DataLoader(Shapes(), new DataLoaderOptions { BatchSize = 3, Workers = 1, Shuffle = false }).Epoch(0).First();
        var (images, masks) = batch.ToDevice(CPU);
        Assert.Equal(new long[] { 3, 3, 32, 32 }, images.shape);
        Assert.Equal(ScalarType.Byte, images.dtype);
        Assert.Equal(new long[] { 3, 32, 32 }, masks.shape);
        Assert.Equal(ScalarType.Int64, masks.dtype);
        // Planar layout: channel 1 of sample 0 pixel 5 equals the interleaved source.
        var s = Shapes().Load(0);
        Assert.Equal(s.Image.Pixels[5 * 3 + 1], images[0, 1, 0, 5].item<byte>());
        var normalized = Normalization.ImageNet.Apply(images);
        Assert.Equal((s.Image.Pixels[5 * 3 + 1] / 255f - 0.456f) / 0.224f, normalized[0, 1, 0, 5].item<float>(), 4);
    }

    [Fact]
    public void The_cache_returns_the_same_samples()
    {
        var ds = Shapes();
        var plain = new DataLoader(ds, new DataLoaderOptions { BatchSize = 4, Workers = 2 });
        var cached = new DataLoader(ds, new DataLoaderOptions { BatchSize = 4, Workers = 2, CacheBytes = 1 << 24 });
        for (int epoch = 0; epoch < 2; epoch++)
            Assert.Equal(plain.Epoch(epoch).SelectMany(b => b.Images), cached.Epoch(epoch).SelectMany(b => b.Images));
    }

    [Fact]
    public void Mixed_sizes_in_a_batch_are_a_clear_error()
    {
        var a = new Sample(new ImageBuffer(4, 4, 1), new byte[16], "a");
        var b = new Sample(new ImageBuffer(5, 4, 1), new byte[20], "b");
        var e = Assert.Throws<DataException>(() => DataLoader.Collate(new[] { a, b }));
        Assert.Contains("b is 5x4x1", e.Message);
    }

    private sealed class Failing : ISampleTransform
    {
        public Sample Apply(Sample sample, Random rng, int ignoreIndex) =>
            sample.Name.EndsWith("17") ? throw new DataException("boom") : sample;
    }

    [Fact]
    public void Orders_augmentations_and_synthetic_images_are_the_same_in_every_process()
    {
        // .NET randomises HashCode per process: seeds derived from it would give a resumed run (a new process) another
        // data order, and builtin:shapes other images. These values were printed once and must never change.
        var loader = new DataLoader(Shapes(10), new DataLoaderOptions { BatchSize = 2, Seed = 7, Transform = Compose.TrainPreset(24, 24) });
        Assert.Equal(new[] { 0, 4, 8, 1, 3, 9, 6, 2, 5, 7 }, loader.Order(3));
        Assert.Equal(3711783909u, Fnv(loader.Prepare(loader.Order(3), 3, 0).Image.Pixels));
        Assert.Equal(1188729583u, Fnv(Shapes(10).Load(4).Image.Pixels));
    }

    private static uint Fnv(byte[] data)
    {
        uint h = 2166136261;
        foreach (var b in data) h = (h ^ b) * 16777619;
        return h;
    }
}
