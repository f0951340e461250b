using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Segmentation.Models.Parts;
using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>The three kinds of part a model is made of.</summary>
public enum PartKind
{
    /// <summary>Image to feature maps (<see cref="Parts.Encoder"/>).</summary>
    Encoder,
    /// <summary>Feature maps to one map (<see cref="Parts.Decoder"/>).</summary>
    Decoder,
    /// <summary>That map to named outputs (<see cref="Parts.Head"/>).</summary>
    Head,
}

/// <summary>Options records of parts may validate themselves; <see cref="ModelRegistry"/> calls this before
/// building.</summary>
public interface IPartOptions
{
    /// <summary>Throws <see cref="OptionsException"/> naming the first value out of range.</summary>
    void Validate();
}

/// <summary>Where pretrained weights for a part can come from (nothing is downloaded: these are files the user
/// has).</summary>
/// <param name="Name">What to pass (a file kind, or <c>builtin</c>).</param>
/// <param name="Description">What it is and where it comes from.</param>
public sealed record PretrainedSource(string Name, string Description);

/// <summary>What an encoder is built with.</summary>
/// <param name="InChannels">Image channels.</param>
public sealed record EncoderContext(int InChannels);

/// <summary>What a decoder is built with.</summary>
/// <param name="Encoder">The encoder it follows (its <see cref="Encoder.Stages"/>).</param>
/// <param name="Classes">Classes of the model.</param>
public sealed record DecoderContext(Encoder Encoder, int Classes);

/// <summary>What a head is built with.</summary>
/// <param name="InChannels">Channels of the decoder's (first) output.</param>
/// <param name="Classes">Classes of the model.</param>
public sealed record HeadContext(long InChannels, int Classes)
{
    /// <summary>The encoder's maps, the input first: a head may take any scale.</summary>
    public IReadOnlyList<FeatureMap> EncoderMaps { get; init; } = Array.Empty<FeatureMap>();
    /// <summary>The decoder's maps, its first output first.</summary>
    public IReadOnlyList<FeatureMap> DecoderMaps { get; init; } = Array.Empty<FeatureMap>();
}

/// <summary>A part in the registry: its name, kind, options (with their defaults), pretrained sources and
/// builder.</summary>
public sealed class RegisteredPart
{
    private readonly Func<object, object, nn.Module> build;
    private readonly Func<JsonObject?, object> readOptions;

    internal RegisteredPart(string name, PartKind kind, Type optionsType, string summary,
        IReadOnlyList<PretrainedSource> pretrained,
        Func<object, object, nn.Module> build, Func<JsonObject?, object> readOptions)
    {
        Name = name; Kind = kind; OptionsType = optionsType; Summary = summary; Pretrained = pretrained;
        this.build = build; this.readOptions = readOptions;
    }

    /// <summary>The registered name.</summary>
    public string Name { get; }
    /// <summary>Encoder, decoder or head.</summary>
    public PartKind Kind { get; }
    /// <summary>The options record.</summary>
    public Type OptionsType { get; }
    /// <summary>One line about the part.</summary>
    public string Summary { get; }
    /// <summary>Pretrained weights it can start from.</summary>
    public IReadOnlyList<PretrainedSource> Pretrained { get; }
    /// <summary>Encoders: the architecture of their default model (<see cref="ModelDescription.For"/>).</summary>
    public string DefaultArchitecture { get; init; } = "unet";
    /// <summary>Heads: the kinds of output they give, as declared when registered (known before a model is built:
    /// a task that reads per-query outputs sizes the model's classes from them).</summary>
    public IReadOnlyList<OutputKind> Gives { get; init; } = new[] { OutputKind.PixelClassLogits };
    /// <summary>Its options with their default values.</summary>
    public JsonObject Defaults => Resolve(null);

    /// <summary>The options read, validated and written out in full.</summary>
    internal JsonObject Resolve(JsonObject? options) =>
        JsonSerializer.SerializeToNode(readOptions(options), OptionsType, ModelRegistry.Json)!.AsObject();

    internal nn.Module Build(object context, JsonObject? options) => build(context, readOptions(options));
}

