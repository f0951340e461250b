using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Models;
using Segmentation.Tasks;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>
/// The training step and what it owns: the optimiser (one or two parameter groups), the loss of the data's task, the
/// loss scaler of float16, the fused AdamW, the weight average. One step is forward, loss, backward and, when the
/// accumulated batches are complete, the gradients' reduction over the processes, clipping and the optimiser, inside
/// one dispose scope. It also evaluates (the same loss, in eval mode) and turns itself into a checkpoint and back.
/// </summary>
internal sealed class TrainingStep : IDisposable
{
    private readonly SegmentationModel model;
    private readonly Device device;
    private readonly TrainerOptions options;
    private readonly DataParallel parallel;
    private readonly TorchSharp.Modules.OptimizerHelper optimizer;
    private readonly double[] groupScales;
    private readonly LossScaler? scaler;
    private readonly FusedAdamW? fused;
    private readonly DeviceLossScaler? deviceScaler;
    private readonly bool ownsLoss;
    private ISegmentationLoss classesLoss;
    private TaskLoss loss;

    /// <summary>The task of the data (semantic until <see cref="UseTask"/>).</summary>
    public SegmentationTask Task { get; private set; } = SemanticSegmentation.Instance;
    /// <summary>The exponential moving average of the weights (null: none).</summary>
    public WeightAverage? Average { get; }
    /// <summary>The device the model trains on.</summary>
    public Device Device => device;
    /// <summary>The step being trained, for messages ("step 12 of epoch 2").</summary>
    public string Name { get; set; } = "a step";

    /// <summary>The step for <paramref name="model"/> (already on <paramref name="device"/>) under
    /// <paramref name="options"/> (validated).</summary>
    public TrainingStep(SegmentationModel model, Device device, TrainerOptions options, DataParallel parallel)
    {
        this.model = model; this.device = device; this.options = options; this.parallel = parallel;
        scaler = options.Precision.Kind == Precision.Float16 ? new LossScaler(options.Precision.InitialLossScale,
            growthInterval: options.Precision.LossScaleGrowthInterval) : null;
        (optimizer, groupScales) = CreateOptimizer(model, options);
        if (options.Optimizer.WeightAverageDecay is { } decay) Average = new WeightAverage(model, decay);
        if (options.Optimizer.Fused && optimizer is TorchSharp.Modules.AdamW adamW && FusedAdamW.Unavailable is null)
        {
            fused = new FusedAdamW(adamW);
            if (scaler is not null) deviceScaler = new DeviceLossScaler(scaler, device);
        }
        (classesLoss, ownsLoss) = options.Loss.Object is { } given ? (given, false)
            : (LossRegistry.Create(options), true);
        ShareMaskCount();
        loss = new TaskLoss(classesLoss, Task, ownsLoss);
    }

    /// <summary>A data-parallel run's set loss divides by the mean number of target masks over the processes, so that
    /// it stays the loss of one process on the whole batch (transformers' all-reduce of num_masks).</summary>
    private void ShareMaskCount()
    {
        if (classesLoss is not MaskClassificationLoss set || parallel.Group is not { WorldSize: > 1 } group) return;
        set.ReduceCount = own =>
        {
            var all = new[] { own };
            group.AllReduce(all, "the number of target masks");
            return all[0] / group.WorldSize;
        };
    }

    /// <summary>The float16 loss scaler as of the last read-back (null otherwise); see <see
    /// cref="SyncScaler"/>.</summary>
    public LossScaler? Scaler => scaler;

    /// <summary>Reads the loss scale back from the device, where the fused step keeps it.</summary>
    public void SyncScaler() => deviceScaler?.ReadInto();

