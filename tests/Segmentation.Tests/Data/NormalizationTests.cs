extern alias onnx;

using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using onnx::Segmentation.Onnx;
using Segmentation.Shared;
using Segmentation.Training;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Tests.Data;

/// <summary>The per-image normalisations: numpy's percentiles, taken from the whole image, applied alike by the
/// TorchSharp predictor and Segmentation.Onnx.</summary>
public class NormalizationTests
{
    /// <summary>numpy.percentile's default ("linear"), written from its definition on the sorted values.</summary>
    private static double NumpyPercentile(byte[] values, double q)
    {
        var sorted = values.Select(v => (double)v).Order().ToArray();
        double rank = q / 100 * (sorted.Length - 1);
        int lo = (int)Math.Floor(rank), hi = (int)Math.Ceiling(rank);
        return sorted[lo] + (rank - lo) * (sorted[hi] - sorted[lo]);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(1000)]
    [InlineData(12345)]
    public void Percentiles_from_the_histogram_are_numpys_linear_interpolation(int count)
    {
        var rng = new Random(count);
        // skewed, with ties: most values dark, a few bright
        var values = Enumerable.Range(0, count).Select(_ => (byte)(rng.NextDouble() < 0.9 ? rng.Next(0, 20)
            : rng.Next(100, 256))).ToArray();
        var histogram = IntensityLevels.Histogram(values);
        Assert.Equal(count, histogram.Sum());
        foreach (var q in new[] { 0, 1, 2.5, 50, 99.8, 100 })
            Assert.Equal(NumpyPercentile(values, q), IntensityLevels.PercentileOf(histogram, q), 9);
        var (mean, std) = IntensityLevels.MeanStd(histogram);
        double m = values.Average(v => (double)v);
        Assert.Equal(m, mean, 9);
        Assert.Equal(Math.Sqrt(values.Average(v => (v - m) * (v - m))), std, 6);
    }

    [Fact]
    public void A_flat_image_gets_a_scale_of_one_gray_level_not_a_division_by_zero()
    {
        var flat = Enumerable.Repeat((byte)77, 100).ToArray();
        Assert.Equal((77 / 255f, 1 / 255f), IntensityLevels.Of(IntensityLevels.Percentile, flat));
        Assert.Equal((77 / 255f, 1 / 255f), IntensityLevels.Of(IntensityLevels.ZScore, flat));
        Assert.Equal((0f, 1f), IntensityLevels.Of(IntensityLevels.Fixed, flat));
    }

    [Fact]
    public void The_loader_takes_each_images_levels_from_the_whole_image_before_the_crop()
    {
        // Left half dark, right half bright: a 16x16 crop of either half alone has other percentiles than the whole.
        using var d = new TempDir();
        for (int i = 0; i < 4; i++)
        {
            TempDir.SaveGray(d[$"images/{i}.png"], 64, 32, (x, y) => (byte)(x < 32 ? 10 + i : 200 + (x + y) % 40));
            TempDir.SaveGray(d[$"masks/{i}.png"], 64, 32, (x, y) => (byte)(x < 32 ? 0 : 255));
        }
        var data = SegmentationDataset.FromFolder(d.Path);
        var norm = Normalization.Percentiles(1);
        var loader = new DataLoader(data, new DataLoaderOptions
        {
            BatchSize = 4, Shuffle = false, Workers = 1, Normalization = norm, Transform = new RandomCrop(16, 16),
        });
        var batch = loader.Epoch(0).First();
        Assert.Equal(16, batch.Width);
        var expected = Enumerable.Range(0, 4).SelectMany(i =>
        {
            var (offset, scale) = IntensityLevels.Of(IntensityLevels.Percentile, data.Load(i).Image.Pixels);
            return new[] { offset, scale };
        }).ToArray();
        Assert.Equal(expected, batch.Levels);
        Assert.True(expected[1] > 100 / 255f, "the whole image's range spans both halves");
        // A fixed normalisation carries no levels.
        var plain = new DataLoader(data, new DataLoaderOptions { BatchSize = 4, Workers = 1 }).Epoch(0).First();
        Assert.Null(plain.Levels);
    }

    [Theory]
    [InlineData(NormalizationScheme.Percentile, 3)]
    [InlineData(NormalizationScheme.ZScore, 3)]
    [InlineData(NormalizationScheme.Percentile, 1)]
    public void Onnx_runtime_normalises_per_image_as_the_TorchSharp_predictor_does(NormalizationScheme scheme,
        int channels)
    {
        using var dir = new TempDir();
        var description = ModelDescription.UNet(inChannels: channels, classes: 3, baseChannels: 4, depth: 2, seed: 3);
        using var model = new SegmentationModel(description);
        var normalization = scheme == NormalizationScheme.Percentile ? Normalization.Percentiles(channels, 2, 98)
            : Normalization.ZScore(channels);
        var checkpoint = new Checkpoint
        {
            Model = description,
            Dataset = new DatasetDescription { Classes = 3, ClassNames = new[] { "a", "b", "c" },
                ClassColors = DatasetDescription.Defaults(3).Colors, InChannels = channels },
            Preprocessing = new Preprocessing(normalization), TrainerSettings = new TrainerOptions().ToJson(),
            State = new TrainingState(), Weights = Checkpoint.SerializeWeights(model),
        };
        OnnxExport.Write(checkpoint, dir["model.onnx"]);
        // a dim, low-contrast image: the per-image step stretches it, a fixed one would not
        var rng = new Random(5);
        int w = 37, h = 29;
        var pixels = Enumerable.Range(0, w * h * channels).Select(_ => (byte)(30 + rng.Next(0, 25))).ToArray();

        using var torch = new Predictor(checkpoint, new PredictorOptions { Device = "cpu" });
        var probabilities = torch.Predict(new ImageBuffer(w, h, channels, pixels), probabilities: true).Probabilities!;
        using var onnx = new OnnxPredictor(dir["model.onnx"]);
        Assert.Equal(scheme == NormalizationScheme.Percentile ? "percentile" : "zscore", onnx.Info.NormalizationScheme);
        if (scheme == NormalizationScheme.Percentile) Assert.Equal((2.0, 98.0), onnx.Info.Percentiles);
        var logits = onnx.Logits(pixels, w, h);
        var softmax = Softmax(logits, 3, w * h);
        double worst = softmax.Zip(probabilities).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(worst < 1e-4, $"{scheme}: probabilities differ by up to {worst}");

        // Read back, the checkpoint keeps the scheme.
        checkpoint.Save(dir["model.ckpt"]);
        Assert.Equal(normalization.Scheme, Checkpoint.Load(dir["model.ckpt"]).Preprocessing.Normalization.Scheme);
    }