/// <summary>
/// The parts there are, by name (smp's <c>get_encoder(name)</c>, for every kind of part). The library's own parts are
/// registered on first use; an application or a test adds its own with one call, and descriptions, checkpoints, the
/// trainer, exporters and the CLI take it from there. Registration is process-wide (a name maps to one builder) and
/// thread-safe; registering a name twice is an error.
/// </summary>
public static class ModelRegistry
{
    internal static readonly JsonSerializerOptions Json = new()
    {
        Converters = { new JsonStringEnumConverter() },
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private static readonly object Gate = new();
    private static readonly Dictionary<(PartKind, string), RegisteredPart> Registered = new();
    private static readonly Dictionary<string, (string Summary, Func<string, ModelPart> Decoder, Func<string,
        ModelPart> Head)> Architectures = new();

    static ModelRegistry() => BuiltinParts.Register();

    /// <summary>Registers an encoder built from <typeparamref name="TOptions"/>, whose default model is a
    /// <c>unet</c>.</summary>
    public static void AddEncoder<TOptions>(string name, Func<EncoderContext, TOptions, Encoder> build, string summary,
        params PretrainedSource[] pretrained) where TOptions : class, new() =>
        AddEncoder(name, "unet", build, summary, pretrained);

    /// <summary>
    /// Registers an encoder built from <typeparamref name="TOptions"/> whose default model
    /// (<see cref="ModelDescription.For"/>) takes <paramref name="architecture"/>.
    /// </summary>
    public static void AddEncoder<TOptions>(string name, string architecture, Func<EncoderContext, TOptions,
        Encoder> build, string summary,
        params PretrainedSource[] pretrained) where TOptions : class, new() =>
        Add<TOptions>(name, PartKind.Encoder, summary, pretrained, (c, o) => build((EncoderContext)c, o), architecture);

    /// <summary>Registers a decoder built from <typeparamref name="TOptions"/>.</summary>
    public static void AddDecoder<TOptions>(string name, Func<DecoderContext, TOptions, Decoder> build, string summary)
        where TOptions : class, new() => Add<TOptions>(name, PartKind.Decoder, summary,
            Array.Empty<PretrainedSource>(), (c, o) => build((DecoderContext)c, o));

    /// <summary>Registers a head built from <typeparamref name="TOptions"/> that gives the per-pixel class logits
    /// (and whatever else its <see cref="Head.Outputs"/> declare beside them).</summary>
    public static void AddHead<TOptions>(string name, Func<HeadContext, TOptions, Head> build, string summary)
        where TOptions : class, new() => AddHead(name, build, summary, new[] { OutputKind.PixelClassLogits });

    /// <summary>Registers a head built from <typeparamref name="TOptions"/> that gives the kinds of output <paramref
    /// name="gives"/> (a mask classifier: the per-query class and mask logits).</summary>
    public static void AddHead<TOptions>(string name, Func<HeadContext, TOptions, Head> build, string summary,
        IReadOnlyList<OutputKind> gives)
        where TOptions : class, new() => Add<TOptions>(name, PartKind.Head, summary, Array.Empty<PretrainedSource>(),
            (c, o) => build((HeadContext)c, o), gives: gives);

    /// <summary>The kinds of output the model <paramref name="d"/> describes gives, from its head's registration
    /// (its architecture's head when the description names none); nothing is built.</summary>
    public static IReadOnlyList<OutputKind> OutputKinds(ModelDescription d) =>
        Find(PartKind.Head, d.Head?.Name ?? HeadOf(d.Architecture, d.Encoder.Name)).Gives;

    private static string HeadOf(string architecture, string encoder)
    {
        lock (Gate)
        {
            if (!Architectures.TryGetValue(architecture, out var a))
                throw new OptionsException($"No architecture is registered as '{architecture}'; there are: "
                    + $"{string.Join(", ", Architectures.Keys.OrderBy(k => k, StringComparer.Ordinal))}.");
            return a.Head(encoder).Name;
        }
    }

    /// <summary>Registers an architecture: the decoder and head it gives an encoder when a description leaves them
    /// out. Its training recipe, if it has one of its own, is registered with <c>TrainingRecipes.Add</c> (training is
    /// a later stage than models).</summary>
    public static void AddArchitecture(string name, string summary, Func<string, ModelPart> decoder, Func<string,
        ModelPart> head)
    {
        lock (Gate)
        {
            if (!Architectures.TryAdd(name, (summary, decoder, head)))
                throw new OptionsException($"An architecture named '{name}' is registered already.");
        }
    }

    /// <summary>The registered parts of one kind, by name.</summary>
    public static IReadOnlyList<RegisteredPart> Parts(PartKind kind)
    {
        lock (Gate) return Registered.Values.Where(p => p.Kind == kind).OrderBy(p => p.Name, StringComparer.Ordinal)
            .ToList();
    }

    /// <summary>The registered architectures and their summaries.</summary>
    public static IReadOnlyList<(string Name, string Summary)> ArchitectureNames()
    {
        lock (Gate) return Architectures.OrderBy(a => a.Key, StringComparer.Ordinal)
            .Select(a => (a.Key, a.Value.Summary)).ToList();
    }

    /// <summary>A registered part; an unknown name is an error that lists the known ones.</summary>
    public static RegisteredPart Find(PartKind kind, string name)
    {
        lock (Gate)
        {
            if (Registered.TryGetValue((kind, name), out var part)) return part;
            var known = Registered.Values.Where(p => p.Kind == kind).Select(p => p.Name)
                .OrderBy(n => n, StringComparer.Ordinal);
            throw new OptionsException($"No {kind.ToString().ToLowerInvariant()} is registered as '{name}'; there "
                + $"are: {string.Join(", ", known)}.");
        }
    }

    private static void Add<TOptions>(string name, PartKind kind, string summary, PretrainedSource[] pretrained,
        Func<object, TOptions, nn.Module> build, string architecture = "unet", IReadOnlyList<OutputKind>? gives = null)
        where TOptions : class, new()
    {
        if (string.IsNullOrWhiteSpace(name)) throw new OptionsException($"A {kind} needs a name.");
        object Read(JsonObject? json)
        {
            TOptions options;
            try { options = json is null ? new TOptions() : json.Deserialize<TOptions>(Json) ?? new TOptions(); }
            catch (JsonException e) { throw new OptionsException($"The {kind.ToString().ToLowerInvariant()} '{name}' "
                + $"options {json!.ToJsonString()} do not read: {e.Message}"); }
            (options as IPartOptions)?.Validate();
            return options;
        }
        var part = new RegisteredPart(name, kind, typeof(TOptions), summary, pretrained,
            (c, o) => build(c, (TOptions)o), Read) { DefaultArchitecture = architecture,
            Gives = gives ?? new[] { OutputKind.PixelClassLogits } };
        lock (Gate)
        {
            if (!Registered.TryAdd((kind, name), part))
                throw new OptionsException($"A {kind.ToString().ToLowerInvariant()} named '{name}' is registered "
                    + $"already.");
        }
    }

    /// <summary>The description with every part named and every option written out; unknown names and bad values are
    /// errors.</summary>
    internal static ModelDescription Resolve(ModelDescription d)
    {
        if (d.InChannels < 1)
            throw new OptionsException($"The model's InChannels is {d.InChannels}; it must be at least 1.");
        if (d.Classes < 1)
            throw new OptionsException($"The model's Classes is {d.Classes}; it must be at least 1 (2 for a binary "
                + $"task).");
        (string Summary, Func<string, ModelPart> Decoder, Func<string, ModelPart> Head) architecture;
        lock (Gate)
        {
            if (!Architectures.TryGetValue(d.Architecture, out architecture))
                throw new OptionsException($"No architecture is registered as '{d.Architecture}'; there are: "
                    + $"{string.Join(", ", Architectures.Keys.Order())}.");
        }
        ModelPart Full(PartKind kind, ModelPart part)
            => part with { Options = Find(kind, part.Name).Resolve(part.Options) };
        return d with
        {
            Encoder = Full(PartKind.Encoder, d.Encoder),
            Decoder = Full(PartKind.Decoder, d.Decoder ?? architecture.Decoder(d.Encoder.Name)),
            Head = Full(PartKind.Head, d.Head ?? architecture.Head(d.Encoder.Name)),
        };
    }
}
