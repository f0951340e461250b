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

/// <summary>How to train. Defaults follow the common U-Net recipes; everything is validated by <see
/// cref="Validate"/>.</summary>
public sealed record TrainerOptions
{
    /// <summary>The options a checkpoint was trained with (what <see cref="ToJson"/> wrote into it).</summary>
    public static TrainerOptions FromCheckpoint(Checkpoint checkpoint) =>
        checkpoint.TrainerSettings.Deserialize<TrainerOptions>(Checkpoint.Json)
            ?? throw new CheckpointException("The checkpoint's trainer options are empty.");

    /// <summary>As a JSON object, for a checkpoint's <see cref="Checkpoint.TrainerSettings"/>.</summary>
    public JsonObject ToJson() => JsonSerializer.SerializeToNode(this, Checkpoint.Json)!.AsObject();

    /// <summary>Epochs to train.</summary>
    public int Epochs { get; init; } = 40;
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
    /// <summary>Optimiser.</summary>
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.AdamW;
    /// <summary>Base learning rate.</summary>
    public double LearningRate { get; init; } = 1e-3;
    /// <summary>
    /// AdamW steps all parameters of a group in one fused kernel (libtorch's <c>_fused_adamw_</c>, as PyTorch's
    /// <c>fused=True</c>), with clipping and float16's loss scaling on the device: no read-back per step and a few
    /// calls instead of about ten per parameter. Off: TorchSharp's per-parameter AdamW. Either writes the same
    /// checkpoints. Ignored for SGD, and where this libtorch lacks the kernel.
    /// </summary>
    public bool FusedOptimizer { get; init; } = true;
    /// <summary>Weight decay.</summary>
    public double WeightDecay { get; init; } = 1e-4;
    /// <summary>SGD momentum.</summary>
    public double Momentum { get; init; } = 0.9;
    /// <summary>Schedule after the warm-up.</summary>
    public ScheduleKind Schedule { get; init; } = ScheduleKind.Poly;
    /// <summary>The poly schedule's power: lr = base * (1 - t)^power.</summary>
    public double PolyPower { get; init; } = 0.9;
    /// <summary>The training recipe these values came from (<see cref="TrainingRecipe.Name"/>), for the record; null
    /// when none was applied.</summary>
    public string? Recipe { get; init; }
    /// <summary>Linear warm-up, as a share of all optimiser steps.</summary>
    public double WarmupFraction { get; init; } = 0.05;
    /// <summary>Clip the global gradient norm to this (null: no clipping).</summary>
    public double? GradientClipNorm { get; init; }
    /// <summary>Validate and save an exponential moving average of the weights with this decay (0 to 1, open; e.g.
    /// 0.995), warmed up as timm's: see <c>WeightAverage</c>. The checkpoints hold the average (and, for resuming,
    /// the weights as trained); the model itself keeps the weights as trained. Null: no average.</summary>
    public double? WeightAverageDecay { get; init; }
    /// <summary>Batches whose gradients are summed before each optimiser step.</summary>
    public int AccumulationSteps { get; init; } = 1;
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
    /// <summary>Render this many validation predictions (image | truth | prediction | errors) at each evaluation, for
    /// progress consumers such as <see cref="TensorBoardLogger"/>; 0: none.</summary>
    public int PreviewImages { get; init; }
    /// <summary>The focusing exponent of <see cref="LossKind.Focal"/> (0 is cross-entropy).</summary>
    public double FocalGamma { get; init; } = 2.0;
    /// <summary>Per-class weights of the cross-entropy (null: none).</summary>
    public float[]? ClassWeights { get; init; }
    /// <summary>Cross-entropy label smoothing.</summary>
    public double LabelSmoothing { get; init; }
    /// <summary>Evaluate on the validation set every N epochs (and after the last).</summary>
    public int EvalEvery { get; init; } = 1;
    /// <summary>Stop after this many evaluations without a better mean IoU (null: never).</summary>
    public int? EarlyStoppingPatience { get; init; }
    /// <summary>End cleanly after the epoch during which this much wall-clock time has passed (null: no
    /// limit).</summary>
    public TimeSpan? TimeLimit { get; init; }
    /// <summary>
    /// With <see cref="TimeLimit"/>: once the epochs and an evaluation have been timed, lay <see cref="Epochs"/> (and
    /// the learning-rate schedule with it) over what fits: fewer when they would not all fit, more (by two or more, up
    /// to three times the epochs given) when they run faster than planned, so that the schedule ends at the limit
    /// instead of being cut in the middle or leaving the budget unused. Checked after every epoch; a resume keeps the
    /// fitted schedule. Off: the limit stops the run wherever it is (the plan's epochs are fitted to the limit already;
    /// this keeps them fitted when the machine turns out slower or faster than timed).
    /// </summary>
    public bool FitScheduleToTimeLimit { get; init; }
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
    /// <summary>Folder for <c>last.ckpt</c> and <c>best.ckpt</c> (null: no checkpoints).</summary>
    public string? CheckpointDirectory { get; init; }
    /// <summary>
    /// The arithmetic of the convolutions (<see cref="Models.Precision"/>): float32 master weights and optimiser state
    /// whatever it is; float16 trains with dynamic loss scaling (<see cref="LossScaler"/>).
    /// </summary>
    public Models.Precision Precision { get; init; } = Models.Precision.Float32;
    /// <summary>The encoder's learning rate as a share of <see cref="LearningRate"/> (for instance 0.1 for a pretrained
    /// encoder).</summary>
    public double EncoderLearningRateScale { get; init; } = 1;
    /// <summary>Epochs at the start during which the encoder is frozen (no gradients, no updates; its batch norm
    /// statistics still follow the data).</summary>
    public int FreezeEncoderEpochs { get; init; }
    /// <summary>float16 only: the loss scale to start from (it then adapts, as <see cref="LossScaler"/>
    /// says).</summary>
    public double InitialLossScale { get; init; } = 65536;
    /// <summary>float16 only: good steps in a row before the loss scale doubles.</summary>
    public int LossScaleGrowthInterval { get; init; } = 2000;
    /// <summary>
    /// Let the trainer set process-wide memory policy: glibc allocator tuning (<see cref="AllocatorTuning"/>) before
    /// training, and after each epoch a full compacting garbage collection and freed native memory handed back, which
    /// keeps resident memory flat across epochs. Off by default: a library does not change its host's allocator or
    /// collector unasked. The <c>segment</c> tool turns it on.
    /// </summary>
    public bool ManageProcessMemory { get; init; }
    /// <summary>
    /// Data-parallel training: the processes this trainer is one of (<see cref="Distributed.ProcessGroup.Mpi"/>,
    /// <see cref="Distributed.ProcessGroup.Nccl"/>, or <see cref="Distributed.ProcessGroup.FromEnvironment"/> for what
    /// mpirun or torchrun set). <see cref="BatchSize"/> stays the global batch: each process trains on its share of
    /// each batch, the gradients are averaged over the processes, validation is split between them, and rank 0 alone
    /// writes <see cref="CheckpointDirectory"/>. Null: this process alone. Not recorded (a resumed run may use another
    /// process count).
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public Distributed.ProcessGroup? ProcessGroup { get; init; }
    /// <summary>With <see cref="ProcessGroup"/>: batch normalisation over the global batch (SyncBatchNorm) instead of
    /// each process's share.</summary>
    public bool SyncBatchNorm { get; init; }

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
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate))
            throw new OptionsException($"Learning rate is {LearningRate}; it must be a positive number.");
        if (WeightDecay < 0) throw new OptionsException($"Weight decay is {WeightDecay}; it must be at least 0.");
        if (Momentum < 0 || Momentum >= 1) throw new OptionsException($"Momentum is {Momentum}; it must be in [0, 1).");
        if (WarmupFraction < 0 || WarmupFraction >= 1)
            throw new OptionsException($"Warm-up fraction is {WarmupFraction}; it must be in [0, 1).");
        if (!(PolyPower > 0) || double.IsInfinity(PolyPower))
            throw new OptionsException($"Poly power is {PolyPower}; it must be a positive number.");
        if (GradientClipNorm is <= 0)
            throw new OptionsException($"Gradient clip norm is {GradientClipNorm}; it must be positive.");
        if (WeightAverageDecay is { } ema && !(ema > 0 && ema < 1))
            throw new OptionsException($"Weight average decay is {ema}; it must be between 0 and 1.");
        if (AccumulationSteps < 1)
            throw new OptionsException($"Accumulation steps is {AccumulationSteps}; it must be at least 1.");
        if (Augmentation is not null) Augmentations.Parse(Augmentation);
        if (PreviewImages < 0) throw new OptionsException($"Preview images is {PreviewImages}; it must be 0 or more.");
        if (DiceWeight < 0) throw new OptionsException($"Dice weight is {DiceWeight}; it must be at least 0.");
        if (!(FocalGamma >= 0) || double.IsInfinity(FocalGamma))
            throw new OptionsException($"Focal gamma is {FocalGamma}; it must be a finite number of at least 0.");
        if (EvalEvery < 1) throw new OptionsException($"Evaluate-every is {EvalEvery}; it must be at least 1.");
        if (EarlyStoppingPatience is < 1)
            throw new OptionsException($"Early-stopping patience is {EarlyStoppingPatience}; it must be at least 1.");
        if (TimeLimit is { } t && t <= TimeSpan.Zero)
            throw new OptionsException($"Time limit is {t}; it must be positive.");
        if (!(ScaleMin > 0 && ScaleMax >= ScaleMin && ScaleMax <= 10)) // the flag's and plan.json's range too
            throw new OptionsException($"Scale range [{ScaleMin}, {ScaleMax}] must satisfy 0 < min <= max <= 10.");
        if (Threads is < 1) throw new OptionsException($"Threads is {Threads}; it must be at least 1.");
        if (Workers < 0) throw new OptionsException($"Workers is {Workers}; it must be 0 (one per core) or more.");
        if (CacheBytes < 0)
            throw new OptionsException($"The sample cache is {CacheBytes / (1 << 20)} MiB; it must be 0 (off) or "
                + $"more.");
        if (!(EncoderLearningRateScale >= 0) || double.IsInfinity(EncoderLearningRateScale))
            throw new OptionsException($"Encoder learning-rate scale is {EncoderLearningRateScale}; it must be 0 or "
                + $"more.");
        if (FreezeEncoderEpochs < 0)
            throw new OptionsException($"Freeze-encoder epochs is {FreezeEncoderEpochs}; it must be 0 or more.");
        if (!(InitialLossScale > 0) || double.IsInfinity(InitialLossScale))
            throw new OptionsException($"Initial loss scale is {InitialLossScale}; it must be a positive number.");
        if (LossScaleGrowthInterval < 1)
            throw new OptionsException($"Loss-scale growth interval is {LossScaleGrowthInterval}; it must be at least "
                + $"1.");
        if (ProcessGroup is { WorldSize: > 1 } g && BatchSize % g.WorldSize != 0)
            throw new OptionsException($"The batch size {BatchSize} is the global batch of {g.WorldSize} processes and "
                + $"must divide among them; use a multiple of {g.WorldSize}.");
        if (!Enum.IsDefined(Optimizer) || !Enum.IsDefined(Schedule) || !Enum.IsDefined(Precision))
            throw new OptionsException("Unknown optimiser, schedule, loss or precision.");
    }
}
