namespace Segmentation.Models.Parts;

/// <summary>One feature map an encoder hands the decoder: its channels and its stride (input size / its
/// size).</summary>
/// <param name="Channels">Channels of the feature map.</param>
/// <param name="Stride">How many input pixels one of its pixels spans per side: 1, 2, 4, ...</param>
public sealed record EncoderStage(int Channels, int Stride)
{
    /// <summary>Its name among the encoder's maps (<see cref="Encoder.Maps"/>); null: <c>stage1</c>, <c>stage2</c>,
    /// ... by position.</summary>
    public string? Name { get; init; }
}
