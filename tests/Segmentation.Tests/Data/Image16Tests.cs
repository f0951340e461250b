extern alias onnx;

using onnx::Segmentation.Onnx;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Shared;
using Segmentation.Tests.Cli;
using Segmentation.Training;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace Segmentation.Tests.Data;

/// <summary>
/// Issue 33, class 3: pixels are never reduced silently. 16-bit PNG and TIFF images are read, transformed, batched,
/// normalised, trained and predicted at 16 bits a sample, by the TorchSharp side and Segmentation.Onnx alike; the model
/// sees a sample as a share of its depth's full scale, so an 8-bit file and its 16-bit copy give the same input, and a
/// 16-bit file keeps the levels that its 8-bit copy rounds away.
/// </summary>
public class Image16Tests
{
    private const int W = 29, H = 23;

    /// <summary>The fixtures tools/fixtures/make_tiff16.py wrote with tifffile, by the formulas it used.</summary>
    private static string Fixture(string name)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Segmentation.sln"))) dir = dir.Parent;
        return Path.Combine(dir!.FullName, "tests", "fixtures", "tiff16", name);
    }

    private static ushort Gray12(int x, int y) => (ushort)((x * 131 + y * 977 + x * y * 7) % 4096);

    private static (ushort R, ushort G, ushort B) Rgb16(int x, int y)
    {
        int r = (x * 257 + y * 31) % 65536;
        return ((ushort)r, (ushort)((x * y * 13 + 500) % 65536), (ushort)(65535 - r));
    }

    private static string SavePng16(TempDir d, string name, bool colour)
    {
        if (colour)
        {
            using var rgb = new Image<Rgb48>(W, H);
            for (int y = 0; y < H; y++) for (int x = 0; x < W; x++)
                {
                    var (r, g, b) = Rgb16(x, y);
                    rgb[x, y] = new Rgb48(r, g, b);
                }
            rgb.SaveAsPng(d[name]);
        }
        else
        {
            using var gray = new Image<L16>(W, H);
            for (int y = 0; y < H; y++) for (int x = 0; x < W; x++) gray[x, y] = new L16(Gray12(x, y));
            gray.SaveAsPng(d[name]);
        }
        return d[name];
    }

    [Theory]
    [InlineData("png", false)]
    [InlineData("png", true)]
    [InlineData("gray12.tif", false)]
    [InlineData("gray12-deflate.tif", false)]
    [InlineData("rgb16.tif", true)]
    public void Sixteen_bit_PNGs_and_TIFFs_are_read_at_full_depth_by_both_routes(string source, bool colour)
    {
        using var d = new TempDir();
        string file = source == "png" ? SavePng16(d, colour ? "rgb48.png" : "gray16.png", colour) : Fixture(source);
        var reader = new ImageReader();
        Assert.Equal(16, reader.SampleBits(file));
        foreach (int channels in new[] { 1, 3 })
        {
            var image = reader.ReadImage(file, channels);
            Assert.Equal(16, image.Bits);
            Assert.Equal(65535, image.FullScale);
            var px = image.Pixels16!;
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    for (int c = 0; c < channels; c++)
                    {
                        int at = (y * W + x) * channels + c;
                        if (!colour) Assert.Equal(Gray12(x, y), px[at]); // gray replicated, every level kept
                        else if (channels == 3)
                        {
                            var (r, g, b) = Rgb16(x, y);
                            Assert.Equal(c == 0 ? r : c == 1 ? g : b, px[at]);
                        }
                    }
            // more levels than 8 bits hold: nothing was rounded to 256 values
            Assert.True(px.Distinct().Count() > 256, $"{source}: {px.Distinct().Count()} levels");
            var onnxImage = OnnxPredictor.Read(file, channels);
            Assert.Equal(16, onnxImage.Bits);
            Assert.True(px.SequenceEqual(onnxImage.Pixels16!), $"{source}: the ONNX route reads other samples");
        }
        Assert.Throws<InvalidOperationException>(() => reader.ReadImage(file, 1).Pixels); // no silent 8-bit view
    }

    [Fact]
    public void Eight_bit_files_stay_eight_bit()
    {
        using var d = new TempDir();
        TempDir.SaveGray(d["gray.png"], 8, 6, (x, y) => (byte)(x * 30));
        TempDir.SaveRgb(d["rgb.jpg"], 8, 6, (x, y) => new Rgb24((byte)(x * 30), 9, 200));
        var reader = new ImageReader();
        foreach (var f in new[] { "gray.png", "rgb.jpg" })
        {
            Assert.Equal(8, reader.SampleBits(d[f]));
            Assert.Equal(8, reader.ReadImage(d[f], 3).Bits);
        }
    }

    private static Sample Sample16(ushort[] px, int w, int h, int channels) =>
        new(new ImageBuffer(w, h, channels, px), new byte[w * h], "s", new ushort[w * h]);

    [Fact]
    public void Every_transform_keeps_sixteen_bits_and_their_values()
    {
        const int w = 40, h = 30;
        // a flat image above 8 bits' range: an 8-bit clamp would leave 255
        var flat = Sample16(Enumerable.Repeat((ushort)40000, w * h * 3).ToArray(), w, h, 3);
        var rng = new Random(1);
        ISampleTransform[] moves =
        [
            new Resize(17, 23), new RandomScale(0.5, 2.0), new RandomCrop(16, 16), new CenterCrop(20, 20),
            new HorizontalFlip(1), new VerticalFlip(1), new RandomRotate90(), new GaussianBlur(1.5, 1),
        ];
        foreach (var t in moves)
        {
            var o = t.Apply(flat, rng, 255);
            Assert.Equal(16, o.Image.Bits);
            Assert.All(o.Image.Pixels16!, v => Assert.Equal(40000, v));
        }
        // every other transform keeps the depth and stays in range, with values beyond 8 bits
        ISampleTransform[] others = [new RandomRotation(30), new ElasticDeformation(34, 4, 1),
            new ColorJitter(0.3, 0.3, 0.3, 0.1), new GaussianNoise(8, 1)];
        foreach (var t in others)
        {
            var o = t.Apply(flat, rng, 255);
            Assert.Equal(16, o.Image.Bits);
            Assert.Contains(o.Image.Pixels16!, v => v > 255);
        }
        // a flip is exact, sample for sample
        var ramp = Sample16(Enumerable.Range(0, w * h).Select(i => (ushort)(i * 50)).ToArray(), w, h, 1);
        var flipped = new HorizontalFlip(1).Apply(ramp, rng, 255).Image.Pixels16!;
        Assert.Equal(ramp.Image.Pixels16![w - 1], flipped[0]);
        // the histogram is the 16-bit one, kept through a crop
        var cropped = new RandomCrop(8, 8).Apply(ramp, rng, 255);
        Assert.Equal(ramp.Histogram.Length, cropped.Histogram.Length);
        Assert.True(ramp.Histogram.Length > 256);
    }

    [Fact]
    public void A_batch_normalises_each_depth_by_its_full_scale()
    {
        const int w = 4, h = 3;
        var wide = Enumerable.Range(0, w * h).Select(i => (ushort)(i * 4000 + 7)).ToArray();
        var narrow = Enumerable.Range(0, w * h).Select(i => (byte)(i * 20 + 1)).ToArray();
        var samples = new[]
        {
            Sample16(wide, w, h, 1),
            new Sample(new ImageBuffer(w, h, 1, narrow), new byte[w * h], "n", new ushort[w * h]),
        };
        var norm = new Normalization(new[] { 0f }, new[] { 1f });
        var batch = DataLoader.Collate(samples, norm);
        Assert.NotNull(batch.Images16);
        var (x, _) = batch.ToDevice(CPU);
        Assert.Equal(ScalarType.Int32, x.dtype);
        var values = norm.Apply(x, batch).data<float>().ToArray();
        for (int i = 0; i < w * h; i++)
        {
            Assert.Equal(wide[i] / 65535f, values[i], 6);
            Assert.Equal(narrow[i] / 255f, values[w * h + i], 6); // an 8-bit image in a 16-bit batch: the same input
        }
        // per-image percentiles in units of the full scale, from the 16-bit histogram
        var (offset, scale) = Normalization.Percentiles(1, 0, 100).LevelsOf(samples[0]);
        Assert.Equal(7 / 65535f, offset, 6);
        Assert.Equal(44000 / 65535f, scale, 6);
    }

    /// <summary>A checkpoint of a tiny untrained model with <paramref name="normalization"/>.</summary>
    private static Checkpoint Tiny(int channels, Normalization normalization, SegmentationModel model,
        ModelDescription description) => new()
    {
        Model = description,
        Dataset = new DatasetDescription { Classes = 3, ClassNames = new[] { "a", "b", "c" },
            ClassColors = DatasetDescription.Defaults(3).Colors, InChannels = channels },
        Preprocessing = new Preprocessing(normalization), TrainerSettings = new TrainerOptions().ToJson(),
        State = new TrainingState(), Weights = Checkpoint.SerializeWeights(model),
    };

    [Theory]
    [InlineData(1, "percentile")]
    [InlineData(3, "percentile")]
    [InlineData(1, "fixed")]
    public void Both_routes_predict_a_sixteen_bit_image_alike_and_its_eight_bit_copy_otherwise(int channels,
        string scheme)
    {
        using var d = new TempDir();
        var description = ModelDescription.UNet(inChannels: channels, classes: 3, baseChannels: 4, depth: 2, seed: 3);
        using var model = new SegmentationModel(description);
        var normalization = (scheme == "percentile" ? Normalization.Percentiles(channels)
            : new Normalization(Enumerable.Repeat(0.03f, channels).ToArray(), Enumerable.Repeat(0.01f, channels)
                .ToArray())) with { ImageBits = 16 };
        var checkpoint = Tiny(channels, normalization, model, description);
        OnnxExport.Write(checkpoint, d["model.onnx"]);
        // 12-bit microscopy in a 16-bit file: a dim, low-contrast image of about 60 levels
        var rng = new Random(5);
        int w = 37, h = 29;
        var px = Enumerable.Range(0, w * h * channels).Select(_ => (ushort)(1800 + rng.Next(0, 60))).ToArray();
        using var torch = new Predictor(checkpoint, new PredictorOptions { Device = "cpu" });
        var probabilities = torch.Predict(new ImageBuffer(w, h, channels, px), probabilities: true).Probabilities!;
        using var onnx = new OnnxPredictor(d["model.onnx"]);
        Assert.Equal(16, onnx.Info.ImageBits);
        var logits = onnx.Logits(new OnnxImage(w, h, null, px));
        double worst = NormalizationTests.Softmax(logits, 3, w * h).Zip(probabilities)
            .Max(p => Math.Abs(p.First - p.Second));
        Assert.True(worst < 1e-4, $"probabilities differ by up to {worst}");

        // its 8-bit copy (ImageSharp's rounding, as 8-bit readers give it): the same scale, fewer levels
        var eight = px.Select(v => (byte)Math.Round(v * 255.0 / 65535)).ToArray();
        Assert.True(eight.Distinct().Count() <= 2);
        var copy = torch.Predict(new ImageBuffer(w, h, channels, eight), probabilities: true).Probabilities!;
        double moved = copy.Zip(probabilities).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(moved > 1e-4, $"the 8-bit copy predicts the same probabilities (within {moved})");

        checkpoint.Save(d["model.ckpt"]);
        Assert.Equal(16, Checkpoint.Load(d["model.ckpt"]).Preprocessing.Normalization.ImageBits);
    }

    /// <summary>
    /// End to end through <c>segment</c>: 16-bit images whose objects are 6 levels of 4096 above the background (12-bit
    /// microscopy, faint) train and predict at full depth and the model finds the objects; in their 8-bit copies
    /// object and background are the same byte, so the same model finds nothing there: the documented difference
    /// (docs/plan.md, 16-bit images).
    /// </summary>
    [Theory]
    [InlineData(false, "semantic", "png")]
    [InlineData(true, "semantic", "png")]
    [InlineData(false, "instance", "png")]
    [InlineData(false, "semantic", "tif")]
    [InlineData(true, "semantic", "tif")]
    public void Faint_sixteen_bit_objects_are_learned_where_an_eight_bit_copy_has_none(bool colour, string task,
        string format)
    {
        using var d = new TempDir();
        const int n = 48;
        var rng = new Random(2);
        ushort[] Draw(int i, out byte[] mask)
        {
            var m = new byte[n * n];
            int x0 = 6 + rng.Next(20), y0 = 6 + rng.Next(20), size = 12 + rng.Next(8);
            var px = new ushort[n * n];
            for (int y = 0; y < n; y++)
                for (int x = 0; x < n; x++)
                {
                    bool inside = x >= x0 && x < x0 + size && y >= y0 && y < y0 + size;
                    m[y * n + x] = (byte)(inside ? 1 : 0);
                    px[y * n + x] = (ushort)(inside ? 1006 : 1000);
                }
            mask = m;
            return px;
        }
        void Save(string path, ushort[] px, bool sixteen)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            if (sixteen && format == "tif")
                WriteTiff16(path, n, n, colour ? px.SelectMany(v => new[] { v, v, (ushort)(v + 3) }).ToArray() : px,
                    colour ? 3 : 1);
            else if (colour && sixteen)
            {
                using var img = Image.LoadPixelData(px.Select(v => new Rgb48(v, v, (ushort)(v + 3))).ToArray(), n, n);
                img.SaveAsPng(path);
            }
            else if (sixteen)
            {
                using var img = Image.LoadPixelData(px.Select(v => new L16(v)).ToArray(), n, n);
                img.SaveAsPng(path);
            }
            else
            {
                using var img = Image.LoadPixelData(px.Select(v => new L16(v)).ToArray(), n, n);
                using var eight = img.CloneAs<L8>(); // what an 8-bit reader would have made of it
                eight.SaveAsPng(path);
            }
        }
        for (int i = 0; i < 12; i++)
        {
            var px = Draw(i, out var mask);
            Save(d[$"data/images/{i:D2}.{format}"], px, true);
            TempDir.SaveGray(d[$"data/masks/{i:D2}.png"], n, n, (x, y) => mask[y * n + x]);
            if (i < 2) { Save(d[$"wide/{i:D2}.{format}"], px, true); Save(d[$"narrow/{i:D2}.png"], px, false); }
        }
        var train = CliResult.Run("train", "--data", d["data"], "--val-split", "0", "--epochs", "25", "--batch-size",
            "4", "--base-channels", "8", "--depth", "2", "--normalize", "percentile", "--lr", "0.01", "--no-augment",
            "--threads", "2", "--workers", "1", "--device", "cpu", "--out", d["run"], "--no-tensorboard", "--task",
            task);
        Assert.True(train.Code == 0, train.Err);
        var record = Checkpoint.Load(d["run/last.ckpt"]);
        Assert.Equal(16, record.Preprocessing.Normalization.ImageBits);
        Assert.Contains("16-bit", train.Out);
        foreach (var set in new[] { "wide", "narrow" })
        {
            var r = CliResult.Run("predict", "--checkpoint", d["run/last.ckpt"], "--input", d[set], "--out",
                d[$"out-{set}"], "--device", "cpu");
            Assert.True(r.Code == 0, r.Err);
        }
        for (int i = 0; i < 2; i++)
        {
            var truth = new ImageReader().ReadImage(d[$"data/masks/{i:D2}.png"], 1).Pixels;
            double Iou(string set)
            {
                // a class per pixel, or (instances) an object number per pixel in a 16-bit PNG
                var read = new ImageReader().ReadImage(d[$"out-{set}/{i:D2}.png"], 1);
                var p = read.Pixels16 is { } ids ? ids.Select(v => v > 0 ? (byte)1 : (byte)0).ToArray() : read.Pixels;
                int both = p.Zip(truth).Count(t => t.First == 1 && t.Second == 1);
                int either = p.Zip(truth).Count(t => t.First == 1 || t.Second == 1);
                return either == 0 ? 0 : (double)both / either;
            }
            double wide = Iou("wide"), narrow = Iou("narrow");
            Assert.True(wide > 0.8, $"image {i}: the 16-bit image's objects found with IoU {wide:F3}");
            Assert.True(narrow < 0.5, $"image {i}: its 8-bit copy (flat) gave IoU {narrow:F3}");
        }
    }

    /// <summary>A baseline, uncompressed, little-endian TIFF of 16-bit samples (gray, or RGB interleaved): what
    /// microscopes and tifffile write, which ImageSharp 2.1 can read but not write.</summary>
    private static void WriteTiff16(string path, int width, int height, ushort[] samples, int channels)
    {
        using var w = new BinaryWriter(File.Create(path));
        int data = samples.Length * 2, entries = 10;
        long ifd = 8 + data + (data & 1), bits = ifd + 2 + entries * 12 + 4;
        w.Write((byte)'I'); w.Write((byte)'I'); w.Write((ushort)42); w.Write((uint)ifd);
        foreach (var v in samples) w.Write(v);
        if ((data & 1) == 1) w.Write((byte)0);
        w.Write((ushort)entries);
        void Entry(ushort tag, ushort type, uint count, uint value)
        {
            w.Write(tag); w.Write(type); w.Write(count);
            if (type == 3 && count == 1) { w.Write((ushort)value); w.Write((ushort)0); } else w.Write(value);
        }
        Entry(256, 4, 1, (uint)width);
        Entry(257, 4, 1, (uint)height);
        if (channels == 1) Entry(258, 3, 1, 16); else Entry(258, 3, 3, (uint)bits);
        Entry(259, 3, 1, 1); // no compression
        Entry(262, 3, 1, channels == 1 ? 1u : 2u); // black is zero, or RGB
        Entry(273, 4, 1, 8); // the one strip's offset
        Entry(277, 3, 1, (uint)channels);
        Entry(278, 4, 1, (uint)height);
        Entry(279, 4, 1, (uint)data);
        Entry(284, 3, 1, 1); // interleaved
        w.Write(0u);
        if (channels == 3) { w.Write((ushort)16); w.Write((ushort)16); w.Write((ushort)16); }
    }
}
