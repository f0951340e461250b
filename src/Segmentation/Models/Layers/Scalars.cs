using TorchSharp;

namespace Segmentation.Models.Layers;

/// <summary>
/// Numbers the per-step code hands to libtorch, as <see cref="Scalar"/>s held for the life of the process. TorchSharp
/// turns a number given where a <see cref="Scalar"/> is expected (<c>t.add_(1)</c>, and the default <c>alpha</c> of
/// <c>a.add_(b)</c>) into a temporary native <c>c10::Scalar</c> whose only reference is dropped once its handle is
/// read; a garbage collection during the native call can finalize it and free the scalar libtorch is about to read:
/// "Unknown scalar type" (docs/reliability.md). A scalar referenced from here is never finalized.
/// </summary>
internal static class Scalars
{
    /// <summary>1 (an integer scalar: exact for every tensor type).</summary>
    public static readonly Scalar One = 1.ToScalar();
    /// <summary>The ignore index of decoded masks (<see cref="Data.Labels.Ignore"/>, 255).</summary>
    public static readonly Scalar Ignore = ((int)Data.Labels.Ignore).ToScalar();
}
