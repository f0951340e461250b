using System.Text.Json.Nodes;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Models;
using static TorchSharp.torch;

namespace Segmentation.Tasks;

/// <summary>
/// Instance and panoptic segmentation by a mask classifier (Mask2Former, MaskFormer): the model predicts per query a
/// class (or "no object") and a mask, and one model gives the class map, the instances and the panoptic segments.
/// Targets: the class mask, and each image's segments (<see cref="SegmentTargets"/>: every object its own, every stuff
/// class present one, the background included), which the set loss (<c>--loss mask2former</c>) matches to the
/// queries. The model's classes are the data's, without the boundary class the per-pixel instance task adds.
/// Decoding: transformers' <c>post_process_instance_segmentation</c> (the thing classes' queries; objects of a score
/// of at least <see cref="Threshold"/>) and <c>post_process_panoptic_segmentation</c> (the stuff classes fused), in
/// <c>MaskClassificationDecoder</c>, which <c>Segmentation.Onnx</c> shares. Evaluation and the best checkpoint: as
/// the per-pixel instance task's (AP for instances, PQ for panoptic), on the decoded objects.
/// </summary>
internal sealed class MaskClassificationTask(DatasetDescription description, bool panoptic) : SegmentationTask
{
    private readonly InstanceSettings settings = description.Instances ?? throw new DataException(
        $"The data is {TaskRegistry.NameOf(description)} data but its description holds no instance settings.");

    /// <summary>The least score of an instance (the class probability times the mask's mean probability inside it),
    /// and the least class probability of a panoptic segment's query: transformers' default, 0.5, unless the data's
    /// instance settings give a <see cref="InstanceSettings.SeedThreshold"/> (<c>--seed-threshold</c>).</summary>
    public float Threshold => (float)(settings.SeedThreshold ?? 0.5);

    /// <summary>The mask probability of a panoptic query's own pixels, and the share of them it must keep
    /// (transformers' mask_threshold and overlap_mask_area_threshold).</summary>
    public const float MaskThreshold = 0.5f, Overlap = 0.8f;

    /// <inheritdoc />
    public override string Name => panoptic ? "panoptic" : "instance";

    /// <inheritdoc />
    public override IReadOnlyList<OutputKind> NeededOutputs => new[]
    {
        OutputKind.PixelClassLogits, OutputKind.QueryClassLogits, OutputKind.QueryMaskLogits,
    };

    /// <summary>The data's classes (the boundary class after them is the per-pixel task's).</summary>
    public override int ModelClasses(DatasetDescription d) => d.Classes - 1;

    /// <inheritdoc />
    public override bool DecodesQueries => true;

    /// <inheritdoc />
    public override (Tensor Images, Targets Targets) ToDevice(HostBatch batch, Device device)
    {
        var instances = batch.Instances ?? throw new DataException($"The {Name} task needs instance data: a batch "
            + $"({string.Join(", ", batch.Names.Take(3))}) has no object numbers.");
        var (images, masks) = batch.ToDevice(device);
        var (segments, classes, most) = SegmentTargets.Make(batch.Masks, instances, batch.Count,
            batch.Height * batch.Width, settings.Things);
        return (images, new Targets(new Dictionary<string, Tensor>
        {
            [Targets.MaskName] = masks,
            [Training.MaskClassificationLoss.SegmentsName] = tensor(segments, new long[] { batch.Count, batch.Height,
                batch.Width }).to(device),
            [Training.MaskClassificationLoss.SegmentClassesName] = tensor(classes, new long[] { batch.Count, most })
                .to(device),
        }));
    }

    /// <inheritdoc />
    public override IEnumerable<(string Key, string Value)> OnnxMetadata() => new[]
    {
        (Shared.OnnxMetadataKeys.Task, Name), (Shared.OnnxMetadataKeys.InstanceDecoding,
            settings.ToJson().ToJsonString()), (Shared.OnnxMetadataKeys.MaskDecoding, DecodingJson().ToJsonString()),
    };

    /// <summary>The decoding's settings, as the ONNX metadata carries them.</summary>
    public JsonObject DecodingJson() => new()
    {
        ["threshold"] = Threshold, ["maskThreshold"] = MaskThreshold, ["overlap"] = Overlap,
        ["fuse"] = new JsonArray(Fused.Select(c => (JsonNode?)c).ToArray()),
        ["things"] = new JsonArray(settings.Things.Select(t => (JsonNode?)t).ToArray()),
    };

    /// <summary>The stuff classes: one panoptic segment each.</summary>
    private int[] Fused => Enumerable.Range(0, settings.Things.Length).Where(c => !settings.Things[c]).ToArray();

    /// <inheritdoc />
    public override InstancePrediction? DecodeObjects(Tensor planes, Func<ModelOutputs> outputs)
    {
        var o = outputs();
        var (classLogits, maskLogits) = (Host(o[Training.MaskClassificationLoss.ClassLogits]),
            Host(o[Training.MaskClassificationLoss.MaskLogits]));
        var shape = o[Training.MaskClassificationLoss.MaskLogits].shape;
        var best = Host(planes.argmax(0).to_type(ScalarType.Int32));
        return Decode(classLogits, maskLogits, (int)shape[1], (int)shape[2], (int)shape[3], best,
            (int)planes.shape[1], (int)planes.shape[2]);
    }

    private static float[] Host(Tensor t) => t.to_type(ScalarType.Float32).cpu().data<float>().ToArray();

