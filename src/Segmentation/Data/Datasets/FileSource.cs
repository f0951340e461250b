namespace Segmentation.Data;

/// <summary>Samples decoded on demand from image and mask files (thread-safe: the reader is).</summary>
internal sealed class FileSource : IFileSource
{
    private readonly List<(string Image, string Mask, string Stem)> pairs;
    private readonly DatasetDescription description;
    private readonly ImageReader reader;

    public FileSource(List<(string Image, string Mask, string Stem)> pairs, DatasetDescription description,
        ImageReader reader)
    {
        this.pairs = pairs; this.description = description; this.reader = reader;
    }

    public int Count => pairs.Count;
    public string NameOf(int index) => pairs[index].Stem;
    public IEnumerable<string> PathsOf(int index) { yield return pairs[index].Image; yield return pairs[index].Mask; }
    public (int, int) ImageSize(int index) => reader.Identify(pairs[index].Image);

    public Sample Load(int index)
    {
        var (imagePath, maskPath, stem) = pairs[index];
        var image = reader.ReadImage(imagePath, description.InChannels);
        var raw = reader.ReadMask(maskPath, paletteIndices: description.Encoding != MaskEncoding.Palette);
        if (raw.Width != image.Width || raw.Height != image.Height)
            throw new DataException($"{maskPath}: mask is {raw.Width}x{raw.Height} but its image {imagePath} is "
                + $"{image.Width}x{image.Height}; they must match.", maskPath);
        return new Sample(image, MaskDecoder.Decode(raw, description, maskPath), stem);
    }
}