    /// <summary>
    /// One parameter group, or two (encoder first, then the rest) when the encoder learns at another rate or starts
    /// frozen; returns the optimiser and each group's share of the scheduled learning rate.
    /// </summary>
    private static (TorchSharp.Modules.OptimizerHelper, double[]) CreateOptimizer(SegmentationModel model,
        TrainerOptions o)
    {
        bool split = o.Optimizer.EncoderLearningRateScale != 1 || o.Optimizer.FreezeEncoderEpochs > 0;
        var encoderParameters = model.Encoder.parameters().ToHashSet();
        var groups = new List<(List<TorchSharp.Modules.Parameter> Parameters, double Scale)>();
        if (split)
        {
            groups.Add((model.parameters().Where(encoderParameters.Contains).ToList(),
                o.Optimizer.EncoderLearningRateScale));
            groups.Add((model.parameters().Where(p => !encoderParameters.Contains(p)).ToList(), 1.0));
        }
        else groups.Add((model.parameters().ToList(), 1.0));
        var scales = groups.Select(g => g.Scale).ToArray();
        if (o.Optimizer.Kind == OptimizerKind.Sgd)
            return (optim.SGD(groups.Select(g => new TorchSharp.Modules.SGD.ParamGroup(g.Parameters,
                o.Optimizer.LearningRate
                * g.Scale, o.Optimizer.Momentum, weight_decay: o.Optimizer.WeightDecay)), o.Optimizer.LearningRate,
                    o.Optimizer.Momentum,
                    weight_decay: o.Optimizer.WeightDecay), scales);
        return (optim.AdamW(groups.Select(g => new TorchSharp.Modules.AdamW.ParamGroup(g.Parameters,
            o.Optimizer.LearningRate
            * g.Scale, weight_decay: o.Optimizer.WeightDecay)), o.Optimizer.LearningRate,
                weight_decay: o.Optimizer.WeightDecay), scales);
    }

    /// <summary>The task of the data (<see cref="TaskRegistry"/>): its own loss terms join the loss of the classes,
    /// and its default class weights (instance data's boundary weight) apply when the options give none.</summary>
    public void UseTask(DatasetDescription d)
    {
        var chosen = TaskRegistry.For(d, model.Outputs.Select(o => o.Kind));
        chosen.CheckModel(model.Outputs);
        if (chosen.Name == Task.Name) return;
        Task = chosen;
        if (ownsLoss && options.ClassWeights is null && Task.DefaultClassWeights is { } weights)
        {
            (classesLoss as IDisposable)?.Dispose();
            classesLoss = LossRegistry.Create(options with { ClassWeights = weights });
            ShareMaskCount();
        }
        loss = new TaskLoss(classesLoss, Task, ownsLoss);
    }

    /// <summary>Sets every group's learning rate: the scheduled rate times the group's share.</summary>
    public void SetLearningRate(double lr)
    {
        int i = 0;
        foreach (var g in optimizer.ParamGroups) g.LearningRate = lr
            * groupScales[Math.Min(i++, groupScales.Length - 1)];
    }

    /// <summary>Freezes the encoder during the first <see cref="OptimizerOptions.FreezeEncoderEpochs"/> epochs, and
    /// thaws
    /// it after.</summary>
    public void FreezeEncoderFor(int epoch)
    {
        if (options.Optimizer.FreezeEncoderEpochs == 0) return;
        bool frozen = epoch <= options.Optimizer.FreezeEncoderEpochs;
        foreach (var p in model.Encoder.parameters()) p.requires_grad_(!frozen);
    }

    /// <summary>Zeroes the gradients (in a scope: their handles are tensors too).</summary>
    public void ZeroGradients()
    {
        using (NewDisposeScope()) optimizer.zero_grad();
    }

    /// <summary>One training step on a host batch, in its own dispose scope; returns the loss (one
    /// read-back).</summary>
    public float Run(HostBatch batch, Normalization normalization, bool applyOptimizer)
    {
        using var scope = NewDisposeScope();
        Tensor images;
        Targets targets;
        using (StepProfile.Time("targets")) (images, targets) = Task.ToDevice(batch, device);
        var value = loss.Compute(Task.Outputs(model.forward(normalization.Apply(images, batch))), targets);
        var objective = options.Optimizer.AccumulationSteps > 1 ? value / options.Optimizer.AccumulationSteps : value;
        using (StepProfile.Time("backward"))
            (deviceScaler?.ScaleLoss(objective) ?? scaler?.ScaleLoss(objective) ?? objective).backward();
        using var optimiserTime = StepProfile.Time("optimiser step");
        if (applyOptimizer)
        {
            parallel.ReduceGradients(Name);
            // the scale stays on the device
            if (fused is not null) fused.Step(options.Optimizer.GradientClipNorm, deviceScaler);
            else PerParameterStep();
            optimizer.zero_grad();
        }
        return value.item<float>();
    }

