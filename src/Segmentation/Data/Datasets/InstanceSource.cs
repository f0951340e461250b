namespace Segmentation.Data;

/// <summary>
/// Instance data decoded on demand (thread-safe: the reader is): each image with its object numbers, from an ID mask
/// file (<c>DIR/images/A.png</c> + <c>DIR/masks/A.png</c>, 16-bit) or from the Data Science Bowl layout
/// (<c>DIR/A/images/A.png</c> + <c>DIR/A/masks/*.png</c>, one binary mask per object). The class mask is 1 on objects
/// and 0 elsewhere; the boundary target is made per batch from the numbers (<see cref="InstanceTargets"/>).
/// </summary>
internal sealed class InstanceSource : IFileSource
{
    private readonly List<(string Image, string Mask, string Stem)> entries;
    private readonly DatasetDescription description;
    private readonly ImageReader reader;

    public InstanceSource(List<(string Image, string Mask, string Stem)> entries, DatasetDescription description,
        ImageReader reader)
    {
        this.entries = entries; this.description = description; this.reader = reader;
    }

    public int Count => entries.Count;
    public string NameOf(int index) => entries[index].Stem;
    public IEnumerable<string> PathsOf(int index)
    {
        yield return entries[index].Image;
        var mask = entries[index].Mask;
        if (!Directory.Exists(mask)) { yield return mask; yield break; }
        foreach (var file in Directory.EnumerateFiles(mask).Order(StringComparer.Ordinal)) yield return file;
    }
    public (int, int) ImageSize(int index) => reader.Identify(entries[index].Image);

    /// <summary>Whether the masks are folders of per-object files (the Data Science Bowl layout).</summary>
    public bool PerObjectFiles => entries.Count > 0 && Directory.Exists(entries[0].Mask);

    public Sample Load(int index)
    {
        var (imagePath, maskPath, stem) = entries[index];
        var image = reader.ReadImage(imagePath, description.InChannels);
        ushort[] ids;
        if (Directory.Exists(maskPath)) ids = InstanceMasks.FromObjectFiles(maskPath, image.Width, image.Height,
            reader);
        else
        {
            var raw = reader.ReadMask(maskPath);
            if (raw.Width != image.Width || raw.Height != image.Height)
                throw new DataException($"{maskPath}: mask is {raw.Width}x{raw.Height} but its image {imagePath} is "
                    + $"{image.Width}x{image.Height}; they must match.", maskPath);
            ids = InstanceMasks.FromIds(raw, maskPath);
        }
        var mask = new byte[ids.Length];
        for (int i = 0; i < ids.Length; i++) mask[i] = ids[i] == 0 ? (byte)0 : (byte)1;
        return new Sample(image, mask, stem, ids);
    }

    /// <summary>
    /// The entries of <paramref name="dir"/>: <c>images/</c> + <c>masks/</c> paired by name as semantic data is, or
    /// one folder per image in the Data Science Bowl layout.
    /// </summary>
    public static List<(string Image, string Mask, string Stem)> Entries(string dir, DatasetOptions o,
        List<string> warnings)
    {
        if (!Directory.Exists(dir)) throw new DataException($"{dir}: data folder not found.", dir);
        if (Directory.Exists(Path.Combine(dir, "images")) && Directory.Exists(Path.Combine(dir, "masks")))
            return FilePairs.Read(dir, o, warnings);
        var entries = new List<(string, string, string)>();
        foreach (var sub in Directory.EnumerateDirectories(dir).Order(StringComparer.Ordinal))
        {
            string id = Path.GetFileName(sub), images = Path.Combine(sub, "images"), masks = Path.Combine(sub, "masks");
            if (!Directory.Exists(images) || !Directory.Exists(masks)) continue;
            var image = ImageFiles.In(images);
            if (image.Count != 1)
                throw new DataException($"{images}: {image.Count} image files; the Data Science Bowl layout has one "
                    + $"image per folder ({id}/images/{id}.png).", images);
            entries.Add((image[0], masks, id));
        }
        if (entries.Count == 0)
            throw new DataException($"{dir}: no instance data found: expected images/ and masks/ (a 16-bit mask of "
                + "object numbers per image) or the Data Science Bowl layout (ID/images/ID.png, ID/masks/*.png, one "
                + "binary mask per object).", dir);
        return entries;
    }
}
