using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Models;
using Segmentation.Models.Layers;
using static TorchSharp.torch;

namespace Segmentation.Tasks;

/// <summary>
/// Instance segmentation: every object its own mask; and panoptic segmentation, which adds stuff classes scored by
/// region (panoptic quality per class). Targets: the class mask with each object's boundary as a class
/// of its own (<see cref="InstanceTargets"/>), made per batch after augmentation so the boundary keeps its width.
/// Evaluation: the confusion matrix of those classes, and the objects decoded by the seeded watershed scored against
/// the true ones (<see cref="InstanceScorer"/>). Best checkpoint: the highest AP (mean over IoU 0.50..0.95). With the
/// distance target (<see cref="InstanceTarget.Distance"/>) the model gives one more plane, learned by <see
/// cref="OwnLoss"/> against <see cref="DistanceTargets"/>, and the watershed floods from its peaks.
/// </summary>
internal sealed class InstanceSegmentation(InstanceSettings settings, bool panoptic) : SegmentationTask
{
    /// <inheritdoc />
    public override string Name => panoptic ? "panoptic" : "instance";

    /// <inheritdoc />
    public override (Tensor Images, Targets Targets) ToDevice(HostBatch batch, Device device)
    {
        var instances = batch.Instances ?? throw new DataException("The instance task needs instance data: a batch "
            + $"({string.Join(", ", batch.Names.Take(3))}) has no object numbers.");
        var target = InstanceTargets.Make(batch.Masks, instances, batch.Count, batch.Height, batch.Width,
            settings.BoundaryWidth, (byte)settings.Things.Length);
        var withTargets = new HostBatch { Count = batch.Count, Channels = batch.Channels, Height = batch.Height,
            Width = batch.Width, Images = batch.Images, Images16 = batch.Images16, Masks = target, Names = batch.Names,
            Levels = batch.Levels };
        var (images, masks) = withTargets.ToDevice(device);
        if (settings.Target != InstanceTarget.Distance) return (images, new Targets(masks));
        var distance = tensor(DistanceTargets.Make(instances, batch.Count, batch.Height, batch.Width),
            new long[] { batch.Count, batch.Height, batch.Width }).to(device);
        return (images, new Targets(new Dictionary<string, Tensor> { [Targets.MaskName] = masks,
            [DistanceName] = distance }));
    }

    /// <inheritdoc />
    public override IEnumerable<(string Key, string Value)> OnnxMetadata() => new[]
    {
        (Shared.OnnxMetadataKeys.Task, Name), (Shared.OnnxMetadataKeys.InstanceDecoding,
            settings.ToJson().ToJsonString()),
    };

    /// <summary>The name of the distance output and target (<see cref="InstanceTarget.Distance"/>): N x H x W, the
    /// output a logit, the target in [0, 1].</summary>
    public const string DistanceName = "distance";

    /// <summary>With the distance target, the plane after the classes becomes the output <see
    /// cref="DistanceName"/>.</summary>
    public override ModelOutputs Outputs(ModelOutputs raw)
    {
        if (settings.Target != InstanceTarget.Distance) return raw;
        var planes = raw.Logits;
        int classes = settings.Things.Length + 1;
        if (planes.shape[1] != classes + 1)
            throw new OptionsException($"The distance target needs {classes + 1} output planes (the {classes} classes, "
                + $"then the distance); the model gives {planes.shape[1]}.");
        var outputs = raw.Names.ToDictionary(n => n, n => raw[n]);
        outputs[ModelOutputs.LogitsName] = planes[.., ..classes];
        outputs[DistanceName] = planes[.., classes];
        return new ModelOutputs(outputs, raw.Schema.Append(new ModelOutput(DistanceName, 3, OutputKind.PixelRegression,
            "the distance target's logits, N x H x W")).ToList());
    }

