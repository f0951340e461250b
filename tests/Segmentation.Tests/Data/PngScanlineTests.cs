using Segmentation.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Tests.Data;

/// <summary>
/// The PNG rows decoded without ImageSharp (the loader's hot path) against ImageSharp's decoding of the same files:
/// every row filter, widths around the vector width, several IDAT chunks, corrupt files refused, and real data sets
/// where present.
/// </summary>
public class PngScanlineTests
{
    private static readonly PngFilterMethod[] Filters =
    [
        PngFilterMethod.None, PngFilterMethod.Sub, PngFilterMethod.Up, PngFilterMethod.Average, PngFilterMethod.Paeth,
        PngFilterMethod.Adaptive,
    ];

    [Fact]
    public void BranchFreePaethIsThePredictorForEveryTriple()
    {
        static int Reference(int a, int b, int c)
        {
            int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
            return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
        }
        long wrong = 0;
        for (int a = 0; a < 256; a++)
            for (int b = 0; b < 256; b++)
                for (int c = 0; c < 256; c++)
                    if (PngScanlines.Paeth(a, b, c) != Reference(a, b, c)) wrong++;
        Assert.Equal(0, wrong);
    }

    [Theory]
    [InlineData(PngColorType.Rgb)]
    [InlineData(PngColorType.Grayscale)]
    public void EveryFilterAndWidthDecodesToImageSharpsPixels(PngColorType colour)
    {
        using var d = new TempDir();
        var reader = new ImageReader();
        int checkedFiles = 0;
        foreach (var filter in Filters)
            foreach (var (w, h) in new[] { (1, 1), (7, 5), (33, 4), (70, 9), (129, 3) })
            {
                var path = d[$"{colour}-{filter}-{w}x{h}.png"];
                SaveNoisy(path, w, h, colour, filter, seed: w * 31 + h);
                var bytes = File.ReadAllBytes(path);
                var layout = PngScanlines.Layout(bytes, out _)!;
                Assert.Equal((8, colour == PngColorType.Rgb ? 2 : 0), (layout.BitDepth, layout.ColourType));
                foreach (int channels in new[] { 1, 3, 4 })
                {
                    if (colour == PngColorType.Rgb && channels == 1) continue; // luminance: ImageSharp's own path
                    var ours = reader.ReadImage(path, channels);
                    Assert.Equal((w, h, channels), (ours.Width, ours.Height, ours.Channels));
                    Assert.True(ImageSharpPixels(path, channels).AsSpan().SequenceEqual(ours.Pixels),
                        $"{Path.GetFileName(path)} at {channels} channels differs from ImageSharp's decoding");
                }
                checkedFiles++;
            }
        Assert.Equal(30, checkedFiles);
    }

    [Fact]
    public void RowsSplitOverManyImageDataChunksDecodeTheSame()
    {
        using var d = new TempDir();
        var path = d["one.png"];
        SaveNoisy(path, 61, 23, PngColorType.Rgb, PngFilterMethod.Adaptive, seed: 5);
        var expected = ImageSharpPixels(path, 3);
        foreach (int piece in new[] { 1, 7, 1000 })
        {
            var split = d[$"split-{piece}.png"];
            File.WriteAllBytes(split, SplitImageData(File.ReadAllBytes(path), piece));
            var layout = PngScanlines.Layout(File.ReadAllBytes(split), out _)!;
            Assert.True(layout.Idat.Count > 1);
            Assert.Equal(expected, new ImageReader().ReadImage(split, 3).Pixels);
        }
    }

