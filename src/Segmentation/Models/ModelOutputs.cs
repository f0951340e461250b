using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>
/// What a model's forward pass returns: tensors by name, as torchvision's segmentation models return <c>out</c> and
/// <c>aux</c>. <see cref="Logits"/> (N x classes x H x W, float32, the input's height and width) is always there; a
/// task reads the others it needs by name.
/// </summary>
public sealed class ModelOutputs
{
    /// <summary>The name of the class logits.</summary>
    public const string LogitsName = "logits";

    private readonly Dictionary<string, Tensor> outputs;

    /// <summary>Outputs by name; one must be <see cref="LogitsName"/>.</summary>
    public ModelOutputs(IReadOnlyDictionary<string, Tensor> outputs)
    {
        if (!outputs.ContainsKey(LogitsName))
            throw new ArgumentException($"A model's outputs must include '{LogitsName}'.");
        this.outputs = new Dictionary<string, Tensor>(outputs);
    }

    /// <summary>Just the logits.</summary>
    public ModelOutputs(Tensor logits) : this(new Dictionary<string, Tensor> { [LogitsName] = logits }) { }

    /// <summary>The class logits.</summary>
    public Tensor Logits => outputs[LogitsName];

    /// <summary>An output by name; a missing one is an error that lists those there are.</summary>
    public Tensor this[string name] => outputs.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"The model has no output '{name}'; it has "
        + $"{string.Join(", ", outputs.Keys)}.");

    /// <summary>The names, logits first.</summary>
    public IEnumerable<string> Names => outputs.Keys.OrderBy(k => k == LogitsName ? 0 : 1)
        .ThenBy(k => k, StringComparer.Ordinal);

    /// <summary>Whether there is an output of this name.</summary>
    public bool Contains(string name) => outputs.ContainsKey(name);

    /// <summary>The same outputs with each tensor mapped (e.g. cast to float32).</summary>
    internal ModelOutputs Map(Func<Tensor, Tensor> map) => new(outputs.ToDictionary(kv => kv.Key, kv => map(kv.Value)));
}
