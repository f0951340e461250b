namespace Segmentation.Data;

/// <summary>One decoded image with its label mask (one byte per pixel: a class or the ignore index).</summary>
public sealed class Sample
{
    /// <summary>The image.</summary>
    public ImageBuffer Image { get; }
    /// <summary>Labels, row by row, Image.Width x Image.Height.</summary>
    public byte[] Mask { get; }
    /// <summary>Where it came from (file stem or synthetic name).</summary>
    public string Name { get; }
    /// <summary>For instance data: an object number per pixel (0: none), row by row; transforms move it with the
    /// mask. Null for semantic data.</summary>
    public ushort[]? Instances { get; }

    /// <summary>Creates a sample; the mask (and the instance numbers, if any) must have one value per image
    /// pixel.</summary>
    public Sample(ImageBuffer image, byte[] mask, string name, ushort[]? instances = null)
        : this(image, mask, name, instances, null) { }

    private Sample(ImageBuffer image, byte[] mask, string name, ushort[]? instances, long[]? histogram)
    {
        this.histogram = histogram;
        if (mask.Length != image.Width * image.Height)
            throw new ArgumentException($"{name}: mask has {mask.Length} pixels, image {image.Width}x{image.Height}.");
        if (instances is not null && instances.Length != mask.Length)
            throw new ArgumentException($"{name}: {instances.Length} instance numbers for {mask.Length} pixels.");
        Image = image; Mask = mask; Name = name; Instances = instances;
    }

    /// <summary>The same labels over another image of the same size (photometric transforms).</summary>
    public Sample WithImage(ImageBuffer image) => new(image, Mask, Name, Instances, Histogram);

    /// <summary>A transformed copy (crop, scale, flip...): new pixels and labels that keep the intensity histogram of
    /// the image as it was decoded, so per-image normalisation sees the whole image, never a crop.</summary>
    public Sample Transformed(ImageBuffer image, byte[] mask, ushort[]? instances) =>
        new(image, mask, Name, instances, Histogram);

    private long[]? histogram;

    /// <summary>How many samples of each value the whole decoded image holds, over all its channels (256 entries for an
    /// 8-bit image, up to 65536 for a 16-bit one): what the
    /// per-image normalisations (<see cref="Normalization.Scheme"/>) are computed from. Taken on first use, and kept
    /// by <see cref="Transformed"/> and <see cref="WithImage"/>.</summary>
    public long[] Histogram => histogram ??= Image.Pixels16 is { } wide ? Shared.IntensityLevels.Histogram(wide)
        : Shared.IntensityLevels.Histogram(Image.Pixels);

    /// <summary>Width in pixels.</summary>
    public int Width => Image.Width;
    /// <summary>Height in pixels.</summary>
    public int Height => Image.Height;
}
