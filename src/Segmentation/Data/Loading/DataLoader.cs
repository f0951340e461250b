using System.Collections.Concurrent;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Data;

/// <summary>How a <see cref="DataLoader"/> batches and prepares samples.</summary>
internal sealed record DataLoaderOptions
{
    /// <summary>Samples per batch.</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>Shuffle each epoch (seeded by <see cref="Seed"/> and the epoch number).</summary>
    public bool Shuffle { get; init; } = true;
    /// <summary>Drop the last batch when it is smaller than <see cref="BatchSize"/>.</summary>
    public bool DropLast { get; init; }
    /// <summary>Seed for the order and for every random augmentation.</summary>
    public int Seed { get; init; }
    /// <summary>Worker threads that decode and augment; 0 means one per core.</summary>
    public int Workers { get; init; }
    /// <summary>Batches prepared ahead of the consumer; 0 means 2 per worker.</summary>
    public int Prefetch { get; init; }
    /// <summary>Joint transform applied to each sample (null: none).</summary>
    public ISampleTransform? Transform { get; init; }
    /// <summary>Keep decoded samples in memory up to this many bytes (0: no cache), so later epochs skip
    /// decoding.</summary>
    public long CacheBytes { get; init; }
    /// <summary>
    /// Data-parallel training: each batch of <see cref="BatchSize"/> (the global batch) is cut into this many equal
    /// parts, one per process, so the samples of step k and their augmentation do not depend on the process count.
    /// </summary>
    public int Shards { get; init; } = 1;
    /// <summary>The part of each batch this process builds, 0 to <see cref="Shards"/> - 1.</summary>
    public int Shard { get; init; }
    /// <summary>The normalisation the batches are for: a per-image scheme has each sample's levels taken from its
    /// whole image (before the transform) and carried in the batch.</summary>
    public Normalization? Normalization { get; init; }
}

/// <summary>A batch on the host: images N x C x H x W (uint8, planar), masks N x H x W (labels).</summary>
internal sealed class HostBatch
{
    /// <summary>Samples in the batch.</summary>
    public int Count { get; init; }
    /// <summary>Image channels.</summary>
    public int Channels { get; init; }
    /// <summary>Height.</summary>
    public int Height { get; init; }
    /// <summary>Width.</summary>
    public int Width { get; init; }
    /// <summary>Images, N x C x H x W, 8-bit (empty when <see cref="Images16"/> holds them).</summary>
    public byte[] Images { get; init; } = Array.Empty<byte>();
    /// <summary>Images at 16 bits a sample, N x C x H x W, when any image of the batch is 16-bit (its 8-bit images
    /// widened by 257, the same share of full scale); null otherwise.</summary>
    public ushort[]? Images16 { get; init; }
    /// <summary>Labels, N x H x W.</summary>
    public byte[] Masks { get; init; } = Array.Empty<byte>();
    /// <summary>Sample names.</summary>
    public string[] Names { get; init; } = Array.Empty<string>();
    /// <summary>Instance data: object numbers, N x H x W (null for semantic data).</summary>
    public ushort[]? Instances { get; init; }
    /// <summary>Each image's per-image normalisation, offset and scale (units of full scale), taken from the whole
    /// image before any crop; null when the normalisation is fixed.</summary>
    public float[]? Levels { get; init; }

    /// <summary>
    /// Tensors on <paramref name="device"/>: images N x C x H x W (uint8, or int32 for 16-bit samples: <see
    /// cref="Normalization"/> divides by the full scale either dtype means), masks int64 N x H x W.
    /// </summary>
    public (Tensor Images, Tensor Masks) ToDevice(Device device)
    {
        var shape = new long[] { Count, Channels, Height, Width };
        var images = Images16 is { } wide ? Native(Array.ConvertAll(wide, v => (int)v), shape)
            : Native(Images, shape);
        var masks = Native(Masks, new long[] { Count, Height, Width });
        if (device.type == DeviceType.CUDA)
        {
            // A plain (pageable) copy: pinning a fresh buffer every step made every other step wait for pinned memory
            // (the README's GPU section, measured with tools/gpu/run.sh), and a batch is quick to copy.
            images = images.to(device);
            masks = masks.to(device);
        }
        return (images, masks.to_type(ScalarType.Int64));
    }

