using Segmentation.Data;

namespace Segmentation.Tests.Data;

public class TransformTests
{
    private const int Ignore = 255;

    /// <summary>A 40x30 sample whose image is white exactly where the mask is 1 (a rectangle and a disc), black elsewhere.</summary>
    private static Sample Drawn()
    {
        int w = 40, h = 30;
        var img = new ImageBuffer(w, h, 3);
        var mask = new byte[w * h];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                bool on = (x >= 3 && x < 15 && y >= 4 && y < 12) || ((x - 28) * (x - 28) + (y - 18) * (y - 18) < 36);
                if (!on) continue;
                mask[y * w + x] = 1;
                for (int c = 0; c < 3; c++) img.Pixels[(y * w + x) * 3 + c] = 255;
            }
        return new Sample(img, mask, "drawn");
    }

    /// <summary>Share of labelled pixels whose image brightness agrees with the label.</summary>
    private static double Agreement(Sample s)
    {
        int agree = 0, total = 0;
        for (int i = 0; i < s.Mask.Length; i++)
        {
            if (s.Mask[i] == Ignore) continue;
            total++;
            bool bright = s.Image.Pixels[i * 3] > 127;
            if (bright == (s.Mask[i] == 1)) agree++;
        }
        return (double)agree / total;
    }

    public static TheoryData<string> Exact => new() { "hflip", "vflip", "rot90", "crop" };

    [Theory]
    [MemberData(nameof(Exact))]
    public void Exact_pixel_moves_keep_image_and_mask_aligned(string name)
    {
        ISampleTransform t = name switch
        {
            "hflip" => new HorizontalFlip(1), "vflip" => new VerticalFlip(1), "rot90" => new RandomRotate90(1), _ => new RandomCrop(20, 25),
        };
        for (int seed = 0; seed < 8; seed++)
        {
            var s = t.Apply(Drawn(), new Random(seed), Ignore);
            Assert.Equal(1.0, Agreement(s));
            Assert.Equal(s.Width * s.Height, s.Mask.Length);
        }
    }

    [Fact]
    public void A_90_degree_rotation_swaps_the_sides_and_moves_a_corner_pixel_where_expected()
    {
        var s = Drawn();
        s.Mask[0] = 7; // top-left
        Sample? rotated = null;
        for (int seed = 0; rotated is null || rotated.Width != 30; seed++) rotated = new RandomRotate90(1).Apply(s, new Random(seed), Ignore);
        Assert.Equal(40, rotated.Height);
        // Clockwise: top-left goes to top-right; counter-clockwise: to bottom-left.
        Assert.True(rotated.Mask[29] == 7 || rotated.Mask[39 * 30] == 7);
    }

    [Theory]
    [InlineData(0.5, 0.5)]
    [InlineData(1.7, 1.7)]
    public void Resampling_keeps_image_and_mask_aligned(double min, double max)
    {
        var s = new RandomScale(min, max).Apply(Drawn(), new Random(1), Ignore);
        Assert.Equal((int)Math.Round(40 * min), s.Width);
        Assert.True(Agreement(s) > 0.93, $"agreement {Agreement(s)}");
        Assert.All(s.Mask, v => Assert.True(v is 0 or 1)); // nearest neighbour: no new labels
    }

    [Fact]
    public void Small_rotation_keeps_alignment_and_fills_corners_with_the_ignore_index()
    {
        var s = new RandomRotation(15, probability: 1).Apply(Drawn(), new Random(2), Ignore);
        Assert.True(Agreement(s) > 0.93, $"agreement {Agreement(s)}");
        Assert.Contains((byte)Ignore, s.Mask);
        Assert.All(s.Mask, v => Assert.True(v is 0 or 1 or Ignore));
    }

    [Fact]
    public void Crop_larger_than_the_sample_pads_the_mask_with_the_ignore_index_and_the_image_with_zero()
    {
        var s = new RandomCrop(50, 60).Apply(Drawn(), new Random(0), Ignore);
        Assert.Equal(60, s.Width); Assert.Equal(50, s.Height);
        int ignored = s.Mask.Count(v => v == Ignore);
        Assert.Equal(60 * 50 - 40 * 30, ignored);
        for (int i = 0; i < s.Mask.Length; i++)
            if (s.Mask[i] == Ignore) Assert.Equal(0, s.Image.Pixels[i * 3]);
    }

    [Fact]
    public void Cat_max_ratio_redraws_crops_dominated_by_one_class()
    {
        var s = Drawn();
        int dominated = 0, redrawn = 0;
        for (int seed = 0; seed < 40; seed++)
        {
            if (Share(new RandomCrop(8, 8).Apply(s, new Random(seed), Ignore)) >= 0.75) dominated++;
            if (Share(new RandomCrop(8, 8, 0.75).Apply(s, new Random(seed), Ignore)) >= 0.75) redrawn++;
        }
        Assert.True(redrawn < dominated / 2, $"{redrawn} dominated crops with cat_max_ratio vs {dominated} without");

        static double Share(Sample c) => (double)c.Mask.GroupBy(v => v).Max(g => g.Count()) / c.Mask.Length;
    }

    [Fact]
    public void Photometric_transforms_change_the_image_only()
    {
        var d = Drawn();
        var mid = new ImageBuffer(d.Width, d.Height, 3, d.Image.Pixels.Select(v => (byte)(v == 0 ? 90 : 160)).ToArray());
        var s = new Sample(mid, d.Mask, d.Name);
        foreach (var t in new ISampleTransform[] { new ColorJitter(0.4, 0.4, 0.4, 0.1), new GaussianNoise(10, 1), new GaussianBlur(2, 1) })
        {
            var o = t.Apply(s, new Random(3), Ignore);
            Assert.Same(s.Mask, o.Mask);
            Assert.NotEqual(s.Image.Pixels, o.Image.Pixels);
        }
    }

    [Fact]
    public void Train_preset_gives_crops_of_the_requested_size()
    {
        var pipeline = Compose.TrainPreset(24, 32);
        for (int seed = 0; seed < 5; seed++)
        {
            var o = pipeline.Apply(Drawn(), new Random(seed), Ignore);
            Assert.Equal((32, 24), (o.Width, o.Height));
        }
    }
}

