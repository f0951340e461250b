namespace Segmentation.Shared;

/// <summary>
/// The metadata an exported ONNX model carries besides its graph, by key: written by the exporter (TorchSharp side),
/// read by the ONNX Runtime predictor (no TorchSharp). One list, compiled into both.
/// </summary>
internal static class OnnxMetadataKeys
{
    /// <summary>Number of classes (the logits' channels).</summary>
    public const string Classes = "classes";
    /// <summary>Class names, a JSON array of strings.</summary>
    public const string ClassNames = "class_names";
    /// <summary>Class colours, a JSON array of #rrggbb strings.</summary>
    public const string ClassColors = "class_colors";
    /// <summary>Image channels the model takes.</summary>
    public const string InChannels = "in_channels";
    /// <summary>Per-channel mean of pixel / full scale (255 or 65535), a JSON array.</summary>
    public const string NormalizationMean = "normalization_mean";
    /// <summary>Per-channel standard deviation, a JSON array.</summary>
    public const string NormalizationStd = "normalization_std";
    /// <summary>The per-image step before the mean and std: <c>fixed</c> (none; also when absent), <c>zscore</c>, or
    /// <c>percentile LOW HIGH</c> (<see cref="IntensityLevels"/>).</summary>
    public const string NormalizationScheme = "normalization_scheme";
    /// <summary>Bits a sample of the training images, 8 or 16 (absent: 8). A record: the model takes either depth,
    /// each sample as a share of its full scale.</summary>
    public const string ImageBits = "image_bits";
    /// <summary>The size the model was trained at, HxW, or empty.</summary>
    public const string Resize = "resize";
    /// <summary>The ignore label of the training masks.</summary>
    public const string IgnoreIndex = "ignore_index";
    /// <summary>The smallest height and width the model takes.</summary>
    public const string MinimumInputSize = "minimum_input_size";
    /// <summary>"instance" for models whose logits are decoded into objects (absent: semantic).</summary>
    public const string Task = "task";
    /// <summary>Instance models: the decoding settings, a JSON object with <c>things</c> (a flag per class before the
    /// boundary), <c>minSize</c> and <c>minSeedSize</c> (and the training's <c>boundaryWidth</c>,
    /// <c>boundaryWeight</c>).</summary>
    public const string InstanceDecoding = "instance_decoding";
    /// <summary>Mask classifiers (Mask2Former) of instance and panoptic data: their decoding's settings, a JSON object
    /// with <c>threshold</c> (the least instance score and panoptic class probability), <c>maskThreshold</c>,
    /// <c>overlap</c> (transformers' post-processing), <c>fuse</c> (the classes that are one panoptic segment each)
    /// and <c>things</c>. Present: the objects come from the query outputs, not the per-pixel planes.</summary>
    public const string MaskDecoding = "mask_decoding";
    /// <summary>The graph's outputs as the model's head declared them, a JSON array of objects with <c>name</c>,
    /// <c>rank</c>, <c>kind</c> (<c>pixel-class-logits</c>, <c>query-class-logits</c>, <c>query-mask-logits</c>,
    /// <c>pixel-regression</c>, <c>auxiliary</c>) and <c>description</c>. Absent (models exported before it): one
    /// output, the class logits per pixel.</summary>
    public const string Outputs = "outputs";
    /// <summary>The kind of output a predictor decodes: the class logits per pixel.</summary>
    public const string PixelClassLogits = "pixel-class-logits";
    /// <summary>The kinds of output a mask classifier's objects are decoded from: class and mask logits per
    /// query.</summary>
    public const string QueryClassLogits = "query-class-logits", QueryMaskLogits = "query-mask-logits";
}