    [Fact]
    public void CorruptImageDataIsRefusedNamingTheFile()
    {
        using var d = new TempDir();
        var path = d["good.png"];
        SaveNoisy(path, 40, 30, PngColorType.Rgb, PngFilterMethod.Paeth, seed: 2);
        var good = File.ReadAllBytes(path);
        var (offset, length) = PngScanlines.Layout(good, out _)!.Idat[0];
        var cases = new Dictionary<string, byte[]>
        {
            // a byte of the compressed rows changed, the chunk's CRC made right again: only zlib's checksum (or the
            // inflater) can tell
            ["flipped"] = WithIdat(good, data => data[data.Length / 2] ^= 0x20),
            // the stream cut: a chunk whose length runs past the end of the file
            ["cut"] = good[..(offset + length / 2)],
            // the rows' data a byte short of the image
            ["short"] = WithRows(good, rows => rows[..^1]),
            // a filter byte outside 0-4
            ["filter"] = WithRows(good, rows => { rows[0] = 7; return rows; }),
        };
        // the pixels intact, zlib's own checksum of them (the stream's last four bytes) wrong
        cases["adler"] = WithIdat(good, data => data[^1] ^= 0x01);
        foreach (var (name, bytes) in cases)
        {
            var file = d[name + ".png"];
            File.WriteAllBytes(file, bytes);
            var e = Assert.Throws<DataException>(() => new ImageReader().ReadImage(file, 3));
            Assert.Contains(file, e.Message);
            if (name == "adler") Assert.Contains("checksum (Adler-32)", e.Message);
        }
    }

    [Fact]
    public void Masks_of_one_two_and_four_bits_are_read_at_their_own_levels()
    {
        using var d = new TempDir();
        foreach (var (depth, levels) in new[] { (PngBitDepth.Bit1, 2), (PngBitDepth.Bit2, 4), (PngBitDepth.Bit4, 16) })
        {
            var path = d[$"{levels}.png"];
            using (var image = new Image<L8>(8, 2))
            {
                for (int x = 0; x < 8; x++) image[x, 0] = image[x, 1] = new L8((byte)(x % levels * (255 / (levels - 1))));
                image.Save(path, new PngEncoder { ColorType = PngColorType.Grayscale, BitDepth = depth });
            }
            var mask = new ImageReader().ReadMask(path);
            Assert.Equal(Enumerable.Range(0, 8).Select(x => x % levels), mask.Values.Take(8));
            Assert.True(mask.Bits < 8);
            // a one-bit instance mask is one object, not an 8-bit mask that used its last number
            if (levels == 2) Assert.Equal(1, Segmentation.Data.InstanceMasks.FromIds(mask, path).Max());
        }
    }

    [Fact]
    public void PlainMasksGiveGrayValuesAndPackedColours()
    {
        using var d = new TempDir();
        TempDir.SaveGray(d["gray.png"], 9, 4, (x, y) => (byte)(x * 20 + y));
        TempDir.SaveRgb(d["colour.png"], 9, 4, (x, y) => new Rgb24((byte)(x * 9), (byte)y, (byte)(x + y)));
        TempDir.SaveRgb(d["gray-as-rgb.png"], 9, 4, (x, y) => new Rgb24((byte)(x + y), (byte)(x + y), (byte)(x + y)));
        var reader = new ImageReader();
        var gray = reader.ReadMask(d["gray.png"]);
        var colour = reader.ReadMask(d["colour.png"]);
        var grayRgb = reader.ReadMask(d["gray-as-rgb.png"]);
        Assert.Equal((RawMaskKind.Gray, 3 * 20 + 2), (gray.Kind, gray.Values[2 * 9 + 3]));
        Assert.Equal((RawMaskKind.Rgb, 27 << 16 | 2 << 8 | 5), (colour.Kind, colour.Values[2 * 9 + 3]));
        Assert.Equal((RawMaskKind.Gray, 5), (grayRgb.Kind, grayRgb.Values[2 * 9 + 3]));
    }

    [SharedDataFact("camvid")]
    public void CamVidImagesAndMasksDecodeToImageSharpsPixels()
    {
        var root = Path.Combine(SharedDataFactAttribute.Find("camvid")!, "train");
        var reader = new ImageReader();
        foreach (var (folder, channels) in new[] { ("images", 3), ("masks", 1) })
        {
            var files = Directory.GetFiles(Path.Combine(root, folder), "*.png").Order().Where((_, i) => i % 12 == 0)
                .ToArray();
            Assert.NotEmpty(files);
            foreach (var file in files)
                Assert.True(ImageSharpPixels(file, channels).AsSpan().SequenceEqual(reader.ReadImage(file, channels)
                    .Pixels), $"{file} differs from ImageSharp's decoding");
        }
    }

