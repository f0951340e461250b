using Segmentation.Data;

namespace Segmentation.Evaluation;

/// <summary>Objects decoded from one image's prediction.</summary>
public sealed class InstancePrediction
{
    /// <summary>Width in pixels.</summary>
    public int Width { get; init; }
    /// <summary>Height in pixels.</summary>
    public int Height { get; init; }
    /// <summary>An object number per pixel (0: none), row by row; objects are numbered 1..<see cref="Count"/> in
    /// raster order of their first pixel.</summary>
    public int[] Objects { get; init; } = Array.Empty<int>();
    /// <summary>Objects found.</summary>
    public int Count { get; init; }
    /// <summary>The class of object i at [i - 1] (the data's class, e.g. 1 for "object").</summary>
    public int[] Classes { get; init; } = Array.Empty<int>();
    /// <summary>Each pixel's best class (background, object, boundary for instance data).</summary>
    public byte[] BestClass { get; init; } = Array.Empty<byte>();
}

/// <summary>
/// Logits of an interior/boundary model to objects: the seeded watershed both predictors share (TorchSharp here,
/// ONNX Runtime in Segmentation.Onnx), with the settings the model was trained with.
/// </summary>
public static class InstanceDecoding
{
    /// <summary>Decodes one image's logits, laid out planes x height x width (the classes, then the distance with that
    /// target).</summary>
    public static InstancePrediction Decode(ReadOnlySpan<float> logits, int height, int width,
        InstanceSettings settings)
    {
        int classes = settings.Things.Length + 1;
        var r = Shared.InstanceDecoder.Decode(logits, classes, height, width, settings.Things, settings.MinSize,
            settings.MinSeedSize, settings.SeedThreshold, settings.Target == InstanceTarget.Distance);
        return new InstancePrediction { Width = width, Height = height, Objects = r.Labels, Count = r.Count,
            Classes = r.Classes, BestClass = r.BestClass };
    }
}
