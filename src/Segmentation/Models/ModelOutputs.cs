using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>
/// What a model's forward pass returns: tensors by name, as torchvision's segmentation models return <c>out</c> and
/// <c>aux</c>, each declared by the head with its rank and meaning (<see cref="Schema"/>, <see cref="ModelOutput"/>).
/// No output is mandatory: whoever needs one finds it by meaning (<see cref="Logits"/>, <see cref="Of"/>), and a model
/// without it is refused with what it has.
/// </summary>
public sealed class ModelOutputs
{
    /// <summary>The name of the built-in heads' class logits.</summary>
    public const string LogitsName = "logits";

    private readonly Dictionary<string, Tensor> outputs;

    /// <summary>Outputs by name, and what each is (null: a single <c>logits</c> output is the class logits per
    /// pixel).</summary>
    public ModelOutputs(IReadOnlyDictionary<string, Tensor> outputs, IReadOnlyList<ModelOutput>? schema = null)
    {
        this.outputs = new Dictionary<string, Tensor>(outputs);
        Schema = schema ?? (outputs.ContainsKey(LogitsName) ? ModelOutput.PixelLogitsOnly
            : Array.Empty<ModelOutput>());
    }

    /// <summary>Just the class logits per pixel, named <c>logits</c>.</summary>
    public ModelOutputs(Tensor logits) : this(new Dictionary<string, Tensor> { [LogitsName] = logits }) { }

    /// <summary>What the outputs are, as the head declared them.</summary>
    public IReadOnlyList<ModelOutput> Schema { get; }

    /// <summary>The class logits per pixel (N x classes x H x W); a model without them is an error that lists what it
    /// gives.</summary>
    public Tensor Logits => Of(OutputKind.PixelClassLogits);

    /// <summary>The first output of <paramref name="kind"/>; an error that lists the outputs if there is
    /// none.</summary>
    public Tensor Of(OutputKind kind) => Find(kind) ?? throw new KeyNotFoundException(
        $"The model gives no output of kind {ModelOutput.KindName(kind)}; it gives {Describe(Schema)}.");

    /// <summary>The first output of <paramref name="kind"/>, or null.</summary>
    public Tensor? Find(OutputKind kind) => Schema.FirstOrDefault(o => o.Kind == kind) is { } o
        && outputs.TryGetValue(o.Name, out var t) ? t : null;

    /// <summary>The output named <paramref name="name"/>, if the model gives one.</summary>
    public bool TryGet(string name, out Tensor tensor)
    {
        tensor = outputs.TryGetValue(name, out var t) ? t : null!;
        return t is not null;
    }

    /// <summary>An output by name; a missing one is an error that lists those there are.</summary>
    public Tensor this[string name] => outputs.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"The model has no output '{name}'; it has "
        + $"{string.Join(", ", outputs.Keys)}.");

    /// <summary>The names: the schema's order, then any others by name.</summary>
    public IEnumerable<string> Names => Schema.Select(o => o.Name).Where(outputs.ContainsKey)
        .Concat(outputs.Keys.Where(k => Schema.All(o => o.Name != k)).Order(StringComparer.Ordinal));

    /// <summary>Whether there is an output of this name.</summary>
    public bool Contains(string name) => outputs.ContainsKey(name);

    /// <summary>The outputs of a schema in words: "logits (pixel-class-logits, rank 4), ...".</summary>
    public static string Describe(IReadOnlyList<ModelOutput> schema) => schema.Count == 0 ? "nothing declared"
        : string.Join(", ", schema.Select(o => $"{o.Name} ({ModelOutput.KindName(o.Kind)}, rank {o.Rank})"));

    /// <summary>These outputs with every floating-point tensor in float32 (themselves when they are already).</summary>
    internal ModelOutputs ToFloat32()
    {
        foreach (var t in outputs.Values)
            if (t.is_floating_point() && t.dtype != ScalarType.Float32)
                return Map(x => x.is_floating_point() ? x.to(ScalarType.Float32) : x);
        return this;
    }

    /// <summary>The same outputs with each tensor mapped (e.g. cast to float32).</summary>
    internal ModelOutputs Map(Func<Tensor, Tensor> map) =>
        new(outputs.ToDictionary(kv => kv.Key, kv => map(kv.Value)), Schema);

    /// <summary>The same outputs held to <paramref name="schema"/>: every declared output there with its rank, nothing
    /// undeclared; <paramref name="head"/> names the head for the error.</summary>
    internal ModelOutputs Checked(IReadOnlyList<ModelOutput> schema, string head)
    {
        foreach (var o in schema)
        {
            if (!outputs.TryGetValue(o.Name, out var t))
                throw new InvalidOperationException($"The head '{head}' declares an output '{o.Name}' it did not "
                    + $"give; it gave {string.Join(", ", outputs.Keys)}.");
            if (t.dim() != o.Rank)
                throw new InvalidOperationException($"The head '{head}' declares '{o.Name}' of rank {o.Rank} and gave "
                    + $"one of shape [{string.Join(", ", t.shape)}].");
        }
        var undeclared = outputs.Keys.Where(k => schema.All(o => o.Name != k)).ToList();
        if (undeclared.Count > 0)
            throw new InvalidOperationException($"The head '{head}' gave {string.Join(", ", undeclared)} without "
                + $"declaring it (declare each output in Head.Outputs).");
        return ReferenceEquals(schema, Schema) ? this : new ModelOutputs(outputs, schema);
    }
}
