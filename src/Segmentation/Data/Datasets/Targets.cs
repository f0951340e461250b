using static TorchSharp.torch;

namespace Segmentation.Data;

/// <summary>
/// What a batch is scored against, by name, on the model's device: the class mask (<see cref="MaskName"/>, N x H x W
/// int64); for instance and panoptic data the task writes each object's boundary class into it (from the batch's
/// object numbers, <see cref="InstanceTargets"/>). A loss reads the targets its task names.
/// </summary>
public sealed class Targets
{
    /// <summary>The name of the class mask.</summary>
    public const string MaskName = "mask";

    private readonly Dictionary<string, Tensor> targets;

    /// <summary>Targets by name.</summary>
    public Targets(IReadOnlyDictionary<string, Tensor> targets) => this.targets = new Dictionary<string,
        Tensor>(targets);

    /// <summary>Just the class mask.</summary>
    public Targets(Tensor mask) : this(new Dictionary<string, Tensor> { [MaskName] = mask }) { }

    /// <summary>The class mask, N x H x W.</summary>
    public Tensor Mask => this[MaskName];

    /// <summary>A target by name; a missing one is an error that lists those there are.</summary>
    public Tensor this[string name] => targets.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"The batch has no target '{name}'; it has "
        + $"{string.Join(", ", targets.Keys)}.");

    /// <summary>The names.</summary>
    public IEnumerable<string> Names => targets.Keys;
}
