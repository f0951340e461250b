namespace Segmentation.Models;

/// <summary>What a model output means, so that prediction, the tasks and the ONNX reader find what they need by
/// meaning rather than by name or position.</summary>
public enum OutputKind
{
    /// <summary>Class logits per pixel: N x classes x H x W at the input's size (the semantic and instance
    /// tasks' input).</summary>
    PixelClassLogits,
    /// <summary>Class logits per query: N x queries x (classes + 1), the last "no object" (MaskFormer's).</summary>
    QueryClassLogits,
    /// <summary>Mask logits per query: N x queries x h x w, at a stride of the input (MaskFormer's).</summary>
    QueryMaskLogits,
    /// <summary>A regression per pixel: N x planes x H x W (distances, offsets).</summary>
    PixelRegression,
    /// <summary>An output for training only (deep supervision, an auxiliary classifier): any rank.</summary>
    Auxiliary,
}

/// <summary>One output a head declares: its name in <see cref="ModelOutputs"/> and in an ONNX graph, its rank and
/// meaning.</summary>
/// <param name="Name">The output's name.</param>
/// <param name="Rank">Its number of dimensions (the batch first).</param>
/// <param name="Kind">What it means.</param>
/// <param name="Description">In words, for summaries and the ONNX metadata.</param>
public sealed record ModelOutput(string Name, int Rank, OutputKind Kind, string Description = "")
{
    /// <summary>The per-pixel class logits every built-in head gives, named <c>logits</c>.</summary>
    public static ModelOutput PixelLogits { get; } = new(ModelOutputs.LogitsName, 4, OutputKind.PixelClassLogits,
        "class logits, N x classes x H x W at the input's size");

    /// <summary>A schema of <see cref="PixelLogits"/> alone: every built-in head's (one instance, so that holding a
    /// pass to it costs a reference comparison).</summary>
    public static IReadOnlyList<ModelOutput> PixelLogitsOnly { get; } = new[] { PixelLogits };

    /// <summary>The kind's name in metadata: <c>pixel-class-logits</c>, ...</summary>
    public static string KindName(OutputKind kind) => kind switch
    {
        OutputKind.PixelClassLogits => Shared.OnnxMetadataKeys.PixelClassLogits, // what Segmentation.Onnx looks for
        OutputKind.QueryClassLogits => Shared.OnnxMetadataKeys.QueryClassLogits,
        OutputKind.QueryMaskLogits => Shared.OnnxMetadataKeys.QueryMaskLogits,
        OutputKind.PixelRegression => "pixel-regression",
        _ => "auxiliary",
    };
}
