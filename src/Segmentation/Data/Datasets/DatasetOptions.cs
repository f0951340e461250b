namespace Segmentation.Data;

/// <summary>How a folder data set is read.</summary>
public sealed record DatasetOptions
{
    /// <summary>Mask encoding; <see cref="MaskEncoding.Auto"/> detects it from the masks.</summary>
    public MaskEncoding Encoding { get; init; } = MaskEncoding.Auto;
    /// <summary>Number of classes; null infers it (largest label + 1, or the palette's classes).</summary>
    public int? Classes { get; init; }
    /// <summary>Label ignored by losses and metrics.</summary>
    public int IgnoreIndex { get; init; } = Labels.Ignore;
    /// <summary>Palette file (CSV or JSON) with class names and colours; required for RGB masks.</summary>
    public string? PaletteFile { get; init; }
    /// <summary>Class names; null uses the palette's or defaults.</summary>
    public string[]? ClassNames { get; init; }
    /// <summary>Image channels for the model; null: 1 when the first image is gray, else 3.</summary>
    public int? InChannels { get; init; }
    /// <summary>Skip images without a mask (and masks without an image) instead of failing; each is listed in <see
    /// cref="SegmentationDataset.Warnings"/>.</summary>
    public bool SkipUnpaired { get; init; }
    /// <summary>
    /// For binary masks: gray values at or above this are class 1, the rest class 0 (for masks saved lossily, e.g. as
    /// JPEG). Null accepts only 0 and 255 (or 0 and 1).
    /// </summary>
    public int? BinaryThreshold { get; init; }
    /// <summary>Largest width x height of an image or mask, checked from the header before decoding.</summary>
    public long MaxPixels { get; init; } = ImageReader.DefaultMaxPixels;
    /// <summary>What is segmented; instance data is read as object numbers (<see
    /// cref="SegmentationDataset.FromInstanceFolder"/>).</summary>
    public SegmentationTaskKind Task { get; init; } = SegmentationTaskKind.Semantic;
    /// <summary>Panoptic data: the thing classes (counted objects); null finds them as the classes whose pixels carry
    /// object numbers.</summary>
    public int[]? ThingClasses { get; init; }
    /// <summary>Instance data: the boundary target and the decoding (null: the defaults).</summary>
    public InstanceSettings? Instances { get; init; }
    /// <summary>The task in force: the description's when one is given, else <see cref="Task"/>.</summary>
    internal SegmentationTaskKind TaskKind => Description?.Task ?? Task;
    /// <summary>Use this description (e.g. a checkpoint's) instead of detecting one; the other label options are then
    /// ignored.</summary>
    public DatasetDescription? Description { get; init; }
}

/// <summary>Class statistics of a data set's masks, for class weights.</summary>
/// <param name="ClassPixels">Pixels of each class.</param>
/// <param name="PixelsOfImagesWithClass">For each class, all valid pixels of the images in which it appears.</param>
/// <param name="IgnoredPixels">Pixels at the ignore index.</param>
public sealed record ClassStatistics(long[] ClassPixels, long[] PixelsOfImagesWithClass, long IgnoredPixels);
