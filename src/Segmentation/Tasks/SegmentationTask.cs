using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Models;
using static TorchSharp.torch;

namespace Segmentation.Tasks;

/// <summary>
/// A kind of segmentation, as training, evaluation and prediction meet it: the targets a batch carries (by name), the
/// loss terms of its own targets, its decoding of the model's outputs (the class map, and the objects of instance and
/// panoptic data), how an epoch is evaluated, and which number picks the best checkpoint. Tasks are found by name in
/// <see cref="TaskRegistry"/>; semantic segmentation is <see cref="SemanticSegmentation"/>, instance and panoptic
/// segmentation <see cref="InstanceSegmentation"/>. Training and inference both ask the task, so neither switches on
/// the kind of data.
/// </summary>
internal abstract class SegmentationTask
{
    /// <summary>The task's name, as records say it.</summary>
    public abstract string Name { get; }

    /// <summary>The batch's images (uint8 N x C x H x W) and targets, on <paramref name="device"/>.</summary>
    public abstract (Tensor Images, Targets Targets) ToDevice(HostBatch batch, Device device);

    /// <summary>The metric that picks the best checkpoint, as reports name it.</summary>
    public abstract string SelectionMetric { get; }

    /// <summary>The value of <see cref="SelectionMetric"/> in <paramref name="metrics"/> (higher is better; NaN:
    /// none).</summary>
    public abstract double Score(SegmentationMetrics metrics);

    /// <summary>Evaluates <paramref name="model"/> on a loader's data; the mean loss too when <paramref name="loss"/>
    /// is given (the training loss: outputs and targets to a scalar); per image too with <paramref
    /// name="perImage"/>.</summary>
    public abstract EvaluationResult Evaluate(DataLoader loader, Device device, DatasetDescription description,
        Normalization normalization, Func<Tensor, ModelOutputs> model, Func<ModelOutputs, Targets, Tensor>? loss,
        Action<int>? onBatch, CancellationToken cancellation, Distributed.ProcessGroup? group = null,
        bool perImage = false);

    /// <summary>What an ONNX export of this task's model carries for the task in its metadata, by key (nothing for
    /// semantic segmentation; the task and its decoding settings for instance and panoptic models, which
    /// <c>Segmentation.Onnx</c> reads).</summary>
    public virtual IEnumerable<(string Key, string Value)> OnnxMetadata() => Array.Empty<(string, string)>();

    /// <summary>The outputs this task reads, by meaning: the class logits per pixel for the built-in tasks.</summary>
    public virtual IReadOnlyList<OutputKind> NeededOutputs => new[] { OutputKind.PixelClassLogits };

    /// <summary>Refuses a model that lacks an output this task reads, naming what it gives; no output is mandatory
    /// for a model, only for the tasks that read it.</summary>
    public void CheckModel(IReadOnlyList<ModelOutput> outputs)
    {
        foreach (var kind in NeededOutputs.Where(k => outputs.All(o => o.Kind != k)))
            throw new OptionsException($"The {Name} task reads the model's {ModelOutput.KindName(kind)} output; this "
                + $"model gives {ModelOutputs.Describe(outputs)}.");
    }

    /// <summary>The model's outputs as this task's losses and metrics read them: the class logits under <see
    /// cref="ModelOutputs.LogitsName"/>, and whatever else the task's target adds by name. By default, as they
    /// are.</summary>
    public virtual ModelOutputs Outputs(ModelOutputs raw) => raw;

    /// <summary>The loss terms of this task's own targets (beyond the classes', which the trainer's loss gives),
    /// as a scalar; null when it has none (the default).</summary>
    public virtual Tensor? OwnLoss(ModelOutputs outputs, Targets targets) => null;

    /// <summary>The classes' loss weights when the options give none (null: unweighted).</summary>
    public virtual float[]? DefaultClassWeights => null;

    /// <summary>The objects of one image, decoded from its output planes (C x H x W, as the model gave them) or, for a
    /// task that reads other outputs, from the model's outputs for the image (a batch of one, at the size the model
    /// ran at), which <paramref name="outputs"/> computes when asked; null for a task without objects (the default,
    /// which leaves the planes on their device).</summary>
    public virtual InstancePrediction? DecodeObjects(Tensor planes, Func<ModelOutputs> outputs) => null;