    /// <summary>Noise with gradients and flat runs, so every filter has something to predict.</summary>
    private static void SaveNoisy(string path, int w, int h, PngColorType colour, PngFilterMethod filter, int seed)
    {
        var random = new Random(seed);
        using var image = new Image<Rgb24>(w, h);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                byte Value(int k) => (x + y + k) % 5 == 0 ? (byte)random.Next(256)
                    : (byte)((x * 7 + y * 3 + k * 50) & 255);
                image[x, y] = new Rgb24(Value(0), Value(1), Value(2));
            }
        image.Save(path, new PngEncoder { ColorType = colour, BitDepth = PngBitDepth.Bit8, FilterMethod = filter });
    }

    /// <summary>What the reader gave before the plain path: ImageSharp's pixels, widened as the reader
    /// widens.</summary>
    private static byte[] ImageSharpPixels(string path, int channels)
    {
        if (channels == 1)
        {
            using var gray = Image.Load<L8>(path);
            var px = new byte[gray.Width * gray.Height];
            gray.CopyPixelDataTo(px);
            return px;
        }
        using var rgb = Image.Load<Rgb24>(path);
        var bytes = new byte[rgb.Width * rgb.Height * 3];
        rgb.CopyPixelDataTo(bytes);
        var wide = new byte[rgb.Width * rgb.Height * channels];
        for (int i = 0; i < rgb.Width * rgb.Height; i++)
            for (int c = 0; c < channels; c++) wide[i * channels + c] = bytes[i * 3 + c % 3];
        return wide;
    }

    private static byte[] SplitImageData(byte[] png, int piece)
    {
        var layout = PngScanlines.Layout(png, out _)!;
        var data = layout.Idat.SelectMany(c => png.Skip(c.Offset).Take(c.Length)).ToArray();
        return WithImageData(png, layout, Enumerable.Range(0, (data.Length + piece - 1) / piece)
            .Select(i => data[(i * piece)..Math.Min(data.Length, (i + 1) * piece)]));
    }

    /// <summary>The file with its first IDAT chunk's data changed (the CRC made right again).</summary>
    private static byte[] WithIdat(byte[] png, Action<byte[]> change)
    {
        var layout = PngScanlines.Layout(png, out _)!;
        var (offset, length) = layout.Idat[0];
        var data = png[offset..(offset + length)];
        change(data);
        return WithImageData(png, layout with { Idat = [layout.Idat[0]] }, [data]);
    }

    /// <summary>The file with its rows (filter bytes included) changed and compressed again into one IDAT.</summary>
    private static byte[] WithRows(byte[] png, Func<byte[], byte[]> change)
    {
        var layout = PngScanlines.Layout(png, out _)!;
        var rows = change(PngScanlines.Inflate(png, layout, out _)!);
        var z = new MemoryStream();
        using (var zs = new System.IO.Compression.ZLibStream(z, System.IO.Compression.CompressionLevel.Optimal, true))
            zs.Write(rows);
        return WithImageData(png, layout, [z.ToArray()]);
    }

    /// <summary>The file with the IDAT chunks <paramref name="layout"/> names (consecutive) replaced by
    /// <paramref name="chunks"/>.</summary>
    private static byte[] WithImageData(byte[] png, PngLayout layout, IEnumerable<byte[]> chunks)
    {
        var (first, _) = layout.Idat[0];
        var (last, lastLength) = layout.Idat[^1];
        var output = new MemoryStream();
        output.Write(png, 0, first - 8);
        foreach (var data in chunks) TempDir.WriteChunk(output, "IDAT", data);
        output.Write(png, last + lastLength + 4, png.Length - (last + lastLength + 4));
        return output.ToArray();
    }
}
