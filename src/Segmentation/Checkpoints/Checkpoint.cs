using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Models;
using static TorchSharp.torch;

namespace Segmentation.Checkpoints;

/// <summary>
/// The hand-off file: everything a predictor needs (weights, model options, what the labels mean, the preprocessing)
/// and everything a resumed run needs (optimiser state, the trainer's options as it wrote them, progress, RNG state,
/// metrics). It knows no trainer: inference reads it without the training stage.
/// </summary>
/// <remarks>
/// Layout: the 8-byte magic <c>SEGCKPT1</c>, a little-endian int32 length and a UTF-8 JSON header, the weights and the
/// optimiser state in TorchSharp's binary format (int64 length each), and a SHA-256 of everything before it. Loading
/// parses data only, never code; a truncated or altered file fails the hash check with a clear error. Saves go to a
/// temporary file that is flushed to disk and then renamed over the target, so a crash or a full disk during a save
/// leaves the previous file intact.
/// </remarks>
public sealed class Checkpoint
{
    private static readonly byte[] Magic = "SEGCKPT1"u8.ToArray();
    private const int FormatVersion = 1;
    private const long MaxSection = 1L << 34;

    internal static readonly JsonSerializerOptions Json = new()
    {
        Converters = { new JsonStringEnumConverter() },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        WriteIndented = false,
    };

    /// <summary>What the model is (its parts and their options).</summary>
    public required ModelDescription Model { get; init; }
    /// <summary>What the labels mean.</summary>
    public required DatasetDescription Dataset { get; init; }
    /// <summary>What every input goes through before the model (normalisation, and the resize when it was trained at a
    /// fixed size).</summary>
    public required Preprocessing Preprocessing { get; init; }
    /// <summary>How it was trained: the trainer's options as it wrote them (it reads them back on resume; nothing else
    /// needs them).</summary>
    public required JsonObject TrainerSettings { get; init; }
    /// <summary>Progress so far.</summary>
    public required TrainingState State { get; init; }
    /// <summary>Where the training and validation data came from.</summary>
    public string? TrainOrigin { get; init; }
    /// <summary>Where the validation data came from.</summary>
    public string? ValOrigin { get; init; }
    /// <summary>Validation metrics of the epoch saved (null: not evaluated).</summary>
    public SegmentationMetrics? Metrics { get; init; }
    /// <summary>Weights in TorchSharp's format.</summary>
    public required byte[] Weights { get; init; }
    /// <summary>Optimiser state in TorchSharp's format (empty when not saved).</summary>
    public byte[] OptimizerState { get; init; } = Array.Empty<byte>();
    /// <summary>With a weight average (<c>TrainerOptions.Optimizer.WeightAverageDecay</c>): the weights training goes
    /// on from,
    /// while <see cref="Weights"/> holds the average, which predicts. Empty otherwise.</summary>
    public byte[] TrainingWeights { get; init; } = Array.Empty<byte>();
    /// <summary>CPU random generator state after the epoch saved.</summary>
    public byte[] RngState { get; init; } = Array.Empty<byte>();

    /// <summary>Builds the model and loads the weights (on the CPU; move it with <c>.to(device)</c>).</summary>
    public SegmentationModel CreateModel()
    {
        var model = new SegmentationModel(Model);
        try
        {
            // By name, so that 0.1's checkpoints (stem.*, encoder.{i}.*, decoder.{i}.*) load into today's layout.
            using var scope = NewDisposeScope();
            var weights = StateDicts.ReadTorchSharp(Weights).ToDictionary(kv => SegmentationModel.LegacyKey(kv.Key),
                kv => kv.Value);
            StateDicts.Load(model, weights, "The checkpoint's weights");
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            model.Dispose();
            throw new CheckpointException($"The checkpoint's weights do not fit the model it describes, "
                + $"{Model.Summary} ({e.Message}).", e);
        }
        return model;
    }