    /// <summary>A uint8 tensor with a copy of <paramref name="data"/>, in native memory (TorchSharp's array factory
    /// clones the array on the managed heap first).</summary>
    private static Tensor Native(byte[] data, long[] shape)
    {
        var t = empty(shape, ScalarType.Byte);
        if (data.Length != t.numel())
            throw new ArgumentException($"A batch of shape [{string.Join(", ", shape)}] needs {t.numel()} bytes; got "
                + $"{data.Length}.");
        System.Runtime.InteropServices.Marshal.Copy(data, 0, t.storage<byte>().data_ptr(), data.Length);
        return t;
    }

    /// <summary>An int32 tensor with a copy of <paramref name="data"/>, in native memory.</summary>
    private static Tensor Native(int[] data, long[] shape)
    {
        var t = empty(shape, ScalarType.Int32);
        if (data.Length != t.numel())
            throw new ArgumentException($"A batch of shape [{string.Join(", ", shape)}] needs {t.numel()} samples; "
                + $"got {data.Length}.");
        System.Runtime.InteropServices.Marshal.Copy(data, 0, t.storage<int>().data_ptr(), data.Length);
        return t;
    }
}

/// <summary>
/// Reads a <see cref="SegmentationDataset"/> in batches with worker threads that decode, augment and collate in
/// parallel, and a bounded queue of prepared batches. The order of samples and each sample's random augmentation
/// depend only on (seed, epoch, position), so any worker count yields the same batches. Workers live for one
/// epoch's enumeration and are joined when it ends, is abandoned, or fails.
/// </summary>
internal sealed class DataLoader
{
    private readonly SegmentationDataset dataset;
    private readonly ConcurrentDictionary<int, Sample> cache = new();
    private long cachedBytes;
    private int activeWorkers;

    /// <summary>Worker threads running now (0 whenever no epoch is being enumerated).</summary>
    public int ActiveWorkers => Volatile.Read(ref activeWorkers);

    /// <summary>The options.</summary>
    public DataLoaderOptions Options { get; }

    /// <summary>The data set read.</summary>
    public SegmentationDataset Dataset => dataset;

    /// <summary>Creates a loader.</summary>
    public DataLoader(SegmentationDataset dataset, DataLoaderOptions? options = null)
    {
        this.dataset = dataset;
        Options = options ?? new DataLoaderOptions();
        if (Options.BatchSize < 1) throw new OptionsException($"Batch size {Options.BatchSize} must be at least 1.");
        if (Options.Workers < 0)
            throw new OptionsException($"Worker count {Options.Workers} must be 0 (one per core) or more.");
        if (Options.Prefetch < 0)
            throw new OptionsException($"Prefetch {Options.Prefetch} must be 0 (automatic) or more.");
        if (dataset.Count == 0) throw new DataException($"{dataset.Origin}: the data set is empty.");
        if (Options.Shards < 1 || Options.Shard < 0 || Options.Shard >= Options.Shards
            || Options.BatchSize % Options.Shards != 0 || (Options.Shards > 1 && !Options.DropLast))
            throw new OptionsException($"Shard {Options.Shard} of {Options.Shards} of batches of {Options.BatchSize}: "
                + "the batch must divide into the shards, and sharded batches must all be full (drop-last).");
        if (Options.DropLast && dataset.Count < Options.BatchSize)
            throw new DataException($"{dataset.Origin}: {dataset.Count} samples make no full batch of "
                + $"{Options.BatchSize} with drop-last on.");
    }

    /// <summary>Worker threads actually used.</summary>
    public int Workers => Options.Workers > 0 ? Options.Workers : Environment.ProcessorCount;

    /// <summary>Batches in one epoch.</summary>
    public int BatchesPerEpoch => Options.DropLast ? dataset.Count / Options.BatchSize
        : (dataset.Count + Options.BatchSize - 1) / Options.BatchSize;

    /// <summary>Samples in one epoch (this process's share when sharded).</summary>
    public int SamplesPerEpoch => Options.DropLast ? BatchesPerEpoch * (Options.BatchSize / Options.Shards)
        : dataset.Count;

