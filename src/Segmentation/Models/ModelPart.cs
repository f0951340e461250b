using System.Text.Json;
using System.Text.Json.Nodes;

namespace Segmentation.Models;

/// <summary>
/// One named part of a model (an encoder, a decoder or a head) and its options, as a <see cref="ModelDescription"/>
/// holds it: <c>{"Name": "resnet34", "Options": {...}}</c>. The name is a registered one (<see cref="ModelRegistry"/>);
/// the options are that part's options record as JSON (missing ones take their defaults; unknown ones are an error).
/// </summary>
public sealed record ModelPart
{
    /// <summary>A part by name, with default options.</summary>
    public ModelPart(string name, JsonObject? options = null)
    {
        Name = name;
        Options = options;
    }

    /// <summary>The registered name.</summary>
    public string Name { get; init; }

    /// <summary>The options as JSON (null: all defaults).</summary>
    public JsonObject? Options { get; init; }

    /// <summary>A part with typed options.</summary>
    public static ModelPart Of<TOptions>(string name, TOptions options) where TOptions : class =>
        new(name, JsonSerializer.SerializeToNode(options, ModelRegistry.Json)!.AsObject());

    /// <summary>The options read as <typeparamref name="TOptions"/> (defaults for what is missing).</summary>
    public TOptions OptionsAs<TOptions>() where TOptions : class, new() =>
        Options is null ? new TOptions() : Options.Deserialize<TOptions>(ModelRegistry.Json) ?? new TOptions();

    /// <inheritdoc />
    public bool Equals(ModelPart? other) => other is not null && Name == other.Name
        && (Options?.ToJsonString() ?? "{}") == (other.Options?.ToJsonString() ?? "{}");

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Name, Options?.ToJsonString() ?? "{}");

    /// <inheritdoc />
    public override string ToString() => Options is null || Options.Count == 0 ? Name
        : $"{Name} {Options.ToJsonString()}";
}
