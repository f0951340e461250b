using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Tests.Inference;

public sealed class PredictorTests : IDisposable
{
    private readonly TempDir dir = new();
    private readonly Checkpoint checkpoint;

    public PredictorTests()
    {
        var (train, val) = SegmentationDataset.Shapes(new ShapesOptions { Count = 16, Size = 32, Seed = 4, MaxShapes = 2 }).Split(0.75, seed: 0);
        random.manual_seed(3);
        using var model = new SegmentationModel(ModelDescription.UNet(inChannels: 3, classes: 4, baseChannels: 8, depth: 3));
        using var trainer = new Trainer(model, new TrainerOptions { Epochs = 1, BatchSize = 4, Seed = 3, Workers = 1, Device = "cpu", ManageProcessMemory = false, Checkpoints = new() { Directory = dir.Path } });
        trainer.Fit(train, val);
        checkpoint = Checkpoint.Load(dir["last.ckpt"]);
    }

    public void Dispose() => dir.Dispose();

    private static Tensor Image(int h, int w, int seed)
    {
        random.manual_seed(seed);
        return randn(1, 3, h, w);
    }

    [Fact]
    public void Sliding_window_equals_whole_image_when_one_window_covers_the_image()
    {
        using var whole = new Predictor(checkpoint, new PredictorOptions { Device = "cpu" });
        using var exact = new Predictor(checkpoint, new PredictorOptions { Device = "cpu", Window = new Size2(40, 48) });
        using var larger = new Predictor(checkpoint, new PredictorOptions { Device = "cpu", Window = new Size2(64, 64), Stride = new Size2(8, 8) });
        using var scope = NewDisposeScope();
        var x = Image(40, 48, 1);
        var reference = whole.Logits(x);
        Assert.True(reference.allclose(exact.Logits(x), rtol: 0, atol: 0));
        Assert.True(reference.allclose(larger.Logits(x), rtol: 0, atol: 0));
    }

    [Fact]
    public void Overlapping_windows_average_their_logits()
    {
        using var predictor = new Predictor(checkpoint, new PredictorOptions { Device = "cpu", Window = new Size2(32, 32), Stride = new Size2(8, 16) });
        using var model = checkpoint.CreateModel();
        model.eval();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = Image(40, 48, 2);
        // Windows start at rows {0, 8} and columns {0, 16}: every pixel is covered 1, 2 or 4 times.
        var sum = zeros(1, 4, 40, 48);
        var count = zeros(1, 1, 40, 48);
        foreach (var y0 in new[] { 0, 8 })
            foreach (var x0 in new[] { 0, 16 })
            {
                sum[.., .., y0..(y0 + 32), x0..(x0 + 32)].add_(model.Logits(x[.., .., y0..(y0 + 32), x0..(x0 + 32)]));
                count[.., .., y0..(y0 + 32), x0..(x0 + 32)].add_(1);
            }
        Assert.Equal(4f, count.max().item<float>());
        var expected = sum / count;
        var actual = predictor.Logits(x);
        Assert.Equal(new long[] { 1, 4, 40, 48 }, actual.shape);
        Assert.True(expected.allclose(actual, rtol: 1e-5, atol: 1e-5));
        // And it is not simply the whole-image answer (zero padding at window borders differs).
        Assert.False(model.Logits(x).allclose(actual, rtol: 1e-5, atol: 1e-5));
    }

