using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Segmentation.Training;

/// <summary>The optimiser, its learning rate and what shapes its steps (<see
/// cref="TrainerOptions.Optimizer"/>).</summary>
public sealed record OptimizerOptions
{
    /// <summary>Which optimiser.</summary>
    public OptimizerKind Kind { get; init; } = OptimizerKind.AdamW;
    /// <summary>Base learning rate.</summary>
    public double LearningRate { get; init; } = 1e-3;
    /// <summary>
    /// AdamW steps all parameters of a group in one fused kernel (libtorch's <c>_fused_adamw_</c>, as PyTorch's
    /// <c>fused=True</c>), with clipping and float16's loss scaling on the device: no read-back per step and a few
    /// calls instead of about ten per parameter. Off: TorchSharp's per-parameter AdamW. Either writes the same
    /// checkpoints. Ignored for SGD, and where this libtorch lacks the kernel.
    /// </summary>
    public bool Fused { get; init; } = true;
    /// <summary>Weight decay.</summary>
    public double WeightDecay { get; init; } = 1e-4;
    /// <summary>SGD momentum.</summary>
    public double Momentum { get; init; } = 0.9;
    /// <summary>Clip the global gradient norm to this (null: no clipping).</summary>
    public double? GradientClipNorm { get; init; }
    /// <summary>Validate and save an exponential moving average of the weights with this decay (0 to 1, open; e.g.
    /// 0.995), warmed up as timm's: see <c>WeightAverage</c>. The checkpoints hold the average (and, for resuming,
    /// the weights as trained); the model itself keeps the weights as trained. Null: no average.</summary>
    public double? WeightAverageDecay { get; init; }
    /// <summary>Batches whose gradients are summed before each optimiser step.</summary>
    public int AccumulationSteps { get; init; } = 1;
    /// <summary>The encoder's learning rate as a share of <see cref="LearningRate"/> (for instance 0.1 for a pretrained
    /// encoder).</summary>
    public double EncoderLearningRateScale { get; init; } = 1;
    /// <summary>Epochs at the start during which the encoder is frozen (no gradients, no updates; its batch norm
    /// statistics still follow the data).</summary>
    public int FreezeEncoderEpochs { get; init; }

    internal void Validate()
    {
        if (!Enum.IsDefined(Kind)) throw new OptionsException($"Unknown optimiser {Kind}.");
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate))
            throw new OptionsException($"Learning rate is {LearningRate}; it must be a positive number.");
        if (WeightDecay < 0) throw new OptionsException($"Weight decay is {WeightDecay}; it must be at least 0.");
        if (Momentum < 0 || Momentum >= 1) throw new OptionsException($"Momentum is {Momentum}; it must be in [0, 1).");
        if (GradientClipNorm is <= 0)
            throw new OptionsException($"Gradient clip norm is {GradientClipNorm}; it must be positive.");
        if (WeightAverageDecay is { } ema && !(ema > 0 && ema < 1))
            throw new OptionsException($"Weight average decay is {ema}; it must be between 0 and 1.");
        if (AccumulationSteps < 1)
            throw new OptionsException($"Accumulation steps is {AccumulationSteps}; it must be at least 1.");
        if (!(EncoderLearningRateScale >= 0) || double.IsInfinity(EncoderLearningRateScale))
            throw new OptionsException($"Encoder learning-rate scale is {EncoderLearningRateScale}; it must be 0 or "
                + $"more.");
        if (FreezeEncoderEpochs < 0)
            throw new OptionsException($"Freeze-encoder epochs is {FreezeEncoderEpochs}; it must be 0 or more.");
    }
}

