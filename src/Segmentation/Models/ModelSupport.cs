namespace Segmentation.Models;

/// <summary>What a model (and so each of its parts) supports, as <see cref="SegmentationModel.Supports"/> finds
/// it.</summary>
/// <param name="Precision">bf16 and fp16 arithmetic (<see cref="SegmentationModel.Precision"/>).</param>
/// <param name="Check">The float64 check of its kernels (<see cref="SegmentationModel.VerifyLayers"/>).</param>
/// <param name="Export">ONNX export, recorded from its forward pass.</param>
/// <param name="Why">What stands in the way, when something is not supported.</param>
public sealed record ModelSupport(bool Precision, bool Check, bool Export, string? Why);