    /// <summary>Serialises a model's weights.</summary>
    public static byte[] SerializeWeights(SegmentationModel model)
    {
        var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true)) model.save(w);
        return ms.ToArray();
    }

    /// <summary>Writes the checkpoint atomically to <paramref name="path"/>.</summary>
    public void Save(string path) => Save(path, null);

    /// <summary>As <see cref="Save(string)"/>; <paramref name="wrap"/> lets tests interpose on the file
    /// stream.</summary>
    internal void Save(string path, Func<Stream, Stream>? wrap) => AtomicFile.Write(path, WriteTo, wrap);

    private void WriteTo(Stream stream)
    {
        var header = Encoding.UTF8.GetBytes(HeaderJson().ToJsonString(Json));
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Put(ReadOnlySpan<byte> bytes) { stream.Write(bytes); hash.AppendData(bytes); }
        Put(Magic);
        Put(BitConverter.GetBytes(header.Length));
        Put(header);
        Put(BitConverter.GetBytes((long)Weights.Length));
        Put(Weights);
        Put(BitConverter.GetBytes((long)OptimizerState.Length));
        Put(OptimizerState);
        if (TrainingWeights.Length > 0) // a section files without an average lack, and readers before it skip
        {
            Put(BitConverter.GetBytes((long)TrainingWeights.Length));
            Put(TrainingWeights);
        }
        stream.Write(hash.GetHashAndReset());
    }

    private JsonObject HeaderJson() => new()
    {
        ["format"] = "segmentation-checkpoint",
        ["version"] = FormatVersion,
        ["model"] = JsonSerializer.SerializeToNode(Model, Json),
        ["dataset"] = Dataset.ToJson(),
        ["normalization"] = JsonSerializer.SerializeToNode(Preprocessing.Normalization, Json),
        ["resize"] = Preprocessing.Size is { } size ? JsonSerializer.SerializeToNode(size, Json) : null,
        ["trainer"] = TrainerSettings.DeepClone(),
        ["state"] = new JsonObject
        {
            ["epoch"] = State.Epoch,
            ["optimizerStep"] = State.OptimizerStep,
            ["bestMeanIoU"] = double.IsNaN(State.BestMeanIoU) ? null : State.BestMeanIoU,
            ["bestEpoch"] = State.BestEpoch,
            ["evaluationsWithoutImprovement"] = State.EvaluationsWithoutImprovement,
            ["seconds"] = State.Seconds,
            ["history"] = new JsonArray(State.History.Select(r => (JsonNode?)r.ToJson()).ToArray()),
            ["lossScale"] = State.LossScale,
            ["lossScaleGoodSteps"] = State.LossScaleGoodSteps,
            ["scheduleEpochs"] = State.ScheduleEpochs,
            ["checkedInputs"] = new JsonArray(State.CheckedInputs.Select(c => (JsonNode?)new JsonObject
            {
                ["shape"] = new JsonArray(c.Shape.Select(d => (JsonNode?)d).ToArray()), ["training"] = c.Training,
            }).ToArray()),
        },
        ["trainOrigin"] = TrainOrigin,
        ["valOrigin"] = ValOrigin,
        ["metrics"] = Metrics?.ToJsonObject(),
        ["rng"] = Convert.ToBase64String(RngState),
    };

    /// <summary>Reads a checkpoint; any problem is a <see cref="CheckpointException"/> naming the file.</summary>
    public static Checkpoint Load(string path)
    {
        byte[] bytes;
        try { bytes = RegularFile.ReadAllBytes(path, Limits.CheckpointBytes, "checkpoint"); }
        catch (Exception e) when (e is IOException || e is UnauthorizedAccessException || e is InvalidDataException)
        {
            throw new CheckpointException($"{path}: cannot read the checkpoint ({e.Message}).", e);
        }
        try { return Parse(bytes, path); }
        catch (CheckpointException) { throw; }
        catch (Exception e) when (e is JsonException || e is InvalidOperationException || e is FormatException
            || e is ArgumentException || e is NullReferenceException || e is OptionsException
            || e is KeyNotFoundException)
        {
            throw new CheckpointException($"{path}: the checkpoint's header is malformed ({e.Message}).", e);
        }
    }

    /// <summary>Where a user with a damaged checkpoint can turn: the run's other checkpoint, if this is one of
    /// them.</summary>
    private static string OtherCheckpointHint(string path) => Path.GetFileName(path) switch
    {
        "last.ckpt" => "; best.ckpt beside it may still be whole (evaluate it, or start a new run from it)",
        "best.ckpt" => "; last.ckpt beside it may still be whole",
        _ => "; use another checkpoint",
    };

    private static TrainingState ReadState(JsonObject state) => new()
    {
        Epoch = state["epoch"]!.GetValue<int>(),
        OptimizerStep = state["optimizerStep"]!.GetValue<long>(),
        BestMeanIoU = state["bestMeanIoU"]?.GetValue<double>() ?? double.NaN,
        BestEpoch = state["bestEpoch"]!.GetValue<int>(),
        EvaluationsWithoutImprovement = state["evaluationsWithoutImprovement"]!.GetValue<int>(),
        Seconds = state["seconds"]!.GetValue<double>(),
        History = state["history"]!.AsArray().Select(n => EpochRecord.FromJson(n!.AsObject())).ToList(),
        LossScale = state["lossScale"]?.GetValue<double>(),
        LossScaleGoodSteps = state["lossScaleGoodSteps"]?.GetValue<int>() ?? 0,
        CheckedInputs = ReadCheckedInputs(state["checkedInputs"]),
        ScheduleEpochs = state["scheduleEpochs"]?.GetValue<int>() is int e && e >= 1 ? e : null,
    };

    /// <summary>The checked inputs a checkpoint lists; only sane shapes (each side at most 65,536, at most 2^28
    /// values), so a damaged file never makes a resumed run allocate a huge input.</summary>
    private static IReadOnlyList<CheckedInput> ReadCheckedInputs(JsonNode? node) =>
        node?.AsArray().Select(n => new CheckedInput(n!["shape"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray(),
                n["training"]!.GetValue<bool>()))
            .Where(c => c.Shape.Length == 4 && c.Shape.All(d => d is > 0 and <= Limits.CheckedInputSide)
                && c.Shape.Aggregate(1L, (a, d) => a * d) <= Limits.CheckedInputValues).ToList()
        ?? (IReadOnlyList<CheckedInput>)Array.Empty<CheckedInput>();

    private static Checkpoint Parse(byte[] b, string path)
    {
        bool magic = b.Length >= Magic.Length && b.AsSpan(0, Magic.Length).SequenceEqual(Magic);
        if (!magic)
            throw new CheckpointException($"{path}: not a Segmentation checkpoint (it does not start with SEGCKPT1).");
        string other = OtherCheckpointHint(path);
        if (b.Length < Magic.Length + 4 + 32)
            throw new CheckpointException($"{path}: the checkpoint is truncated ({b.Length} bytes, less than any "
                + $"whole checkpoint){other}.");
        int bodyLength = b.Length - 32;
        if (!SHA256.HashData(b.AsSpan(0, bodyLength)).AsSpan().SequenceEqual(b.AsSpan(bodyLength)))
            throw new CheckpointException($"{path}: the checkpoint is truncated or corrupt (its checksum does not "
                + $"match){other}.");
        int pos = Magic.Length;
        int headerLength = BitConverter.ToInt32(b, pos); pos += 4;
        if (headerLength < 2 || pos + (long)headerLength > bodyLength)
            throw new CheckpointException($"{path}: header length {headerLength} does not fit the file.");
        var header = JsonNode.Parse(b.AsSpan(pos, headerLength))!.AsObject(); pos += headerLength;
        if (header["format"]?.GetValue<string>() != "segmentation-checkpoint")
            throw new CheckpointException($"{path}: not a Segmentation checkpoint.");
        int version = header["version"]!.GetValue<int>();
        if (version != FormatVersion)
            throw new CheckpointException($"{path}: checkpoint format version {version}; this library reads version "
                + $"{FormatVersion}.");
        byte[] Section()
        {
            if (pos + 8 > bodyLength) throw new CheckpointException($"{path}: the checkpoint ends early.");
            long n = BitConverter.ToInt64(b, pos); pos += 8;
            if (n < 0 || n > MaxSection || pos + n > bodyLength)
                throw new CheckpointException($"{path}: section length {n} does not fit the file.");
            var s = b.AsSpan(pos, (int)n).ToArray(); pos += (int)n;
            return s;
        }
        var weights = Section();
        var optimizer = Section();
        var trainingWeights = pos < bodyLength ? Section() : Array.Empty<byte>();
        var state = header["state"]!.AsObject();
        // Files written before the model description hold the U-Net's options; they describe the same model.
        var model = LegacyUNetOptions.IsLegacy(header["model"])
            ? LegacyUNetOptions.Read(header["model"]!).ToDescription()
            : header["model"].Deserialize<ModelDescription>(Json)!;
        model = model.Resolve();
        return new Checkpoint
        {
            Model = model,
            Dataset = DatasetDescription.FromJson(header["dataset"]!.AsObject()),
            // Files from before "resize" had it only in the trainer's options.
            Preprocessing = new Preprocessing(header["normalization"].Deserialize<Normalization>(Json)!,
                (header["resize"] ?? header["trainer"]?["Size"]).Deserialize<Size2?>(Json)),
            TrainerSettings = header["trainer"]!.AsObject().DeepClone().AsObject(),
            State = ReadState(state),
            TrainOrigin = header["trainOrigin"]?.GetValue<string>(),
            ValOrigin = header["valOrigin"]?.GetValue<string>(),
            Metrics = header["metrics"] is JsonObject m ? SegmentationMetrics.FromJsonObject(m) : null,
            Weights = weights,
            OptimizerState = optimizer, TrainingWeights = trainingWeights,
            RngState = Convert.FromBase64String(header["rng"]?.GetValue<string>() ?? ""),
        };
    }
}