/// <summary>The learning rate over the run, and when the run ends (<see cref="TrainerOptions.Schedule"/>).</summary>
public sealed record ScheduleOptions
{
    /// <summary>The schedule after the warm-up.</summary>
    public ScheduleKind Kind { get; init; } = ScheduleKind.Poly;
    /// <summary>The poly schedule's power: lr = base * (1 - t)^power.</summary>
    public double PolyPower { get; init; } = 0.9;
    /// <summary>Linear warm-up, as a share of all optimiser steps.</summary>
    public double WarmupFraction { get; init; } = 0.05;
    /// <summary>End cleanly after the epoch during which this much wall-clock time has passed (null: no
    /// limit).</summary>
    public TimeSpan? TimeLimit { get; init; }
    /// <summary>
    /// With <see cref="TimeLimit"/>: once the epochs and an evaluation have been timed, lay the epochs (and the
    /// learning-rate schedule with them) over what fits: fewer when they would not all fit, more (by two or more, up
    /// to three times the epochs given) when they run faster than planned, so that the schedule ends at the limit
    /// instead of being cut in the middle or leaving the budget unused. Checked after every epoch; a resume keeps the
    /// fitted schedule. Off: the limit stops the run wherever it is (the plan's epochs are fitted to the limit already;
    /// this keeps them fitted when the machine turns out slower or faster than timed).
    /// </summary>
    public bool FitToTimeLimit { get; init; }

    internal void Validate()
    {
        if (!Enum.IsDefined(Kind)) throw new OptionsException($"Unknown schedule {Kind}.");
        if (!(PolyPower > 0) || double.IsInfinity(PolyPower))
            throw new OptionsException($"Poly power is {PolyPower}; it must be a positive number.");
        if (WarmupFraction < 0 || WarmupFraction >= 1)
            throw new OptionsException($"Warm-up fraction is {WarmupFraction}; it must be in [0, 1).");
        if (TimeLimit is { } t && t <= TimeSpan.Zero)
            throw new OptionsException($"Time limit is {t}; it must be positive.");
    }
}

/// <summary>The arithmetic of the step (<see cref="TrainerOptions.Precision"/>).</summary>
public sealed record PrecisionOptions
{
    /// <summary>
    /// The arithmetic of the convolutions (<see cref="Models.Precision"/>): float32 master weights and optimiser state
    /// whatever it is; float16 trains with dynamic loss scaling (<see cref="LossScaler"/>); auto measures and chooses.
    /// </summary>
    public Models.Precision Kind { get; init; } = Models.Precision.Float32;
    /// <summary>float16 only: the loss scale to start from (it then adapts, as <see cref="LossScaler"/>
    /// says).</summary>
    public double InitialLossScale { get; init; } = 65536;
    /// <summary>float16 only: good steps in a row before the loss scale doubles.</summary>
    public int LossScaleGrowthInterval { get; init; } = 2000;

    internal void Validate()
    {
        if (!Enum.IsDefined(Kind)) throw new OptionsException($"Unknown precision {Kind}.");
        if (!(InitialLossScale > 0) || double.IsInfinity(InitialLossScale))
            throw new OptionsException($"Initial loss scale is {InitialLossScale}; it must be a positive number.");
        if (LossScaleGrowthInterval < 1)
            throw new OptionsException($"Loss-scale growth interval is {LossScaleGrowthInterval}; it must be at least "
                + $"1.");
    }
}

/// <summary>Where checkpoints go, and the evaluations that choose the best one (<see
/// cref="TrainerOptions.Checkpoints"/>).</summary>
public sealed record CheckpointOptions
{
    /// <summary>Folder for <c>last.ckpt</c> and <c>best.ckpt</c> (null: no checkpoints).</summary>
    public string? Directory { get; init; }
    /// <summary>Evaluate on the validation set every N epochs (and after the last).</summary>
    public int EvalEvery { get; init; } = 1;
    /// <summary>Stop after this many evaluations without a better score (null: never).</summary>
    public int? EarlyStoppingPatience { get; init; }
    /// <summary>Render this many validation predictions (image | truth | prediction | errors) at each evaluation, for
    /// progress consumers such as <see cref="TensorBoardLogger"/>; 0: none.</summary>
    public int PreviewImages { get; init; }

    internal void Validate()
    {
        if (EvalEvery < 1) throw new OptionsException($"Evaluate-every is {EvalEvery}; it must be at least 1.");
        if (EarlyStoppingPatience is < 1)
            throw new OptionsException($"Early-stopping patience is {EarlyStoppingPatience}; it must be at least 1.");
        if (PreviewImages < 0) throw new OptionsException($"Preview images is {PreviewImages}; it must be 0 or more.");
    }
}

