using System.Text.Json;
using System.Text.Json.Nodes;
using Segmentation.Checkpoints;
using Segmentation.Data;

namespace Segmentation.Training;

/// <summary>Optimiser.</summary>
public enum OptimizerKind
{
    /// <summary>AdamW (decoupled weight decay).</summary>
    AdamW,
    /// <summary>SGD with momentum.</summary>
    Sgd,
}

/// <summary>
/// How to train. Defaults follow the common U-Net recipes; everything is validated by <see cref="Validate"/>. What
/// belongs together is grouped: <see cref="Optimizer"/>, <see cref="Schedule"/>, <see cref="Precision"/>, <see
/// cref="Checkpoints"/> (with the evaluations that choose the best one) and <see cref="Distribution"/>; the data,
/// augmentation and loss settings stay at the top. Change one value of a group with <c>with</c>:
/// <c>options with { Optimizer = options.Optimizer with { LearningRate = 3e-4 } }</c>.
/// </summary>
public sealed record TrainerOptions
{
    /// <summary>The options a checkpoint was trained with (what <see cref="ToJson"/> wrote into it).</summary>
    public static TrainerOptions FromCheckpoint(Checkpoint checkpoint) =>
        TrainerOptionGroups.Upgrade(checkpoint.TrainerSettings).Deserialize<TrainerOptions>(Checkpoint.Json)
            ?? throw new CheckpointException("The checkpoint's trainer options are empty.");

    /// <summary>As a JSON object, for a checkpoint's <see cref="Checkpoint.TrainerSettings"/>.</summary>
    public JsonObject ToJson() => JsonSerializer.SerializeToNode(this, Checkpoint.Json)!.AsObject();

    /// <summary>Epochs to train.</summary>
    public int Epochs { get; init; } = 40;
    /// <summary>The optimiser, its learning rate and what shapes its steps.</summary>
    public OptimizerOptions Optimizer { get; init; } = new();
    /// <summary>The learning rate over the run, and when the run ends.</summary>
    public ScheduleOptions Schedule { get; init; } = new();
    /// <summary>The arithmetic of the step.</summary>
    public PrecisionOptions Precision { get; init; } = new();
    /// <summary>Where checkpoints go, and the evaluations that choose the best one.</summary>
    public CheckpointOptions Checkpoints { get; init; } = new();
    /// <summary>Data-parallel training.</summary>
    public DistributionOptions Distribution { get; init; } = new();
    /// <summary>Samples per batch.</summary>
    public int BatchSize { get; init; } = 4;
    /// <summary>Samples per validation batch (validation images of one size batch together; use 1 otherwise).</summary>
    public int? ValBatchSize { get; init; }
    /// <summary>Random training crop (after random scaling); null trains on whole images.</summary>
    public Size2? Crop { get; init; }
    /// <summary>Resize every image (train and validation) to this size first; null keeps the size.</summary>
    public Size2? Size { get; init; }
    /// <summary>Random scale range applied before the crop.</summary>
    public double ScaleMin { get; init; } = 0.5;
    /// <summary>Random scale range applied before the crop.</summary>
    public double ScaleMax { get; init; } = 2.0;
    /// <summary>Flips, scale, crop and colour jitter on the training set; off: only resize/crop.</summary>
    public bool Augment { get; init; } = true;
    /// <summary>Also flip vertically (top–bottom has no meaning in road scenes, but does in microscopy).</summary>
    public bool VerticalFlip { get; init; }
    /// <summary>The training recipe these values came from (<see cref="TrainingRecipe.Name"/>), for the record; null
    /// when none was applied.</summary>
    public string? Recipe { get; init; }
    /// <summary>
    /// The loss: one of the library's by kind (<c>LossKind.Dice</c>), or any loss object (<c>new FocalLoss(3)</c>, or
    /// <see cref="TrainingLoss.From"/> for a type that implements <see cref="ISegmentationLoss"/> only). The trainer
    /// disposes the losses it builds, never an object it was given.
    /// </summary>
    public TrainingLoss Loss { get; init; } = LossKind.CrossEntropy;
    /// <summary>Weight of the Dice term in <see cref="LossKind.CrossEntropyDice"/>.</summary>
    public double DiceWeight { get; init; } = 1.0;
    /// <summary>
    /// The training augmentation as text (<see cref="Augmentations.Parse"/>: <c>"scale(0.5,2) crop(256) hflip
    /// elastic(alpha=34,sigma=4)"</c>),
    /// after the resize to <see cref="Size"/>; it replaces the presets that <see cref="Augment"/>, <see cref="Crop"/>
    /// and
    /// <see cref="VerticalFlip"/> choose. Null: the presets.
    /// </summary>
    public string? Augmentation { get; init; }
    /// <summary>
    /// The same as a list, for a script that builds its own steps (any <see cref="ISampleTransform"/>, after the resize
    /// to <see cref="Size"/>); it wins over <see cref="Augmentation"/>. Not recorded in checkpoints or run.json (only
    /// text is); a resumed run needs it given again.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IReadOnlyList<ISampleTransform>? Transforms { get; init; }
    /// <summary>The focusing exponent of <see cref="LossKind.Focal"/> (0 is cross-entropy).</summary>
    public double FocalGamma { get; init; } = 2.0;
    /// <summary>Per-class weights of the cross-entropy (null: none).</summary>
    public float[]? ClassWeights { get; init; }
    /// <summary>Cross-entropy label smoothing.</summary>
    public double LabelSmoothing { get; init; }
    /// <summary>Called before each training step with the epoch and the step (1-based), for tests that inject a
    /// failure. Not recorded.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    internal Action<int, int>? BeforeStep { get; init; }
    /// <summary>Seed for weights (when the trainer builds them), data order, augmentation and dropout.</summary>
    public int Seed { get; init; }
    /// <summary>auto, cpu, cuda or cuda:N.</summary>
    public string Device { get; init; } = "auto";
    /// <summary>libtorch's CPU threads for training (process-wide; null: leave them as they are, one per core unless
    /// set before). <see cref="Models.CpuThreads.Auto"/> picks the cores the machine's load leaves free; the
    /// <c>segment</c> tool does that by default and records the count in run.json.</summary>
    public int? Threads { get; init; }
    /// <summary>Loader worker threads (0: one per core).</summary>
    public int Workers { get; init; }
    /// <summary>Decoded-sample cache size in bytes (0: off).</summary>
    public long CacheBytes { get; init; }
    /// <summary>Input normalisation (null: ImageNet for RGB, symmetric otherwise).</summary>
    public Normalization? Normalization { get; init; }
    /// <summary>
    /// Let the trainer set process-wide memory policy: glibc allocator tuning (<see cref="AllocatorTuning"/>) before
    /// training, and after each epoch a full compacting garbage collection and freed native memory handed back, which
    /// keeps resident memory flat across epochs. Off by default: a library does not change its host's allocator or
    /// collector unasked. The <c>segment</c> tool turns it on.
    /// </summary>
    public bool ManageProcessMemory { get; init; }

