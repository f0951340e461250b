using System.Diagnostics;
using Segmentation.Data;
using Segmentation.Models;

namespace Segmentation.Training;

/// <summary>
/// The trainer's data: the loaders (the training one shuffled and augmented, each process's share of both), the
/// training augmentation the options describe, and the check of every sample before the first step.
/// </summary>
internal static class TrainingData
{
    /// <summary>The training loader (shuffled, augmented) and the validation loader (one image at a time when sizes
    /// differ).</summary>
    public static (DataLoader Train, DataLoader? Val) Loaders(SegmentationDataset train, SegmentationDataset? val,
        Normalization normalization, TrainerOptions o, DataParallel parallel, IProgress<TrainingProgress>? progress)
    {
        int world = parallel.WorldSize, rank = parallel.Rank;
        if (world > 1 && train.Count < o.BatchSize)
            throw new DataException($"{train.Origin}: {train.Count} training samples make no full global batch of "
                + $"{o.BatchSize} for {world} processes.");
        var trainLoader = new DataLoader(train, new DataLoaderOptions
        {
            BatchSize = o.BatchSize, Shuffle = true, DropLast = train.Count > o.BatchSize || world > 1, Seed = o.Seed,
            Workers = o.Workers, CacheBytes = o.CacheBytes, Transform = Augmentation(o),
            Shards = world, Shard = rank, Normalization = normalization,
        });
        if (val is null) return (trainLoader, null);
        if (world > 1)
        {
            // each process validates every world-th image; the counts are summed (Evaluator.Run)
            if (val.Count < world)
                throw new DataException($"{val.Origin}: {val.Count} validation image(s) cannot be shared among {world} "
                    + "processes; each needs at least one.");
            val = val.Subset(Enumerable.Range(0, val.Count).Where(i => i % world == rank));
        }
        int valBatch = o.ValBatchSize ?? o.BatchSize;
        if (o.ValBatchSize is null && o.Size is null && valBatch > 1 && val.UniformSize() is null)
        {
            valBatch = 1; // full-size images of different sizes cannot share a batch
            progress?.Report(new TrainingProgress { Kind = ProgressKind.Message,
                Message =
                    "validation images differ in size: validating one image at a time (a validation batch needs one "
                        + "size: resize them as they are read with --size, TrainerOptions.Size; --val-batch-size 1, "
                        + "TrainerOptions.ValBatchSize, says this choice outright)" });
        }
        return (trainLoader, new DataLoader(val, new DataLoaderOptions
        {
            BatchSize = valBatch, Shuffle = false, Workers = o.Workers,
            CacheBytes = o.CacheBytes, Transform = o.Size is { } s ? new Resize(s.Height, s.Width) : null,
            Normalization = normalization,
        }));
    }

    /// <summary>The training transform: the resize to <see cref="TrainerOptions.Size"/>, then the steps given, the
    /// augmentation text, or the presets.</summary>
    private static ISampleTransform? Augmentation(TrainerOptions o)
    {
        var list = new List<ISampleTransform>();
        if (o.Size is { } s) list.Add(new Resize(s.Height, s.Width));
        if (o.Transforms is { } steps) list.AddRange(steps);
        else if (o.Augmentation is { } text) list.AddRange(Augmentations.Parse(text).Transforms);
        else if (o.Augment)
        {
            if (o.Crop is { } c) list.AddRange(Compose.TrainPreset(c.Height, c.Width, o.ScaleMin, o.ScaleMax, 0.75,
                o.VerticalFlip).Transforms);
            else
            {
                list.Add(new HorizontalFlip());
                if (o.VerticalFlip) list.Add(new VerticalFlip());
                list.Add(new ColorJitter(0.25, 0.25, 0.25, 0.02, probability: 0.5));
            }
        }
        else if (o.Crop is { } c) list.Add(new RandomCrop(c.Height, c.Width));
        return list.Count == 0 ? null : new Compose(list.ToArray());
    }

    /// <summary>
    /// Every sample of both data sets is decoded once before the first step, so bad files are all reported now; a run
    /// folder remembers the fingerprints of data validated before, so a resume on unchanged files skips it.
    /// </summary>
    public static void Validate(SegmentationDataset train, SegmentationDataset? val, RunRecorder? run,
        IProgress<TrainingProgress>? progress, CancellationToken cancellation)
    {
        var known = run?.ValidatedData() ?? new HashSet<string>();
        var fresh = new List<string>();
        foreach (var (data, role) in new[] { (train, "training"), (val, "validation") })
        {
            if (data is null || data.Fingerprint() is not { } print || known.Contains(print)) continue;
            var clock = Stopwatch.StartNew();
            data.Validate(new SynchronousProgress<int>(n
                => progress?.Report(new TrainingProgress { Kind = ProgressKind.DataCheck, Step = n,
                StepsPerEpoch = data.Count, Message = $"checking {role} data" })), cancellation);
            progress?.Report(new TrainingProgress { Kind = ProgressKind.Message,
                Message =
                    $"checked all {data.Count} {role} pairs (decoded, sizes and labels) in "
                        + $"{clock.Elapsed.TotalSeconds:F1} s" });
            fresh.Add(print);
        }
        if (fresh.Count > 0) run?.RecordValidatedData(fresh);
    }

    /// <summary>
    /// Refuses a step whose activations alone (every layer's output and its gradient, float32, estimated from the
    /// model's layer table) would not fit the memory there is, instead of swapping, being killed or overflowing.
    /// </summary>
    public static void CheckMemory(SegmentationModel model, Size2 size, int batch, TorchSharp.torch.Device device)
    {
        if (device.type != TorchSharp.DeviceType.CPU) return; // CUDA reports its own out-of-memory error, with figures
        // refused with its own message
        if (size.Height < model.MinimumInputSize || size.Width < model.MinimumInputSize) return;
        double perImage = ModelSummary.EstimateActivationElements(model, size.Height, size.Width);
        double needed = perImage * batch * sizeof(float) * 2;
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (needed > available)
            throw new OptionsException($"A training step at {size} with batch {batch} needs about "
                + $"{needed / (1L << 30):N1} GiB for this model's activations alone; this machine has "
                + $"{available / (double)(1L << 30):N1} GiB. Use a smaller crop or size (--crop, --size) or batch "
                + $"(--batch-size).");
    }

    /// <summary>
    /// A checkpoint leaves model- and optimiser-sized managed buffers behind (hundreds of MB for a full-size U-Net),
    /// and the tuned allocator keeps every freed native block for reuse. Collecting the one and handing the other back
    /// at the end of each epoch keeps resident memory flat across epochs; it costs milliseconds and one slower step.
    /// </summary>
    public static void ReleaseMemory(TrainerOptions o)
    {
        if (!o.ManageProcessMemory) return;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        AllocatorTuning.ReleaseFreeMemory();
    }

    /// <summary>This process's resident memory, in MB.</summary>
    public static double ResidentMemoryMB()
    {
        using var self = Process.GetCurrentProcess();
        return Math.Round(self.WorkingSet64 / 1048576.0, 1);
    }
}
