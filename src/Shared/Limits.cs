namespace Segmentation;

/// <summary>
/// Every limit a reader checks before it allocates, in one place (the README's "Limits" lists them with how to raise
/// each). Shared (src/Shared) by the library and the ONNX Runtime package.
/// </summary>
internal static class Limits
{
    /// <summary>Largest image or mask, in pixels, from the header before decoding (DatasetOptions.MaxPixels and
    /// <c>--max-pixels</c> raise it for data; the ONNX predictor and a model's declared training size use it
    /// too).</summary>
    public const long ImagePixels = 100_000_000;
    /// <summary>Largest image file read: a 100-megapixel RGB image uncompressed is 300 MB.</summary>
    public const long ImageFileBytes = 1L << 30;
    /// <summary>A <c>.pth</c>'s pickle (<c>data.pkl</c>), decompressed: a state dict's is a few hundred KiB.</summary>
    public const long PickleBytes = 64L << 20;
    /// <summary>All entries of a <c>.pth</c>, decompressed (SegFormer-B5 is 0.34 GB).</summary>
    public const long PthBytes = 64L << 30;
    /// <summary>A safetensors JSON header (the format's reference reader refuses larger).</summary>
    public const long SafetensorsHeaderBytes = 100L << 20;
    /// <summary>One ONNX metadata value, in characters (names and colours of 256 classes are a few KiB).</summary>
    public const int OnnxMetadataChars = 1 << 20;
    /// <summary>A side of an input shape a checkpoint records as checked, and the values such an input holds.</summary>
    public const long CheckedInputSide = 1 << 16, CheckedInputValues = 1L << 28;
    /// <summary>A JSON settings file the library reads (plan.json, run.json, config.json, a palette, the kernel-check
    /// cache, metrics.jsonl): a plan with its fingerprint is a few KiB.</summary>
    public const long ConfigFileBytes = 16L << 20;
    /// <summary>A checkpoint: weights and optimiser state (SegFormer-B5's are about 1 GB).</summary>
    public const long CheckpointBytes = 64L << 30;
}