    /// <summary>The sample order of an epoch (seeded; identity without shuffle).</summary>
    public int[] Order(int epoch)
    {
        var order = Enumerable.Range(0, dataset.Count).ToArray();
        if (Options.Shuffle) new Random(Seeds.Mix(Options.Seed, epoch, 0x0D3E)).Shuffle(order);
        return order;
    }

    /// <summary>The batches of epoch <paramref name="epoch"/>, in order. Throws the first worker's exception.</summary>
    public IEnumerable<HostBatch> Epoch(int epoch, CancellationToken cancellation = default, int skipBatches = 0)
    {
        int batches = BatchesPerEpoch;
        if (skipBatches >= batches) yield break;
        int workers = Math.Min(Workers, batches - skipBatches);
        using var queue = new EpochQueue(this, Order(epoch), epoch, batches, skipBatches, Options.Prefetch > 0
            ? Options.Prefetch : 2 * workers, cancellation);
        var threads = Enumerable.Range(0, workers)
            .Select(i => new Thread(queue.Work) { IsBackground = true, Name = $"segmentation-loader-{i}" }).ToArray();
        foreach (var t in threads) t.Start();
        try
        {
            for (int b = skipBatches; b < batches; b++) yield return queue.Take(b);
        }
        finally
        {
            queue.Stop();
            foreach (var t in threads) t.Join();
        }
    }

    /// <summary>
    /// One epoch's hand-off between the workers and the consumer: workers claim batch numbers in order and build them
    /// while fewer than <c>prefetch</c> are waiting; the consumer takes them in order. The first failure wins and stops
    /// all.
    /// </summary>
    private sealed class EpochQueue : IDisposable
    {
        private readonly DataLoader loader;
        private readonly int[] order;
        private readonly int epoch, batches;
        private readonly HostBatch?[] ready;
        private readonly SemaphoreSlim slots;
        private readonly CancellationTokenSource stop;
        private readonly CancellationToken cancellation;
        private readonly object gate = new();
        private int next;
        private Exception? failure;

        public EpochQueue(DataLoader loader, int[] order, int epoch, int batches, int skipBatches, int prefetch,
            CancellationToken cancellation)
        {
            (this.loader, this.order, this.epoch, this.batches, this.cancellation) = (loader, order, epoch, batches,
                cancellation);
            ready = new HostBatch?[batches];
            slots = new SemaphoreSlim(prefetch);
            stop = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
            next = skipBatches - 1;
        }

        /// <summary>A worker thread's loop.</summary>
        public void Work()
        {
            Interlocked.Increment(ref loader.activeWorkers);
            try
            {
                while (true)
                {
                    slots.Wait(stop.Token);
                    int b = Interlocked.Increment(ref next);
                    if (b >= batches) return;
                    var batch = loader.Build(order, epoch, b);
                    lock (gate) { ready[b] = batch; Monitor.PulseAll(gate); }
                }
            }
            catch (OperationCanceledException) { }
            catch (Exception e)
            {
                lock (gate) { failure ??= e; Monitor.PulseAll(gate); }
                stop.Cancel();
            }
            finally { Interlocked.Decrement(ref loader.activeWorkers); }
        }

        /// <summary>Batch <paramref name="b"/>, once built; rethrows a worker's failure, or the cancellation.</summary>
        public HostBatch Take(int b)
        {
            HostBatch batch;
            lock (gate)
            {
                while (ready[b] is null && failure is null && !stop.IsCancellationRequested) Monitor.Wait(gate, 100);
                if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure)
                    .Throw();
                cancellation.ThrowIfCancellationRequested();
                if (ready[b] is null) throw new OperationCanceledException();
                batch = ready[b]!;
                ready[b] = null;
            }
            slots.Release();
            return batch;
        }

        /// <summary>Tells the workers to stop (they finish the batch in hand).</summary>
        public void Stop() => stop.Cancel();

