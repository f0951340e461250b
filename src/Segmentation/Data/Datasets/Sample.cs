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

    /// <summary>Creates a sample; the mask must have one byte per image pixel.</summary>
    public Sample(ImageBuffer image, byte[] mask, string name)
    {
        if (mask.Length != image.Width * image.Height)
            throw new ArgumentException($"{name}: mask has {mask.Length} pixels, image {image.Width}x{image.Height}.");
        Image = image; Mask = mask; Name = name;
    }

    /// <summary>Width in pixels.</summary>
    public int Width => Image.Width;
    /// <summary>Height in pixels.</summary>
    public int Height => Image.Height;
}