    /// <summary>With the distance target: the binary cross-entropy of the distance output's logits against the
    /// normalised distances (StarDist's object-probability loss), averaged over the pixels that are not ignored,
    /// weight 1. None otherwise.</summary>
    public override Tensor? OwnLoss(ModelOutputs outputs, Targets targets)
    {
        if (settings.Target != InstanceTarget.Distance) return null;
        using var scope = NewDisposeScope();
        var logits = outputs[DistanceName].to_type(ScalarType.Float32);
        var valid = targets.Mask.ne(Scalars.Ignore).to_type(ScalarType.Float32);
        var bce = nn.functional.binary_cross_entropy_with_logits(logits, targets[DistanceName],
            reduction: nn.Reduction.None);
        return ((bce * valid).sum() / valid.sum().clamp_min(Scalars.One)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public override InstancePrediction? DecodeObjects(Tensor planes, Func<ModelOutputs> outputs) =>
        InstanceDecoding.Decode(
        planes.to_type(ScalarType.Float32).cpu().data<float>().ToArray(), (int)planes.shape[1], (int)planes.shape[2],
        settings);

    /// <inheritdoc />
    public override double DecodingBytesPerPixel(int planes) => sizeof(float) * (planes + 3.0);

    /// <inheritdoc />
    public override string SelectionMetric => panoptic ? "PQ" : "AP";

    /// <inheritdoc />
    public override double Score(SegmentationMetrics metrics) => (panoptic ? metrics.Instances?.Pq
        : metrics.Instances?.Ap) ?? double.NaN;

    /// <summary>The loss weights of the classes when none are given: 1, and the boundary weight for the
    /// boundary.</summary>
    public override float[] DefaultClassWeights => Enumerable.Repeat(1f, settings.Things.Length)
        .Append((float)settings.BoundaryWeight).ToArray();

    /// <inheritdoc />
    public override EvaluationResult Evaluate(DataLoader loader, Device device, DatasetDescription description,
        Normalization normalization, Func<Tensor, ModelOutputs> model, Func<ModelOutputs, Targets, Tensor>? loss,
        Action<int>? onBatch, CancellationToken cancellation, Distributed.ProcessGroup? group = null,
        bool perImage = false)
    {
        var scorer = ScorerFor(description, settings.Things, panoptic);
        var result = RunEvaluator(loader, device, description, normalization, model, loss, onBatch, cancellation,
            onOutputs: (batch, outputs) => Score(outputs.Logits, batch, scorer), group: group, perImage: perImage);
        if (group is not null) scorer.AllReduce(group);
        return result with { Metrics = result.Metrics with { Instances = scorer.Compute() } };
    }

    /// <summary>The scorer of the task's objects: per class for panoptic data (the classes before the boundary),
    /// class-agnostic objects otherwise.</summary>
    internal static InstanceScorer ScorerFor(DatasetDescription d, bool[] things, bool panoptic) => panoptic
        ? new InstanceScorer(d.ClassNames[..^1], things) : InstanceScorer.ForObjects();

    /// <summary>Each true object's class: the class mask at its first pixel.</summary>
    private static Func<int, int> FirstClassOf(int[] objects, ReadOnlySpan<byte> classes)
    {
        var first = new Dictionary<int, int>();
        for (int i = 0; i < objects.Length; i++) if (objects[i] > 0) first.TryAdd(objects[i], classes[i]);
        return o => first[o];
    }

    /// <summary>Decodes each image of the batch into objects (in parallel) and scores them against its true
    /// objects; ignored pixels are void.</summary>
    private void Score(Tensor logits, HostBatch batch, InstanceScorer scorer)
    {
        int hw = batch.Height * batch.Width;
        var host = logits.to_type(ScalarType.Float32).cpu().data<float>().ToArray();
        int planes = (int)logits.shape[1]; // the classes, and the distance with that target
        var decoded = new InstancePrediction[batch.Count];
        Parallel.For(0, batch.Count, b => decoded[b] = InstanceDecoding.Decode(
            host.AsSpan(b * planes * hw, planes * hw), batch.Height, batch.Width, settings));
        Score(decoded, batch, scorer, settings.Things, panoptic);
    }

    /// <summary>Scores each image's decoded objects against its true objects (panoptic: the segments of both, the
    /// stuff classes' by each pixel's best class); ignored pixels are void.</summary>
    internal static void Score(InstancePrediction[] decoded, HostBatch batch, InstanceScorer scorer, bool[] things,
        bool panoptic)
    {
        int hw = batch.Height * batch.Width;
        for (int b = 0; b < batch.Count; b++)
        {
            var truth = new int[hw];
            var isVoid = new bool[hw];
            for (int i = 0; i < hw; i++)
            {
                truth[i] = batch.Instances![b * hw + i];
                isVoid[i] = batch.Masks[b * hw + i] == Labels.Ignore;
            }
            if (!panoptic) { scorer.Add(truth, null, decoded[b].Objects, null, isVoid); continue; }
            var classes = batch.Masks.AsSpan(b * hw, hw);
            var t = PanopticSegments.Build(truth, FirstClassOf(truth, classes), classes, things);
            var p = decoded[b];
            var q = PanopticSegments.Build(p.Objects, o => p.Classes[o - 1], p.BestClass, things);
            scorer.Add(t.Ids, t.Classes, q.Ids, q.Classes, isVoid);
        }
    }
}