    /// <summary>TorchSharp's optimiser step; float16: gradients back to their true size first, and a step with an
    /// overflow is skipped (the scale backs off).</summary>
    private void PerParameterStep()
    {
        bool finite = scaler?.Unscale(model.parameters()) ?? true;
        if (finite)
        {
            if (options.Optimizer.GradientClipNorm is { } clip) nn.utils.clip_grad_norm_(model.parameters(), clip);
            optimizer.step();
        }
        scaler?.Update(finite);
    }

    /// <summary>Metrics and mean loss of the model on a loader's data (the one evaluation loop, in eval
    /// mode).</summary>
    public (SegmentationMetrics, double) Evaluate(DataLoader loader, Normalization normalization,
        DatasetDescription d, CancellationToken cancellation, Action<int> onBatch)
    {
        model.eval();
        try
        {
            var result = Task.Evaluate(loader, device, d, normalization, model.forward, loss.Compute, onBatch,
                cancellation, parallel.Group);
            return (result.Metrics, result.MeanLoss);
        }
        finally { model.train(); }
    }

    /// <summary>A checkpoint of the run at <paramref name="state"/>: the weights (the average's, with the weights as
    /// trained beside them), the optimiser, the random generator and <paramref name="options"/> as they now
    /// are.</summary>
    public Checkpoint ToCheckpoint(TrainingState state, TrainerOptions options, DatasetDescription d,
        Normalization normalization, SegmentationMetrics? metrics, string trainOrigin, string? valOrigin)
    {
        var opt = new MemoryStream();
        fused?.SyncSteps();
        using (var w = new BinaryWriter(opt, System.Text.Encoding.UTF8, leaveOpen: true)) optimizer.save_state_dict(w);
        using var rng = random.get_rng_state();
        return new Checkpoint
        {
            Model = model.Description, Dataset = d, Preprocessing = new Preprocessing(normalization, options.Size),
                TrainerSettings = options.ToJson(), State = state,
            TrainOrigin = trainOrigin, ValOrigin = valOrigin, Metrics = metrics,
            // with an average, the checkpoint predicts with it and resumes from the weights as trained
            Weights = Average?.With(() => Checkpoint.SerializeWeights(model)) ?? Checkpoint.SerializeWeights(model),
            TrainingWeights = Average is null ? Array.Empty<byte>() : Checkpoint.SerializeWeights(model),
            OptimizerState = opt.ToArray(), RngState = rng.data<byte>().ToArray(),
        };
    }

    /// <summary>Takes up a checkpoint of this run: the weights as trained (under an average), the optimiser, the loss
    /// scale, the random generator and the layers' routes for every shape checked before.</summary>
    public void Resume(Checkpoint from)
    {
        if (Average is not null && from.TrainingWeights.Length > 0)
        {
            // the model was built from the checkpoint's weights, which are the average (and so is the average now);
            // training goes on from the weights as trained
            using var scope = NewDisposeScope();
            StateDicts.Load(model, StateDicts.ReadTorchSharp(from.TrainingWeights),
                "The checkpoint's training weights");
        }
        if (from.OptimizerState.Length > 0)
        {
            using var reader = new BinaryReader(new MemoryStream(from.OptimizerState));
            optimizer.load_state_dict(reader);
            fused?.Reset();
        }
        if (scaler is not null && from.State.LossScale is { } scale)
        {
            scaler.Restore(scale, from.State.LossScaleGoodSteps);
            deviceScaler?.Load();
        }
        if (from.RngState.Length > 0)
        {
            using var rng = tensor(from.RngState, ScalarType.Byte);
            random.set_rng_state(rng);
        }
        // the routes the layers had: each is the first right for every shape checked so far
        if (model.VerifyLayers)
            foreach (var input in from.State.CheckedInputs) model.CheckLayers(input.Shape, input.Training);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        fused?.Dispose();
        deviceScaler?.Dispose();
        Average?.Dispose();
        optimizer.Dispose();
        loss.Dispose(); // the loss of the classes with it, when the step built it
    }
}