/// <summary>Elastic deformation and the augmentation text.</summary>
public class ElasticAndAugmentationTextTests
{
    /// <summary>Three wide bands of labels 0, 1, 2, with the image's gray level 40 + 80 x label.</summary>
    private static Sample Bands(int size = 96)
    {
        var image = new ImageBuffer(size, size, 1);
        var mask = new byte[size * size];
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
            {
                byte label = (byte)(Math.Min(2, (x + y / 3) * 3 / (size + size / 3)));
                mask[y * size + x] = label;
                image.Pixels[y * size + x] = (byte)(40 + 80 * label);
            }
        return new Sample(image, mask, "bands");
    }

    [Fact]
    public void Elastic_deformation_moves_image_and_mask_together()
    {
        var s = Bands();
        var moved = new ElasticDeformation(alpha: 300, sigma: 8, probability: 1).Apply(s, new Random(3), 255);
        int valid = 0, aligned = 0, changed = 0;
        for (int i = 0; i < s.Mask.Length; i++)
        {
            if (moved.Mask[i] == 255) continue;
            valid++;
            if (moved.Mask[i] != s.Mask[i]) changed++;
            // The image is bilinear and the mask nearest: away from band edges the gray level names the label.
            if (Math.Abs(moved.Image.Pixels[i] - (40 + 80 * moved.Mask[i])) <= 40) aligned++;
        }
        Assert.True(changed > 0.02 * valid, $"the deformation moved only {changed} of {valid} labels");
        Assert.True(aligned >= 0.99 * valid, $"image and mask agree at {aligned} of {valid} pixels");
    }

    [Fact]
    public void Pixels_from_outside_get_the_ignore_label()
    {
        var s = Bands(48);
        var moved = new ElasticDeformation(alpha: 2000, sigma: 6, probability: 1).Apply(s, new Random(1), 255);
        Assert.Contains(moved.Mask, v => v == 255);
        for (int i = 0; i < moved.Mask.Length; i++)
            if (moved.Mask[i] == 255) Assert.True(moved.Image.Pixels[i] <= 160, "outside pixels are black or blended towards black");
    }

    [Fact]
    public void The_augmentation_text_builds_the_steps_in_order_with_their_arguments()
    {
        var pipeline = Augmentations.Parse("scale(0.5,2) crop(64) hflip vflip(p=0.2) rot90 elastic(alpha=34,sigma=4) jitter(0.2) noise(8) blur(1.5, p=0.1) rotate(15)");
        Assert.Equal(new[] { typeof(RandomScale), typeof(RandomCrop), typeof(HorizontalFlip), typeof(VerticalFlip), typeof(RandomRotate90), typeof(ElasticDeformation), typeof(ColorJitter), typeof(GaussianNoise), typeof(GaussianBlur), typeof(RandomRotation) },
            pipeline.Transforms.Select(t => t.GetType()));
        var sample = pipeline.Apply(Bands(), new Random(2), 255);
        Assert.Equal((64, 64), (sample.Width, sample.Height));
        Assert.Empty(Augmentations.Parse("").Transforms);
    }

    [Theory]
    [InlineData("flip", "'flip' is not one of")]
    [InlineData("crop", "crop needs h")]
    [InlineData("crop(abc)", "'abc' is not a number")]
    [InlineData("hflip(q=0.5)", "'q=0.5' is not one of its arguments")]
    [InlineData("scale(0.5,2) %", "cannot read '%'")]
    public void Bad_augmentation_text_says_what_is_wrong(string text, string expected)
    {
        var e = Assert.Throws<OptionsException>(() => Augmentations.Parse(text));
        Assert.Contains(expected, e.Message);
    }
}