    /// <summary>
    /// The options a model of <paramref name="model"/>'s architecture is best trained with: the trainer's defaults with
    /// the architecture's recipe applied (<see cref="TrainingRecipe"/>: SegFormer's AdamW 6e-5 with its head at 10x
    /// when
    /// <paramref name="pretrainedEncoder"/>, the U-Nets' AdamW 1e-3, ...). Change what you need with <c>with</c>.
    /// </summary>
    public static TrainerOptions Recommended(Models.ModelDescription model, bool pretrainedEncoder = false) =>
        TrainingRecipes.For(model, pretrainedEncoder).ApplyTo(new TrainerOptions());

    /// <summary>Throws <see cref="OptionsException"/> naming the first bad value.</summary>
    public void Validate()
    {
        if (Epochs < 1) throw new OptionsException($"Epochs is {Epochs}; it must be at least 1.");
        if (BatchSize < 1) throw new OptionsException($"Batch size is {BatchSize}; it must be at least 1.");
        if (ValBatchSize is < 1)
            throw new OptionsException($"Validation batch size is {ValBatchSize}; it must be at least 1.");
        Optimizer.Validate();
        Schedule.Validate();
        Precision.Validate();
        Checkpoints.Validate();
        if (Augmentation is not null) Augmentations.Parse(Augmentation);
        if (DiceWeight < 0) throw new OptionsException($"Dice weight is {DiceWeight}; it must be at least 0.");
        if (!(FocalGamma >= 0) || double.IsInfinity(FocalGamma))
            throw new OptionsException($"Focal gamma is {FocalGamma}; it must be a finite number of at least 0.");
        if (!(ScaleMin > 0 && ScaleMax >= ScaleMin && ScaleMax <= 10)) // the flag's and plan.json's range too
            throw new OptionsException($"Scale range [{ScaleMin}, {ScaleMax}] must satisfy 0 < min <= max <= 10.");
        if (Threads is < 1) throw new OptionsException($"Threads is {Threads}; it must be at least 1.");
        if (Workers < 0) throw new OptionsException($"Workers is {Workers}; it must be 0 (one per core) or more.");
        if (CacheBytes < 0)
            throw new OptionsException($"The sample cache is {CacheBytes / (1 << 20)} MiB; it must be 0 (off) or "
                + $"more.");
        if (Distribution.ProcessGroup is { WorldSize: > 1 } g && BatchSize % g.WorldSize != 0)
            throw new OptionsException($"The batch size {BatchSize} is the global batch of {g.WorldSize} processes and "
                + $"must divide among them; use a multiple of {g.WorldSize}.");
    }
}