    /// <summary>Whether <see cref="DecodeObjects"/> reads outputs other than the per-pixel planes (a mask classifier's
    /// queries): its objects then come from one pass of the whole image, not from the averaged views or windows that
    /// make the planes.</summary>
    public virtual bool DecodesQueries => false;

    /// <summary>The classes the model predicts for data described by <paramref name="d"/>: the data's classes and any
    /// planes its target adds (the default), or what the task's model needs instead.</summary>
    public virtual int ModelClasses(DatasetDescription d) => d.OutputPlanes();

    /// <summary>Bytes a pixel that <see cref="DecodeObjects"/> needs for a model of <paramref name="planes"/> output
    /// planes (0 without objects): for the predictor's memory check before it allocates.</summary>
    public virtual double DecodingBytesPerPixel(int planes) => 0;

    /// <summary>The one evaluation loop (<see cref="Evaluator.Run"/>) with the model's outputs and the task's loss:
    /// batches reach the device through this task's <see cref="ToDevice"/>, and <paramref name="onOutputs"/> sees
    /// each batch's outputs as the model gave them (the output planes: the classes and any planes the target adds;
    /// and any other output).</summary>
    protected EvaluationResult RunEvaluator(DataLoader loader, Device device, DatasetDescription description,
        Normalization normalization, Func<Tensor, ModelOutputs> model, Func<ModelOutputs, Targets, Tensor>? loss,
        Action<int>? onBatch, CancellationToken cancellation, Action<HostBatch, ModelOutputs>? onOutputs = null,
        Distributed.ProcessGroup? group = null, bool perImage = false)
    {
        ModelOutputs? last = null, raw = null;
        Tensor Logits(Tensor x)
        {
            raw = model(x);
            return (last = Outputs(raw)).Logits;
        }
        Targets? batchTargets = null; // every target of the batch (the loop hands on the mask alone)
        Func<Tensor, Tensor, Tensor>? scored = loss is null ? null : (_, _) => loss(last!, batchTargets!);
        return Evaluator.Run(loader, device, description, normalization, Logits, scored, perImage, onBatch: onBatch,
            cancellation: cancellation, toDevice: b =>
            {
                var (images, targets) = ToDevice(b, device);
                batchTargets = targets;
                return (images, targets.Mask);
            }, onLogits: onOutputs is null ? null : (batch, _) => onOutputs(batch, raw!), group: group);
    }
}

/// <summary>
/// Semantic segmentation: one class per pixel. Targets: the class mask (<see cref="Targets.MaskName"/>). Evaluation:
/// the one confusion matrix (<see cref="Evaluator"/>). Best checkpoint: the highest mean IoU.
/// </summary>
internal sealed class SemanticSegmentation : SegmentationTask
{
    /// <summary>The one instance.</summary>
    public static SemanticSegmentation Instance { get; } = new();

    /// <inheritdoc />
    public override string Name => "semantic";

    /// <inheritdoc />
    public override (Tensor Images, Targets Targets) ToDevice(HostBatch batch, Device device)
    {
        var (images, masks) = batch.ToDevice(device);
        return (images, new Targets(masks));
    }

    /// <inheritdoc />
    public override string SelectionMetric => "mean IoU";

    /// <inheritdoc />
    public override double Score(SegmentationMetrics metrics) => metrics.MeanIoU;

    /// <inheritdoc />
    public override EvaluationResult Evaluate(DataLoader loader, Device device, DatasetDescription description,
        Normalization normalization, Func<Tensor, ModelOutputs> model, Func<ModelOutputs, Targets, Tensor>? loss,
        Action<int>? onBatch, CancellationToken cancellation, Distributed.ProcessGroup? group = null,
        bool perImage = false)
        => RunEvaluator(loader, device, description, normalization, model, loss, onBatch, cancellation, group: group,
            perImage: perImage);
}
