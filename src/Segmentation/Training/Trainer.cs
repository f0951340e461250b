using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Models;
using Segmentation.Tasks;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>
/// Trains a <see cref="SegmentationModel"/>: the data (loader, augmentation), the step (forward, loss, backward, clip,
/// optimiser, schedule) inside one dispose scope, validation with the <see cref="ConfusionMatrix"/>, the best and last
/// checkpoints, early stopping, a time limit and exact resume. It reports through <see cref="IProgress{T}"/> and
/// never writes to the console.
/// </summary>
/// <remarks>
/// The trainer puts its parts together and checks what they are given: the step (<see cref="TrainingStep"/>: the
/// optimiser, the loss and the step itself), the loop (<see cref="TrainingLoop"/>: epochs, schedule, evaluations,
/// stopping), the run recorder (<see cref="RunRecorder"/>: the only writer of the run folder) and the data-parallel
/// strategy (<see cref="DataParallel"/>).
/// </remarks>
public sealed class Trainer : IDisposable
{
    private readonly SegmentationModel model;
    private readonly Device device;
    private readonly DataParallel parallel;
    private readonly TrainingStep step;

    /// <summary>float16 training gives up after this many steps in a row skipped for non-finite gradients.</summary>
    public const int MaxConsecutiveSkippedSteps = 30;

    /// <summary>The options, validated (after <see cref="Fit"/>: with the precision auto chose and the epochs fitted
    /// to the time limit).</summary>
    public TrainerOptions Options { get; private set; }
    /// <summary>The device the model trains on.</summary>
    public Device Device => device;
    /// <summary>The model (moved to <see cref="Device"/>).</summary>
    public SegmentationModel Model => model;
    /// <summary>The processes of a data-parallel run (null: this process alone).</summary>
    public Distributed.ProcessGroup? ProcessGroup => parallel.Group;

    /// <summary>The loss scaler of float16 training (null otherwise), read back from the device.</summary>
    internal LossScaler? Scaler
    {
        get
        {
            step.SyncScaler(); // the fused step keeps the scale on the device
            return step.Scaler;
        }
    }

    /// <summary>Called between the checkpoint writes of an epoch (tests interrupt there to simulate a kill).</summary>
    internal Action<string>? CheckpointBoundary { get; set; }

    /// <summary>The step being trained, for messages ("step 12 of epoch 2").</summary>
    internal string StepName => step.Name;

    /// <summary>Creates a trainer; the model is moved to the options' device.</summary>
    public Trainer(SegmentationModel model, TrainerOptions? options = null)
    {
        Options = options ?? new TrainerOptions();
        Options.Validate();
        int classes = model.Description.Classes, min = model.MinimumInputSize;
        if (Options.ClassWeights is { } w && w.Length > classes) // checked against the data's classes in Fit
            throw new OptionsException($"{w.Length} class weights were given for a model with {classes} classes.");
        if (Options.Crop is { } crop && (crop.Height < min || crop.Width < min))
            throw new OptionsException($"Crop {crop} is smaller than the model's minimum input of {min}x{min}.");
        this.model = model;
        device = Devices.Resolve(Options.Device);
        if ((Options.Crop ?? Options.Size) is { } stepSize) TrainingData.CheckMemory(model, stepSize,
            Options.BatchSize / (Options.Distribution.ProcessGroup?.WorldSize ?? 1), device);
        model.to(device);
        if (Options.Precision.Kind != Precision.Auto) model.Precision = Options.Precision.Kind; // auto: decided in Fit
        parallel = new DataParallel(Options.Distribution.ProcessGroup, model, Options.Distribution.SyncBatchNorm);
        step = new TrainingStep(model, device, Options, parallel);
    }

    /// <summary>One training step on a host batch (benchmarks and tests); returns the loss.</summary>
    internal float TrainStep(HostBatch batch, Normalization normalization, bool applyOptimizer) =>
        step.Run(batch, normalization, applyOptimizer);

