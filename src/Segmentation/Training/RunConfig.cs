using System.Text.Json;
using System.Text.Json.Serialization;
using Segmentation.Data;
using Segmentation.Models;

namespace Segmentation.Training;

/// <summary>
/// What a training run was asked to do, as <c>run.json</c> holds it (the run folder's record, written by the one who
/// starts the run; <see cref="RunRecorder"/> names the file): the data, the model's description, the
/// trainer's
/// options, and the flags it was started with, so that a resume reopens the same data and a new run can repeat it.
/// </summary>
internal sealed record RunConfig
{
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, Converters = { new JsonStringEnumConverter() },
            NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>The data: builtin:shapes..., or a folder as an absolute path.</summary>
    public required string Data { get; init; }
    public string? Val { get; init; }
    /// <summary>The data folders relative to the run folder, for a project moved as a whole.</summary>
    public string? DataRelative { get; init; }
    public string? ValRelative { get; init; }
    public double? ValSplit { get; init; }
    /// <summary>The seed of the validation split (<c>--split-seed</c>); null: the training seed, as every run before
    /// the flag, so their resumes keep their split. Runs that differ only in their training seed keep one split when
    /// this is given.</summary>
    public int? SplitSeed { get; init; }
    public required DatasetOptions DataOptions { get; init; }
    public required ModelDescription Model { get; init; }
    /// <summary>Pretrained encoder weights the run started from (absolute path; read once, at the start).</summary>
    public string? EncoderWeights { get; init; }
    public string ClassWeights { get; init; } = "none";
    public required TrainerOptions Trainer { get; init; }
    /// <summary>--normalize as given (null: the default for the channels), resolved when the data's channels are
    /// known (<see cref="NormalizationFor"/>).</summary>
    public string? Normalize { get; init; }
    /// <summary>The run-defining flags it was started with (data paths absolute), so that --config can parse them
    /// again.</summary>
    public List<string>? Arguments { get; init; }
    /// <summary>What wrote the record: this library's, TorchSharp's and the runtime's versions.</summary>
    public Dictionary<string, string>? Versions { get; init; }

    /// <summary>The versions a record written now names.</summary>
    public static Dictionary<string, string> CurrentVersions() => new()
    {
        ["segmentation"] = typeof(SegmentationModel).Assembly.GetName().Version?.ToString() ?? "",
        ["torchsharp"] = typeof(TorchSharp.torch).Assembly.GetName().Version?.ToString() ?? "",
        ["dotnet"] = Environment.Version.ToString(),
    };

    /// <summary>As JSON (the form run.json has).</summary>
    public static System.Text.Json.Nodes.JsonObject ToJson(RunConfig config) => JsonSerializer.SerializeToNode(config,
        Json)!.AsObject();

    /// <summary>From <see cref="ToJson"/>'s form.</summary>
    public static RunConfig FromJson(System.Text.Json.Nodes.JsonObject json, string origin)
    {
        try { return Upgrade(json).Deserialize<RunConfig>(Json)
            ?? throw new SegmentationException($"{origin}: empty run configuration."); }
        catch (JsonException e) { throw new SegmentationException($"{origin}: the run configuration does not read "
            + $"({e.Message}).", e); }
    }

    /// <summary>A record written before the model description holds the U-Net's options as its model: the same model,
    /// described; one written before the trainer's options were grouped holds them flat: the same options,
    /// grouped.</summary>
    private static System.Text.Json.Nodes.JsonObject Upgrade(System.Text.Json.Nodes.JsonObject json)
    {
        bool legacyModel = LegacyUNetOptions.IsLegacy(json["Model"]);
        var trainer = json["Trainer"] as System.Text.Json.Nodes.JsonObject;
        var grouped = trainer is null ? null : TrainerOptionGroups.Upgrade(trainer); // a copy only when it was flat
        if (!legacyModel && ReferenceEquals(grouped, trainer)) return json;
        var copy = json.DeepClone().AsObject();
        if (legacyModel)
            copy["Model"] = JsonSerializer.SerializeToNode(LegacyUNetOptions.Read(json["Model"]!).ToDescription()
                .Resolve(), Json);
        if (!ReferenceEquals(grouped, trainer)) copy["Trainer"] = grouped;
        return copy;
    }

    /// <summary>Writes run.json atomically, with the data folders also relative to the run folder.</summary>
    public void Save(string path)
    {
        var runDir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string? Relative(string? spec) => spec is null || spec.StartsWith("builtin:",
            StringComparison.OrdinalIgnoreCase) ? null : Path.GetRelativePath(runDir, spec);
        AtomicFile.WriteAllText(path,
            JsonSerializer.Serialize(this with { DataRelative = Relative(Data), ValRelative = Relative(Val),
                Versions = Versions ?? CurrentVersions() }, Json));
    }

    /// <summary>A data spec as stored: folders absolute, so that eval and --resume work from any directory.</summary>
    public static string Absolute(string spec) => spec.StartsWith("builtin:", StringComparison.OrdinalIgnoreCase)
        ? spec : Path.GetFullPath(spec);

