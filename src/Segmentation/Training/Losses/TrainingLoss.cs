using System.Text.Json;
using System.Text.Json.Serialization;

namespace Segmentation.Training;

/// <summary>
/// The loss a trainer uses: one of the library's by kind (<see cref="LossKind"/>, built from the trainer's options by
/// <see cref="LossRegistry"/>), or a loss object (any <see cref="ISegmentationLoss"/>). Both convert implicitly, so
/// <c>Loss = LossKind.Dice</c> and <c>Loss = new FocalLoss(3)</c> both read as they should; an object of a type that
/// only implements the interface goes through <see cref="From"/>. Checkpoints and run.json record the kind, or
/// <c>custom:TypeName</c> for an object, which a resumed run needs given again (an object is code, not data).
/// </summary>
[JsonConverter(typeof(TrainingLossConverter))]
public sealed class TrainingLoss : IEquatable<TrainingLoss>
{
    private const string CustomPrefix = "custom:";

    private TrainingLoss(LossKind? kind, ISegmentationLoss? loss, string? recordedCustom)
    {
        Kind = kind; Object = loss; RecordedCustom = recordedCustom;
    }

    /// <summary>The library's loss by kind (null for a loss object).</summary>
    public LossKind? Kind { get; }

    /// <summary>The loss object (null for a kind, and for a record of one read back from a file).</summary>
    public ISegmentationLoss? Object { get; }

    /// <summary>The type name a record read from a file names, when it was a loss object.</summary>
    internal string? RecordedCustom { get; }

    /// <summary>A loss object as the trainer's loss.</summary>
    public static TrainingLoss From(ISegmentationLoss loss)
        => new(null, loss ?? throw new ArgumentNullException(nameof(loss)), null);

    /// <summary>The library's loss of this kind.</summary>
    public static implicit operator TrainingLoss(LossKind kind) => new(kind, null, null);

    /// <summary>A loss object of the logits and mask.</summary>
    public static implicit operator TrainingLoss(PixelLoss loss) => From(loss);

    /// <summary>What records hold: the kind's name, or <c>custom:</c> and the object's type.</summary>
    public override string ToString() => Kind?.ToString() ?? CustomPrefix
        + (Object?.GetType().FullName ?? RecordedCustom);

    /// <summary>Reads what <see cref="ToString"/> wrote.</summary>
    internal static TrainingLoss Parse(string text) => text.StartsWith(CustomPrefix, StringComparison.Ordinal)
        ? new TrainingLoss(null, null, text[CustomPrefix.Length..])
        : Enum.TryParse<LossKind>(text, ignoreCase: false, out var kind) && Enum.IsDefined(kind)
            ? kind
            : throw new JsonException($"Loss '{text}' is not one of: {string.Join(", ", Enum.GetNames<LossKind>())}, "
            + $"or custom:TYPE.");

    /// <inheritdoc />
    public bool Equals(TrainingLoss? other) => other is not null && Kind == other.Kind
        && ReferenceEquals(Object, other.Object)
        && RecordedCustom == other.RecordedCustom;

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is TrainingLoss other && Equals(other);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Kind, Object, RecordedCustom);

    private sealed class TrainingLossConverter : JsonConverter<TrainingLoss>
    {
        public override TrainingLoss Read(ref Utf8JsonReader reader, Type typeToConvert,
            JsonSerializerOptions options) =>
            reader.TokenType == JsonTokenType.String ? Parse(reader.GetString()!)
                : throw new JsonException("A loss is written as a string.");

        public override void Write(Utf8JsonWriter writer, TrainingLoss value, JsonSerializerOptions options)
            => writer.WriteStringValue(value.ToString());
    }
}