    /// <summary>
    /// Trains on <paramref name="train"/>, evaluating on <paramref name="val"/> (if given), from scratch or from
    /// <paramref name="resumeFrom"/> (a checkpoint of this run: weights, optimiser, schedule position, RNG, history).
    /// </summary>
    public TrainingResult Fit(SegmentationDataset train, SegmentationDataset? val = null,
        IProgress<TrainingProgress>? progress = null,
        Checkpoint? resumeFrom = null, CancellationToken cancellation = default)
    {
        Models.CpuThreads.Apply(Options.Threads);
        var d = CheckData(train, val);
        step.UseTask(d);
        if (Options.ManageProcessMemory && device.type == DeviceType.CPU && AllocatorTuning.Apply())
            Message(progress, $"allocator tuning {AllocatorTuning.Status}");
        foreach (var w in train.Warnings) Message(progress, w);
        ChoosePrecision(train, progress);
        // one process writes a run folder: rank 0 of a distributed run
        var run = Options.Checkpoints.Directory is null || !parallel.IsMain ? null
            : new RunRecorder(Options.Checkpoints.Directory);
        using var ownership = run?.Lock(); // one process writes a run folder
        TrainingData.Validate(train, val, run, progress, cancellation);
        int bits = train.ImageBits();
        if (bits == 16) Message(progress, "16-bit images: read at full depth (each sample as a share of 65535; 8-bit "
            + "images among them as a share of 255)");
        var data = new FitData(train, val, (Options.Normalization ?? Normalization.DefaultFor(d.InChannels))
            with { ImageBits = bits });
        var loop = new TrainingLoop(step, parallel, model, Options, data, run, progress, cancellation)
            { CheckpointBoundary = CheckpointBoundary };
        loop.Start(resumeFrom);
        parallel.BroadcastModel(model, "the model's starting weights");
        try
        {
            for (int epoch = loop.State.Epoch + 1; epoch <= loop.Options.Epochs; epoch++)
            {
                if (cancellation.IsCancellationRequested) { loop.StopReason = "interrupted"; break; }
                loop.RunEpoch(epoch);
                if (loop.ShouldStop(epoch)) break;
            }
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            // Stopped between two steps: the unfinished epoch is dropped; the files hold the last finished one.
            loop.StopReason = "interrupted";
        }
        finally { Options = loop.Options; }
        return loop.Result();
    }

    private static void Message(IProgress<TrainingProgress>? progress, string message) =>
        progress?.Report(new TrainingProgress { Kind = ProgressKind.Message, Message = message });

    /// <summary>
    /// <see cref="Precision.Auto"/> becomes what <see cref="AutoPrecision"/> picks for this model at the training
    /// shape (rank 0 decides for every process); an explicit bf16 or fp16 that this CPU only emulates is warned about
    /// with the measured slowdown.
    /// </summary>
    private void ChoosePrecision(SegmentationDataset train, IProgress<TrainingProgress>? progress)
    {
        bool auto = Options.Precision.Kind == Precision.Auto;
        string? emulation = device.type != DeviceType.CPU ? null : Options.Precision.Kind switch
        {
            Precision.Float16 => "libtorch's CPU kernels compute fp16 by reference code",
            Precision.BFloat16 => AutoPrecision.NoNativeBf16(AutoPrecision.CpuFlags()),
            _ => null,
        };
        if (!auto && emulation is null) return;
        var (w, h) = Options.Crop is { } c ? (c.Width, c.Height) : Options.Size is { } s ? (s.Width, s.Height)
            : train.UniformSize() ?? (train.SmallestImage() is var (_, sw, sh) ? (sw, sh) : (64, 64));
        var shape = new long[] { Math.Max(1, Options.BatchSize / (parallel.WorldSize)), model.Description.InChannels,
            h, w };
        if (auto)
        {
            var decision = AutoPrecision.Choose(model, device, shape);
            var chosen = new[] { decision.Chosen == Precision.BFloat16 ? 1.0 : 0 };
            parallel.FromMain(chosen, "the precision rank 0 chose");
            Options = Options with { Precision = Options.Precision with { Kind = chosen[0] > 0 ? Precision.BFloat16
                : Precision.Float32 } };
            model.Precision = Options.Precision.Kind;
            progress?.Report(new TrainingProgress { Kind = ProgressKind.Message, Message =
                $"precision auto: {Options.Precision.Kind.ShortName()} ({decision.Reason})" });
            return;
        }
        double slowdown = 1 / AutoPrecision.Measure(model, device, shape, Options.Precision.Kind);
        progress?.Report(new TrainingProgress { Kind = ProgressKind.Message, Message =
            $"warning: {Options.Precision.Kind.ShortName()} is emulated on this CPU ({emulation}): this model's step "
                + $"takes "
                + $"{slowdown:F1}x as long as in fp32. Use --precision fp32, or auto." });
    }