    /// <summary>One image's objects: instances (the thing classes' queries) or panoptic segments (objects the thing
    /// segments, each pixel's best class the class of its segment, or of the class map where it has none).</summary>
    private InstancePrediction Decode(float[] classLogits, float[] maskLogits, int queries, int h, int w,
        float[] bestClass, int height, int width)
    {
        var things = Enumerable.Range(0, settings.Things.Length).Where(c => settings.Things[c]).ToHashSet();
        var decoded = panoptic
            ? MaskClassificationDecoder.Panoptic(classLogits, maskLogits, queries, h, w, height, width, Threshold,
                MaskThreshold, Overlap, Fused.ToHashSet())
            : MaskClassificationDecoder.Instances(classLogits, maskLogits, queries, h, w, height, width, Threshold,
                things);
        var (objects, count, classes, best) = MaskClassificationDecoder.ToObjects(decoded, things,
            Array.ConvertAll(bestClass, v => (int)v));
        return new InstancePrediction { Width = width, Height = height, Objects = objects, Count = count,
            Classes = classes, BestClass = best };
    }

    /// <summary>Host bytes a pixel of decoding needs: the class map, the objects and a resized mask per query kept
    /// (bounded by the panoptic decoding's, which keeps every query that passes).</summary>
    public override double DecodingBytesPerPixel(int planes) => sizeof(float) * (planes + 4.0);

    /// <inheritdoc />
    public override string SelectionMetric => panoptic ? "PQ" : "AP";

    /// <inheritdoc />
    public override double Score(SegmentationMetrics metrics) => (panoptic ? metrics.Instances?.Pq
        : metrics.Instances?.Ap) ?? double.NaN;

    /// <inheritdoc />
    public override EvaluationResult Evaluate(DataLoader loader, Device device, DatasetDescription d,
        Normalization normalization, Func<Tensor, ModelOutputs> model, Func<ModelOutputs, Targets, Tensor>? loss,
        Action<int>? onBatch, CancellationToken cancellation, Distributed.ProcessGroup? group = null,
        bool perImage = false)
    {
        var scorer = InstanceSegmentation.ScorerFor(d, settings.Things, panoptic);
        var result = RunEvaluator(loader, device, d, normalization, model, loss, onBatch, cancellation,
            onOutputs: (batch, outputs) => Score(outputs, batch, scorer), group: group, perImage: perImage);
        if (group is not null) scorer.AllReduce(group);
        return result with { Metrics = result.Metrics with { Instances = scorer.Compute() } };
    }

    /// <summary>Decodes each image of the batch (in parallel) and scores its objects.</summary>
    private void Score(ModelOutputs outputs, HostBatch batch, InstanceScorer scorer)
    {
        var classes = outputs[Training.MaskClassificationLoss.ClassLogits];
        var masks = outputs[Training.MaskClassificationLoss.MaskLogits];
        int queries = (int)masks.shape[1], h = (int)masks.shape[2], w = (int)masks.shape[3];
        int hw = batch.Height * batch.Width, perClass = (int)classes.shape[2];
        var (classHost, maskHost) = (Host(classes), Host(masks));
        var best = Host(outputs.Logits.argmax(1).to_type(ScalarType.Int32));
        var decoded = new InstancePrediction[batch.Count];
        Parallel.For(0, batch.Count, b => decoded[b] = Decode(
            classHost.AsSpan(b * queries * perClass, queries * perClass).ToArray(),
            maskHost.AsSpan(b * queries * h * w, queries * h * w).ToArray(), queries, h, w,
            best.AsSpan(b * hw, hw).ToArray(), batch.Height, batch.Width));
        InstanceSegmentation.Score(decoded, batch, scorer, settings.Things, panoptic);
    }
}

/// <summary>The segments a mask classifier learns from instance and panoptic data.</summary>
internal static class SegmentTargets
{
    /// <summary>
    /// Each image's segment map (a segment number per pixel from 0, -1 where none) and its segments' classes: every
    /// object of a thing class its own segment (its class: the class mask at its first pixel), every stuff class
    /// present one segment; ignored pixels, and thing pixels outside any object, belong to none. Returns the maps
    /// (<paramref name="count"/> x <paramref name="pixels"/>), the classes (<paramref name="count"/> x the most
    /// segments of an image, -1 after an image's last) and that most.
    /// </summary>
    public static (int[] Segments, long[] Classes, int Most) Make(byte[] mask, ushort[] instances, int count,
        int pixels, bool[] things)
    {
        var segments = new int[count * pixels];
        var perImage = new List<long>[count];
        for (int b = 0; b < count; b++)
        {
            var classes = perImage[b] = new List<long>();
            var objects = new Dictionary<int, int>();
            var stuff = new Dictionary<int, int>();
            for (int i = b * pixels; i < (b + 1) * pixels; i++)
            {
                int c = mask[i], o = instances[i];
                segments[i] = -1;
                if (c == Labels.Ignore) continue;
                if ((uint)c >= (uint)things.Length)
                    throw new DataException($"A mask holds class {c}; the data has {things.Length} classes.");
                var (own, key) = things[c] ? (objects, o) : (stuff, c);
                if (things[c] && o == 0) continue;
                if (!own.TryGetValue(key, out int id))
                {
                    own[key] = id = classes.Count;
                    classes.Add(c);
                }
                segments[i] = id;
            }
        }
        int most = Math.Max(1, perImage.Max(c => c.Count));
        var padded = new long[count * most];
        Array.Fill(padded, -1L);
        for (int b = 0; b < count; b++) perImage[b].CopyTo(padded, b * most);
        return (segments, padded, most);
    }
}