    /// <summary>Issue 37: the TorchSharp side and Segmentation.Onnx turned colour into gray two ways (and the ONNX side
    /// ignored EXIF orientation), so the two routes found different objects on colour images. Now both read pixels
    /// through one decoder: every kind of file gives the same bytes.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(4)]
    public void Both_routes_read_every_kind_of_image_to_the_same_pixels(int channels)
    {
        using var d = new TempDir();
        var rng = new Random(channels);
        byte B() => (byte)rng.Next(256);
        var files = new List<string>();
        void Save<TPixel>(string name, Func<int, int, TPixel> pixel, Action<Image<TPixel>>? edit = null)
            where TPixel : unmanaged, IPixel<TPixel>
        {
            using var image = new Image<TPixel>(23, 17);
            for (int y = 0; y < 17; y++) for (int x = 0; x < 23; x++) image[x, y] = pixel(x, y);
            edit?.Invoke(image);
            image.Save(d[name]);
            files.Add(d[name]);
        }
        Save("colour.png", (x, y) => new Rgb24(B(), B(), B()));
        Save("gray.png", (x, y) => new L8(B()));
        Save("gray16.png", (x, y) => new L16((ushort)rng.Next(65536)));
        Save("rgb48.png", (x, y) => new Rgb48((ushort)rng.Next(65536), (ushort)rng.Next(65536), (ushort)rng.Next(65536)));
        Save("alpha.png", (x, y) => new Rgba32(B(), B(), B(), B()));
        Save("colour.jpg", (x, y) => new Rgb24((byte)(x * 10), (byte)(y * 14), 90));
        Save("turned.jpg", (x, y) => new Rgb24((byte)(x * 10), (byte)(y * 14), 90), image =>
        {
            image.Metadata.ExifProfile = new SixLabors.ImageSharp.Metadata.Profiles.Exif.ExifProfile();
            image.Metadata.ExifProfile.SetValue(SixLabors.ImageSharp.Metadata.Profiles.Exif.ExifTag.Orientation, (ushort)6);
        });
        foreach (var file in files)
        {
            var ours = new ImageReader().ReadImage(file, channels);
            var theirs = OnnxPredictor.Read(file, channels);
            Assert.Equal((ours.Width, ours.Height), (theirs.Width, theirs.Height));
            Assert.Equal(ours.Bits, theirs.Bits);
            Assert.True(ours.Bits == 16 ? ours.Pixels16!.SequenceEqual(theirs.Pixels16!)
                : ours.Pixels.SequenceEqual(theirs.Pixels!), $"{Path.GetFileName(file)} at {channels} channel(s)");
        }
        Assert.Equal(17, new ImageReader().ReadImage(d["turned.jpg"], channels).Width); // turned a quarter
    }

    internal static float[] Softmax(float[] logits, int classes, int plane)
    {
        var p = new float[logits.Length];
        for (int i = 0; i < plane; i++)
        {
            float max = float.MinValue, sum = 0;
            for (int k = 0; k < classes; k++) max = Math.Max(max, logits[k * plane + i]);
            for (int k = 0; k < classes; k++) sum += p[k * plane + i] = MathF.Exp(logits[k * plane + i] - max);
            for (int k = 0; k < classes; k++) p[k * plane + i] /= sum;
        }
        return p;
    }

    [Fact]
    public void Gray_or_colour_is_decided_over_every_image_and_a_mixed_folder_is_colour()
    {
        using var d = new TempDir();
        TempDir.SaveGray(d["mixed/images/a.png"], 24, 24, (x, y) => (byte)(x * 10));
        TempDir.SaveRgb(d["mixed/images/b.png"], 24, 24, (x, y) => new Rgb24(x < 12 ? (byte)10 : (byte)0, 5, 90));
        // a colour file whose pixels are all gray (microscopy saved as RGB) counts as gray
        TempDir.SaveRgb(d["mixed/images/c.png"], 24, 24, (x, y) => new Rgb24((byte)y, (byte)y, (byte)y));
        foreach (var n in new[] { "a", "b", "c" })
            TempDir.SaveGray(d[$"mixed/masks/{n}.png"], 24, 24, (x, y) => (byte)(x < 12 ? 0 : 255));
        var mixed = SegmentationDataset.FromFolder(d["mixed"]);
        Assert.Equal(3, mixed.Description.InChannels);
        Assert.Contains("mixed: 2 gray, 1 colour", mixed.DetectionReport);
        Assert.Contains("b.png", mixed.DetectionReport);

        File.Delete(d["mixed/images/b.png"]);
        File.Delete(d["mixed/masks/b.png"]);
        var gray = SegmentationDataset.FromFolder(d["mixed"]);
        Assert.Equal(1, gray.Description.InChannels);
        Assert.Contains("all 2 gray", gray.DetectionReport);
    }
}
