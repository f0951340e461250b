namespace Segmentation;

/// <summary>The image files of a folder, as every command and sample lists them: the formats the decoder reads
/// (ImageSharp 2.1: PNG, JPEG, BMP, GIF, TIFF, WebP, TGA, PBM), by extension, in name order.</summary>
internal static class ImageFiles
{
    /// <summary>The extensions read, lower case with the dot.</summary>
    public static readonly IReadOnlyList<string> Extensions = new[] { ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif",
        ".tiff", ".webp", ".tga", ".pbm" };

    /// <summary>The image files directly in <paramref name="folder"/>, in ordinal name order.</summary>
    public static List<string> In(string folder) => Directory.EnumerateFiles(folder)
        .Where(f => Extensions.Contains(Path.GetExtension(f).ToLowerInvariant())).Order(StringComparer.Ordinal)
        .ToList();
}