    [Theory]
    [InlineData(TestTimeAugmentation.Flip)]
    [InlineData(TestTimeAugmentation.Flips)]
    [InlineData(TestTimeAugmentation.Dihedral)]
    public void Tta_averages_the_logits_of_each_view_mapped_back_onto_the_image(TestTimeAugmentation mode)
    {
        using var plain = new Predictor(checkpoint, new PredictorOptions { Device = "cpu" });
        using var tta = new Predictor(checkpoint, new PredictorOptions { Device = "cpu", Tta = mode });
        using var scope = NewDisposeScope();
        var x = Image(32, 40, 3); // not square: a transposed view is 40 x 32
        // written from the definitions: each view, its logits, and the inverse of the view
        Tensor Mirror(Tensor t, long dim) => t.flip(dim);
        Tensor T(Tensor t) => t.transpose(2, 3);
        var views = new List<Tensor> { plain.Logits(x), Mirror(plain.Logits(Mirror(x, 3)), 3) };
        if (mode >= TestTimeAugmentation.Flips)
        {
            views.Add(Mirror(plain.Logits(Mirror(x, 2)), 2));
            views.Add(Mirror(Mirror(plain.Logits(Mirror(Mirror(x, 2), 3)), 3), 2));
        }
        if (mode == TestTimeAugmentation.Dihedral)
        {
            var xt = T(x);
            views.Add(T(plain.Logits(xt)));
            views.Add(T(Mirror(plain.Logits(Mirror(xt, 3)), 3)));
            views.Add(T(Mirror(plain.Logits(Mirror(xt, 2)), 2)));
            views.Add(T(Mirror(Mirror(plain.Logits(Mirror(Mirror(xt, 2), 3)), 3), 2)));
        }
        Assert.Equal(mode switch { TestTimeAugmentation.Flip => 2, TestTimeAugmentation.Flips => 4, _ => 8 },
            views.Count);
        var expected = stack(views).mean(new long[] { 0 });
        var actual = tta.Logits(x);
        Assert.Equal(new long[] { 1, 4, 32, 40 }, actual.shape);
        Assert.True(expected.allclose(actual, rtol: 1e-5, atol: 1e-5));
        // and the views do differ: averaging changed the answer
        Assert.False(plain.Logits(x).allclose(actual, rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void Prediction_has_the_image_size_labels_within_the_classes_and_probabilities_that_sum_to_one()
    {
        using var predictor = new Predictor(checkpoint, new PredictorOptions { Device = "cpu" });
        var rng = new Random(5);
        var pixels = new byte[37 * 29 * 3];
        rng.NextBytes(pixels);
        var p = predictor.Predict(new ImageBuffer(37, 29, 3, pixels), probabilities: true);
        Assert.Equal((37, 29, 4), (p.Width, p.Height, p.Classes));
        Assert.Equal(37 * 29, p.Labels.Length);
        Assert.All(p.Labels, l => Assert.InRange(l, 0, 3));
        var probs = p.Probabilities!;
        for (int i = 0; i < 37 * 29; i += 97)
        {
            float s = 0, best = -1; int arg = -1;
            for (int c = 0; c < 4; c++)
            {
                var v = probs[c * 37 * 29 + i];
                s += v;
                if (v > best) { best = v; arg = c; }
            }
            Assert.Equal(1f, s, 4);
            Assert.Equal(arg, p.Labels[i]);
        }
    }

    [Fact]
    public void An_image_smaller_than_the_model_minimum_is_padded_and_cropped_back()
    {
        using var predictor = new Predictor(checkpoint, new PredictorOptions { Device = "cpu" });
        var p = predictor.Predict(new ImageBuffer(5, 3, 3));
        Assert.Equal(15, p.Labels.Length);
    }

    [Fact]
    public void Wrong_channel_count_is_a_data_error()
    {
        using var predictor = new Predictor(checkpoint, new PredictorOptions { Device = "cpu" });
        var e = Assert.Throws<DataException>(() => predictor.Predict(new ImageBuffer(32, 32, 1)));
        Assert.Contains("1 channel", e.Message);
    }

    [Fact]
    public void Written_label_masks_read_back_as_the_same_classes()
    {
        var labels = Enumerable.Range(0, 13 * 7).Select(i => (byte)(i % 4)).ToArray();
        var path = dir["mask.png"];
        MaskWriter.SaveLabels(path, labels, 13, 7);
        var raw = new ImageReader().ReadMask(path);
        Assert.Equal((13, 7), (raw.Width, raw.Height));
        Assert.Equal(labels.Select(l => (int)l), raw.Values);
    }

    [Fact]
    public void Colourised_masks_use_the_class_colours()
    {
        var colors = checkpoint.Dataset.ClassColors;
        var labels = new byte[] { 0, 1, 2, 3 };
        var path = dir["color.png"];
        MaskWriter.SaveColorized(path, labels, 4, 1, colors);
        var img = new ImageReader().ReadImage(path, 3);
        for (int i = 0; i < 4; i++)
            Assert.Equal(new[] { colors[i].R, colors[i].G, colors[i].B }, img.Pixels[(i * 3)..(i * 3 + 3)]);
    }

    [Fact]
    public void A_model_trained_at_a_fixed_size_predicts_at_that_size_from_the_checkpoint_alone()
    {
        // A --size model used to be run at the image's native size by Predictor.FromFile (the run's overlays and the
        // PredictFromCheckpoint sample), which the model never saw in training.
        using var d = new TempDir();
        var (train, val) = SegmentationDataset.Shapes(new ShapesOptions { Count = 12, Size = 40, Seed = 5, MaxShapes = 2 }).Split(0.75, seed: 0);
        using (var model = new SegmentationModel(ModelDescription.UNet(inChannels: 3, classes: 4, baseChannels: 8, depth: 2)))
        using (var t = new Trainer(model, new TrainerOptions { Epochs = 1, BatchSize = 4, Size = new Size2(24, 24), Workers = 1, Device = "cpu", ManageProcessMemory = false, Checkpoints = new() { Directory = d.Path } }))
            t.Fit(train, val);
        using var byDefault = Predictor.FromFile(d["last.ckpt"]);
        Assert.Equal(new Size2(24, 24), byDefault.Options.Size);
        using var explicitSize = Predictor.FromFile(d["last.ckpt"], new PredictorOptions { Size = new Size2(24, 24) });
        using var native = Predictor.FromFile(d["last.ckpt"], new PredictorOptions { Size = new Size2(40, 40) });
        var image = val.Load(0).Image;
        var a = byDefault.Predict(image, probabilities: true);
        Assert.Equal((40, 40), (a.Width, a.Height));
        Assert.Equal(explicitSize.Predict(image, probabilities: true).Probabilities, a.Probabilities);
        Assert.NotEqual(native.Predict(image, probabilities: true).Probabilities, a.Probabilities);
    }
}