        public void Dispose()
        {
            slots.Dispose();
            stop.Dispose();
        }
    }

    /// <summary>Sample at <paramref name="position"/> of epoch <paramref name="epoch"/>, decoded and transformed
    /// exactly as in that epoch.</summary>
    public Sample Prepare(int[] order, int epoch, int position)
    {
        var sample = LoadCached(order[position]);
        if (Options.Transform is { } t)
            sample = t.Apply(sample, new Random(Seeds.Mix(Options.Seed, epoch, position, 0x7A11)), Labels.Ignore);
        return sample;
    }

    private HostBatch Build(int[] order, int epoch, int b)
    {
        int part = Options.BatchSize / Options.Shards;
        int start = b * Options.BatchSize + Options.Shard * part, count = Math.Min(part, order.Length - start);
        var samples = new Sample[count];
        for (int i = 0; i < count; i++) samples[i] = Prepare(order, epoch, start + i);
        return Collate(samples, Options.Normalization);
    }

    /// <summary>Stacks same-sized samples into a batch (images transposed to planar C x H x W).</summary>
    public static HostBatch Collate(IReadOnlyList<Sample> samples, Normalization? normalization = null)
    {
        var first = samples[0];
        int w = first.Width, h = first.Height, ch = first.Image.Channels, hw = w * h;
        foreach (var s in samples)
            if (s.Width != w || s.Height != h || s.Image.Channels != ch)
                throw new DataException($"A batch holds samples of different sizes: {first.Name} is {w}x{h}x{ch}, "
                    + $"{s.Name} is {s.Width}x{s.Height}x{s.Image.Channels}; crop or resize to one size (or use batch "
                    + $"size 1).");
        bool wide = samples.Any(s => s.Image.Pixels16 is not null);
        var images = wide ? null : new byte[samples.Count * ch * hw];
        var images16 = wide ? new ushort[samples.Count * ch * hw] : null;
        var masks = new byte[samples.Count * hw];
        var instances = first.Instances is null ? null : new ushort[samples.Count * hw];
        for (int n = 0; n < samples.Count; n++)
        {
            if (images16 is not null) Planar(Widened(samples[n].Image), images16, n * ch * hw, hw, ch);
            else Planar(samples[n].Image.Pixels, images!, n * ch * hw, hw, ch);
            Array.Copy(samples[n].Mask, 0, masks, n * hw, hw);
            if (instances is not null) Array.Copy(samples[n].Instances ?? throw new DataException(
                $"A batch mixes instance data ({first.Name}) with semantic data ({samples[n].Name})."), 0, instances,
                n * hw, hw);
        }
        return new HostBatch { Count = samples.Count, Channels = ch, Height = h, Width = w,
            Images = images ?? Array.Empty<byte>(), Images16 = images16, Masks = masks,
                Names = samples.Select(s => s.Name).ToArray(), Instances = instances,
            Levels = normalization is { Scheme: not NormalizationScheme.Fixed } perImage ? samples.SelectMany(s =>
            {
                var (offset, scale) = perImage.LevelsOf(s);
                return new[] { offset, scale };
            }).ToArray() : null };
    }

    /// <summary>Interleaved H x W x C samples into planar C x H x W at <paramref name="offset"/>.</summary>
    private static void Planar<T>(T[] px, T[] into, int offset, int hw, int ch)
    {
        if (ch == 1) { Array.Copy(px, 0, into, offset, hw); return; }
        for (int i = 0; i < hw; i++)
            for (int c = 0; c < ch; c++) into[offset + c * hw + i] = px[i * ch + c];
    }

    /// <summary>An image's 16-bit samples; an 8-bit image's widened by 257 (v / 255 = 257 v / 65535).</summary>
    private static ushort[] Widened(ImageBuffer image) => image.Pixels16
        ?? Array.ConvertAll(image.Pixels, v => (ushort)(v * 257));

    private Sample LoadCached(int index)
    {
        if (Options.CacheBytes <= 0) return dataset.Load(index);
        if (cache.TryGetValue(index, out var hit)) return hit;
        var sample = dataset.Load(index);
        long size = (long)sample.Image.Samples.Length * sample.Image.Bits / 8 + sample.Mask.Length + 2L
            * (sample.Instances?.Length ?? 0);
        if (Interlocked.Add(ref cachedBytes, size) <= Options.CacheBytes) { if (!cache.TryAdd(index,
            sample)) Interlocked.Add(ref cachedBytes, -size); }
        else Interlocked.Add(ref cachedBytes, -size);
        return sample;
    }
}