/// <summary>Data-parallel training (<see cref="TrainerOptions.Distribution"/>).</summary>
public sealed record DistributionOptions
{
    /// <summary>
    /// The processes this trainer is one of (<see cref="Distributed.ProcessGroup.Mpi"/>,
    /// <see cref="Distributed.ProcessGroup.Nccl"/>, or <see cref="Distributed.ProcessGroup.FromEnvironment"/> for what
    /// mpirun or torchrun set). <see cref="TrainerOptions.BatchSize"/> stays the global batch: each process trains on
    /// its share of each batch, the gradients are averaged over the processes, validation is split between them, and
    /// rank 0 alone writes the checkpoints. Null: this process alone. Not recorded (a resumed run may use another
    /// process count).
    /// </summary>
    [JsonIgnore]
    public Distributed.ProcessGroup? ProcessGroup { get; init; }
    /// <summary>With <see cref="ProcessGroup"/>: batch normalisation over the global batch (SyncBatchNorm) instead of
    /// each process's share.</summary>
    public bool SyncBatchNorm { get; init; }
}

/// <summary>The grouped form of the trainer's options, and the flat form that earlier builds recorded.</summary>
internal static class TrainerOptionGroups
{
    /// <summary>Each flat property of earlier builds: its group and its name there.</summary>
    private static readonly (string Flat, string Group, string Name)[] Moves =
    {
        ("Optimizer", "Optimizer", "Kind"), ("LearningRate", "Optimizer", "LearningRate"),
        ("FusedOptimizer", "Optimizer", "Fused"), ("WeightDecay", "Optimizer", "WeightDecay"),
        ("Momentum", "Optimizer", "Momentum"), ("GradientClipNorm", "Optimizer", "GradientClipNorm"),
        ("WeightAverageDecay", "Optimizer", "WeightAverageDecay"),
        ("AccumulationSteps", "Optimizer", "AccumulationSteps"),
        ("EncoderLearningRateScale", "Optimizer", "EncoderLearningRateScale"),
        ("FreezeEncoderEpochs", "Optimizer", "FreezeEncoderEpochs"),
        ("Schedule", "Schedule", "Kind"), ("PolyPower", "Schedule", "PolyPower"),
        ("WarmupFraction", "Schedule", "WarmupFraction"), ("TimeLimit", "Schedule", "TimeLimit"),
        ("FitScheduleToTimeLimit", "Schedule", "FitToTimeLimit"),
        ("Precision", "Precision", "Kind"), ("InitialLossScale", "Precision", "InitialLossScale"),
        ("LossScaleGrowthInterval", "Precision", "LossScaleGrowthInterval"),
        ("CheckpointDirectory", "Checkpoints", "Directory"), ("EvalEvery", "Checkpoints", "EvalEvery"),
        ("EarlyStoppingPatience", "Checkpoints", "EarlyStoppingPatience"),
        ("PreviewImages", "Checkpoints", "PreviewImages"),
        ("SyncBatchNorm", "Distribution", "SyncBatchNorm"),
    };

    /// <summary>
    /// Options as earlier builds wrote them (one flat object, in checkpoints and run.json) in the grouped form; the
    /// grouped form comes back unchanged. A flat value is moved into its group (a group object itself is never a
    /// flat value: <c>"Optimizer": "AdamW"</c> is the kind, <c>"Optimizer": {...}</c> the group).
    /// </summary>
    public static JsonObject Upgrade(JsonObject json)
    {
        static bool IsFlat(JsonObject o, string key) => o.ContainsKey(key) && o[key] is not JsonObject;
        if (!Moves.Any(m => IsFlat(json, m.Flat))) return json;
        var copy = json.DeepClone().AsObject();
        foreach (var (flat, group, name) in Moves)
        {
            if (!IsFlat(copy, flat)) continue;
            var value = copy[flat]; // a value, or null
            copy.Remove(flat);
            if (copy[group] is not JsonObject target)
            {
                target = new JsonObject();
                copy.Remove(group);
                copy[group] = target;
            }
            target[name] = value;
        }
        return copy;
    }
}