    /// <summary>The data must fit the model and each other; returns the training data's description.</summary>
    private DatasetDescription CheckData(SegmentationDataset train, SegmentationDataset? val)
    {
        var d = train.Description;
        if (val is not null && val.Description.Classes != d.Classes)
            throw new DataException($"Training data has {d.Classes} classes, validation data "
                + $"{val.Description.Classes}.");
        if (val is not null && val.Description.Task != d.Task)
            throw new DataException($"Training data is {d.Task.ToString().ToLowerInvariant()} data, validation data "
                + $"{val.Description.Task.ToString().ToLowerInvariant()}.");
        var m = model.Description;
        int planes = TaskRegistry.For(d, model.Outputs.Select(o => o.Kind)).ModelClasses(d);
        if (planes != m.Classes)
            throw new OptionsException($"The model has {m.Classes} output classes but the data set has {d.Classes} "
                + $"({string.Join(", ", d.ClassNames)})" + (planes == d.Classes ? "." : planes < d.Classes
                    ? $", the last the per-pixel task's: give this model {planes}." : $", and its "
                + $"{d.Instances!.Target.ToString().ToLowerInvariant()} target one more plane after them: give the "
                + $"model {planes}."));
        if (Options.ClassWeights is { } w && w.Length != d.Classes)
            throw new OptionsException($"{w.Length} class weights were given for data of {d.Classes} classes "
                + $"({string.Join(", ", d.ClassNames)}).");
        if (d.InChannels != m.InChannels)
            throw new OptionsException($"The model takes {m.InChannels} input channel(s) but the data set gives "
                + $"{d.InChannels}.");
        RefuseImagesSmallerThanTheModel(train, val);
        return d;
    }

    /// <summary>
    /// Images that reach the model at their own size (no <see cref="TrainerOptions.Size"/>; validation is never
    /// cropped) must be at least the model's smallest input: named before training, not failed in the first step.
    /// </summary>
    private void RefuseImagesSmallerThanTheModel(SegmentationDataset train, SegmentationDataset? val)
    {
        int min = model.MinimumInputSize;
        if (Options.Crop is { } crop && (crop.Height < min || crop.Width < min))
            throw new OptionsException($"The crop {crop} is smaller than the smallest input this model takes "
                + $"({min}x{min}).");
        if (Options.Size is not null) return;
        var extremes = train.SizeExtremes();
        if (Options.Crop is null && Options.BatchSize > 1 && extremes?.Differing is [var (f1, w1, h1),
            var (f2, w2, h2)])
            throw new DataException($"{train.Origin}: the training images differ in size ({f1} is {w1}x{h1}, {f2} is "
                + $"{w2}x{h2}), and a batch of {Options.BatchSize} needs one size. Resize them as they are read "
                + $"(--size {h1}x{w1}, TrainerOptions.Size), train on random crops (--crop), or use --batch-size 1.",
                f1);
        foreach (var data in Options.Crop is null ? new[] { train, val } : new[] { val })
            if ((data == train ? extremes?.Smallest : data?.SmallestImage()) is var (file, w, h) && (w < min
                || h < min))
                throw new DataException($"{file}: {w}x{h} is smaller than the smallest input this model takes "
                    + $"({min}x{min}: its encoder halves the image {(int)Math.Log2(min)} times). Resize the images as "
                    + $"they are read (--size, TrainerOptions.Size), or use larger ones. (Prediction pads small "
                    + $"images; training does not.)", file);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        parallel.Dispose();
        step.Dispose();
    }
}