    /// <summary>Reads run.json; a data folder that moved with the run folder is found through its relative
    /// path.</summary>
    public static RunConfig Load(string path, string? runDir = null, Action<string>? note = null)
    {
        RunConfig config;
        try
        {
            var json =
                System.Text.Json.Nodes.JsonNode.Parse(RegularFile.ReadAllText(path, Limits.ConfigFileBytes,
                    "run record (run.json)")) as System.Text.Json.Nodes.JsonObject
                ?? throw new SegmentationException($"{path}: the run configuration is not a JSON object.");
            config = Upgrade(json).Deserialize<RunConfig>(Json)
                ?? throw new SegmentationException($"{path}: empty run configuration.");
        }
        catch (Exception e) when (e is IOException || e is JsonException || e is UnauthorizedAccessException
            || e is InvalidDataException)
        {
            throw new SegmentationException($"{path}: cannot read the run configuration ({e.Message}); it should be "
                + $"the run.json that 'segment train' writes into its run folder.", e);
        }
        if (runDir is null) return config;
        string? Moved(string? spec, string? relative)
        {
            if (spec is null || relative is null || spec.StartsWith("builtin:", StringComparison.OrdinalIgnoreCase)
                || Directory.Exists(spec)) return spec;
            var candidate = Path.GetFullPath(Path.Combine(runDir, relative));
            if (!Directory.Exists(candidate)) return spec; // reported as missing where it is opened
            note?.Invoke($"{spec} is gone; using {candidate}, where it sits relative to the run folder");
            return candidate;
        }
        return config with { Data = Moved(config.Data, config.DataRelative)!,
            Val = Moved(config.Val, config.ValRelative) };
    }

    /// <summary>True when <paramref name="spec"/> is a folder laid out as train/ and val/ (rather than images/ and
    /// masks/).</summary>
    public static bool IsSplitFolder(string spec) =>
        SegmentationDataset.HasSplitFolders(spec) && !Directory.Exists(Path.Combine(spec, "images"));

    /// <summary>Opens training and validation data: a validation folder, train/ + val/ folders, or a seeded
    /// split.</summary>
    /// <summary>
    /// The normalisation <see cref="Normalize"/> names for <paramref name="train"/>'s channels: percentile[:LOW,HIGH],
    /// zscore, dataset (the training images' mean and std, from a pass over them), imagenet (3 channels) or symmetric;
    /// null for the default.
    /// </summary>
    public Normalization? NormalizationFor(SegmentationDataset train)
    {
        int c = train.Description.InChannels;
        var text = Normalize?.Trim().ToLowerInvariant();
        if (text is null) return null;
        if (text.StartsWith("percentile", StringComparison.Ordinal))
        {
            if (text == "percentile") return Normalization.Percentiles(c);
            var inv = System.Globalization.CultureInfo.InvariantCulture;
            var parts = text["percentile".Length..].TrimStart(':').Split(',');
            if (parts.Length == 2 && double.TryParse(parts[0], System.Globalization.NumberStyles.Float, inv,
                out var low) && double.TryParse(parts[1], System.Globalization.NumberStyles.Float, inv, out var high)
                && low >= 0 && high <= 100 && low < high)
                return Normalization.Percentiles(c, low, high);
            throw new OptionsException($"--normalize '{Normalize}': percentile:LOW,HIGH needs 0 <= LOW < HIGH <= 100 "
                + "(e.g. percentile:1,99.8).");
        }
        return text switch
        {
            "zscore" => Normalization.ZScore(c),
            "imagenet" when c == 3 => Normalization.ImageNet,
            "imagenet" => throw new OptionsException($"--normalize imagenet is for 3-channel images; these have {c}."),
            "symmetric" => Normalization.Symmetric(c),
            "dataset" => DataFingerprint.Of(train) is var f ? new Normalization(f.ChannelMean, f.ChannelStd) : null,
            _ => throw new OptionsException($"--normalize '{Normalize}': expected percentile, percentile:LOW,HIGH, "
                + "zscore, dataset, imagenet or symmetric."),
        };
    }

    public (SegmentationDataset Train, SegmentationDataset? Val) OpenData()
    {
        if (Val is not null)
        {
            var train = SegmentationDataset.FromOrigin(Data, DataOptions);
            return (train, SegmentationDataset.FromFolder(Val, DataOptions with { Description = train.Description }));
        }
        if (!Data.StartsWith("builtin:", StringComparison.OrdinalIgnoreCase) && IsSplitFolder(Data))
        {
            var (t, v) = SegmentationDataset.FromSplitFolders(Data, DataOptions);
            return (t, v);
        }
        var all = SegmentationDataset.FromOrigin(Data, DataOptions);
        double fraction = ValSplit ?? 0.2;
        if (fraction == 0) return (all, null);
        if (!(fraction > 0 && fraction < 1))
            throw new OptionsException($"--val-split {fraction} must be between 0 and 1.");
        return all.Split(1 - fraction, SplitSeed ?? Trainer.Seed);
    }
}
