using Segmentation.Data;

namespace Segmentation.Checkpoints;

/// <summary>
/// What an image goes through between the decoder and the model, stored with the model so that prediction does what
/// training did: the normalisation, and the resize when training ran at a fixed <c>--size</c> (predictions are resized
/// back to the image's own size).
/// </summary>
/// <param name="Normalization">Per-channel mean and std.</param>
/// <param name="Size">The size the model saw every image at; null: images at their own size.</param>
public sealed record Preprocessing(Normalization Normalization, Size2? Size = null);
