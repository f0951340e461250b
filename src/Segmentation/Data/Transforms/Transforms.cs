using System.Numerics;

namespace Segmentation.Data;

/// <summary>
/// A joint transform: image and mask move together. Masks are resampled nearest-neighbour and padded with the
/// ignore index; photometric transforms change the image only. A transform draws all its randomness from the
/// <see cref="Random"/> it is given, so a seeded loader reproduces it exactly.
/// </summary>
public interface ISampleTransform
{
    /// <summary>Returns the transformed sample (a new one, or the input when nothing changes).</summary>
    Sample Apply(Sample sample, Random rng, int ignoreIndex);
}

/// <summary>Applies transforms in order.</summary>
public sealed class Compose : ISampleTransform
{
    /// <summary>The transforms, in order.</summary>
    public IReadOnlyList<ISampleTransform> Transforms { get; }

    /// <summary>Creates the pipeline.</summary>
    public Compose(params ISampleTransform[] transforms) => Transforms = transforms;

    /// <inheritdoc />
    public Sample Apply(Sample sample, Random rng, int ignoreIndex)
    {
        foreach (var t in Transforms) sample = t.Apply(sample, rng, ignoreIndex);
        return sample;
    }

    /// <summary>
    /// The usual training pipeline (as mmsegmentation's): random scale, random crop (re-drawn while one class covers
    /// more than <paramref name="catMaxRatio"/> of it), horizontal flip, photometric distortion.
    /// </summary>
    public static Compose TrainPreset(int cropHeight, int cropWidth, double minScale = 0.5, double maxScale = 2.0,
        double catMaxRatio = 0.75, bool verticalFlip = false)
    {
        var list = new List<ISampleTransform>();
        if (minScale != 1 || maxScale != 1) list.Add(new RandomScale(minScale, maxScale));
        list.Add(new RandomCrop(cropHeight, cropWidth, catMaxRatio));
        list.Add(new HorizontalFlip());
        if (verticalFlip) list.Add(new VerticalFlip());
        list.Add(new ColorJitter(0.25, 0.25, 0.25, 0.02, probability: 0.5));
        return new Compose(list.ToArray());
    }

    /// <summary>The evaluation pipeline: nothing, or a resize to a fixed size.</summary>
    public static Compose EvalPreset(int? height = null, int? width = null)
        => height is { } h && width is { } w ? new Compose(new Resize(h, w)) : new Compose();
}

/// <summary>Resize to a fixed size, or (keep ratio) to the largest size that fits it. Bilinear image, nearest
/// mask.</summary>
public sealed class Resize : ISampleTransform
{
    private readonly int height, width;
    private readonly bool keepRatio;

    /// <summary>Creates the transform.</summary>
    public Resize(int height, int width, bool keepRatio = false)
    {
        if (height < 1 || width < 1)
            throw new OptionsException($"Resize to {width}x{height}: both sides must be positive.");
        this.height = height; this.width = width; this.keepRatio = keepRatio;
    }

    /// <inheritdoc />
    public Sample Apply(Sample s, Random rng, int ignoreIndex)
    {
        int h = height, w = width;
        if (keepRatio)
        {
            double f = Math.Min((double)height / s.Height, (double)width / s.Width);
            h = Math.Max(1, (int)Math.Round(s.Height * f)); w = Math.Max(1, (int)Math.Round(s.Width * f));
        }
        return Ops.Resize(s, w, h);
    }
}

/// <summary>Resize by a random factor drawn uniformly from [min, max].</summary>
public sealed class RandomScale : ISampleTransform
{
    private readonly double min, max;

    /// <summary>Creates the transform.</summary>
    public RandomScale(double min, double max)
    {
        if (!(min > 0 && max >= min && max <= 16))
            throw new OptionsException($"Random scale range [{min}, {max}] must satisfy 0 < min <= max <= 16.");
        this.min = min; this.max = max;
    }

    /// <inheritdoc />
    public Sample Apply(Sample s, Random rng, int ignoreIndex)
    {
        double f = min + rng.NextDouble() * (max - min);
        return Ops.Resize(s, Math.Max(1, (int)Math.Round(s.Width * f)), Math.Max(1, (int)Math.Round(s.Height * f)));
    }
}

/// <summary>
/// Random crop of a fixed size; smaller samples are padded first (image 0, mask ignore index). With
/// <c>catMaxRatio</c> &lt; 1 the crop is re-drawn (up to 10 times) while one class covers more than that share of
/// its labelled pixels (mmsegmentation's <c>cat_max_ratio</c>).
/// </summary>
public sealed class RandomCrop : ISampleTransform
{
    private readonly int height, width;
    private readonly double catMaxRatio;

    /// <summary>Creates the transform.</summary>
    public RandomCrop(int height, int width, double catMaxRatio = 1.0)
    {
        if (height < 1 || width < 1) throw new OptionsException($"Crop {width}x{height}: both sides must be positive.");
        if (!(catMaxRatio > 0 && catMaxRatio <= 1))
            throw new OptionsException($"cat_max_ratio {catMaxRatio} must be in (0, 1].");
        this.height = height; this.width = width; this.catMaxRatio = catMaxRatio;
    }

    /// <inheritdoc />
    public Sample Apply(Sample s, Random rng, int ignoreIndex)
    {
        s = Ops.PadTo(s, height, width, ignoreIndex);
        int x = 0, y = 0;
        for (int attempt = 0; attempt < 10; attempt++)
        {
            x = rng.Next(s.Width - width + 1);
            y = rng.Next(s.Height - height + 1);
            if (catMaxRatio >= 1 || Acceptable(s, x, y, ignoreIndex)) break;
        }
        return Ops.Crop(s, x, y, width, height);
    }

    private bool Acceptable(Sample s, int x0, int y0, int ignoreIndex)
    {
        Span<int> counts = stackalloc int[256];
        for (int y = y0; y < y0 + height; y++)
            foreach (var v in s.Mask.AsSpan(y * s.Width + x0, width)) counts[v]++;
        counts[ignoreIndex] = 0;
        int total = 0, max = 0, kinds = 0;
        foreach (var c in counts) { total += c; max = Math.Max(max, c); if (c > 0) kinds++; }
        return kinds > 1 && max < catMaxRatio * total;
    }
}

/// <summary>Center crop (padded with 0 / ignore index when smaller).</summary>
public sealed class CenterCrop : ISampleTransform
{
    private readonly int height, width;

    /// <summary>Creates the transform.</summary>
    public CenterCrop(int height, int width)
    {
        if (height < 1 || width < 1) throw new OptionsException($"Crop {width}x{height}: both sides must be positive.");
        this.height = height; this.width = width;
    }

    /// <inheritdoc />
    public Sample Apply(Sample s, Random rng, int ignoreIndex)
    {
        s = Ops.PadTo(s, height, width, ignoreIndex);
        return Ops.Crop(s, (s.Width - width) / 2, (s.Height - height) / 2, width, height);
    }
}

/// <summary>Mirror left–right with a probability.</summary>
public sealed class HorizontalFlip(double probability = 0.5) : ISampleTransform
{
    /// <inheritdoc />
    public Sample Apply(Sample s, Random rng, int ignoreIndex) => rng.NextDouble() < probability
        ? Ops.Remap(s, s.Width, s.Height, (x, y) => (s.Width - 1 - x, y)) : s;
}

/// <summary>Mirror top–bottom with a probability.</summary>
public sealed class VerticalFlip(double probability = 0.5) : ISampleTransform
{
    /// <inheritdoc />
    public Sample Apply(Sample s, Random rng, int ignoreIndex) => rng.NextDouble() < probability
        ? Ops.Remap(s, s.Width, s.Height, (x, y) => (x, s.Height - 1 - y)) : s;
}

/// <summary>Rotate by 0, 90, 180 or 270 degrees, chosen uniformly (with a probability of rotating at all).</summary>
public sealed class RandomRotate90(double probability = 1.0) : ISampleTransform
{
    /// <inheritdoc />
    public Sample Apply(Sample s, Random rng, int ignoreIndex)
    {
        if (rng.NextDouble() >= probability) return s;
        int k = rng.Next(4);
        int w = s.Width, h = s.Height;
        return k switch
        {
            1 => Ops.Remap(s, h, w, (x, y) => (y, h - 1 - x)),   // 90° clockwise: output (x, y) reads input (y, H-1-x)
            2 => Ops.Remap(s, w, h, (x, y) => (w - 1 - x, h - 1 - y)),
            3 => Ops.Remap(s, h, w, (x, y) => (w - 1 - y, x)),
            _ => s,
        };
    }
}

/// <summary>Rotate by a small random angle in [-max, max] degrees about the centre; bilinear image (0 outside), nearest
/// mask (ignore index outside).</summary>
public sealed class RandomRotation : ISampleTransform
{
    private readonly double maxDegrees, probability;

    /// <summary>Creates the transform.</summary>
    public RandomRotation(double maxDegrees, double probability = 0.5)
    {
        if (!(maxDegrees >= 0 && maxDegrees <= 180))
            throw new OptionsException($"Rotation of {maxDegrees} degrees: it must be between 0 and 180.");
        this.maxDegrees = maxDegrees; this.probability = probability;
    }

    /// <inheritdoc />
    public Sample Apply(Sample s, Random rng, int ignoreIndex)
    {
        if (rng.NextDouble() >= probability) return s;
        double a = (rng.NextDouble() * 2 - 1) * maxDegrees * Math.PI / 180;
        return Ops.Rotate(s, a, ignoreIndex);
    }
}

/// <summary>
/// Elastic deformation (Simard et al. 2003; the U-Net paper's main augmentation): a displacement field of uniform noise
/// in [-1, 1] per pixel, smoothed by a normalised Gaussian of <paramref name="sigma"/> pixels and multiplied by
/// <paramref name="alpha"/> (as albumentations' ElasticTransform and scipy's gaussian_filter do it: alpha 34, sigma 4
/// moves pixels by about 1.4 px RMS, alpha 300, sigma 10 by about 5), moves image (bilinear) and mask (nearest)
/// together; what comes from outside is 0 in the image and the ignore label in the mask.
/// </summary>
public sealed class ElasticDeformation(double alpha = 34, double sigma = 4, double probability = 0.5) : ISampleTransform
{
    /// <inheritdoc />
    public Sample Apply(Sample s, Random rng, int ignoreIndex)
    {
        if (!(alpha >= 0) || !(sigma > 0))
            throw new OptionsException($"Elastic deformation needs alpha >= 0 and sigma > 0; got alpha {alpha}, sigma "
                + $"{sigma}.");
        if (rng.NextDouble() >= probability) return s;
        int w = s.Width, h = s.Height;
        double[] Field() => Ops.Smooth(Enumerable.Range(0, w * h).Select(_ => rng.NextDouble() * 2 - 1).ToArray(), w,
            h, sigma);
        var dx = Field();
        var dy = Field();
        return Ops.Warp(s, (x, y) => (x + dx[y * w + x] * alpha, y + dy[y * w + x] * alpha), ignoreIndex);
    }
}

/// <summary>Random brightness, contrast, saturation and hue changes (image only), each factor drawn in [1-x, 1+x] (hue:
/// shift in [-x, x] turns).</summary>
public sealed class ColorJitter : ISampleTransform
{
    private readonly double brightness, contrast, saturation, hue, probability;

    /// <summary>Creates the transform.</summary>
    public ColorJitter(double brightness = 0.2, double contrast = 0.2, double saturation = 0.2, double hue = 0.0,
        double probability = 1.0)
    {
        if (brightness < 0 || contrast < 0 || saturation < 0 || hue < 0 || hue > 0.5)
            throw new OptionsException($"Colour jitter ({brightness}, {contrast}, {saturation}, {hue}): amounts must "
                + $"be non-negative and hue at most 0.5.");
        this.brightness = brightness; this.contrast = contrast; this.saturation = saturation; this.hue =
            hue; this.probability = probability;
    }

    /// <inheritdoc />
    public Sample Apply(Sample s, Random rng, int ignoreIndex)
    {
        if (rng.NextDouble() >= probability) return s;
        double b = 1 + (rng.NextDouble() * 2 - 1) * brightness;
        double c = 1 + (rng.NextDouble() * 2 - 1) * contrast;
        double sat = 1 + (rng.NextDouble() * 2 - 1) * saturation;
        double h = (rng.NextDouble() * 2 - 1) * hue;
        return s.WithImage(Ops.Run(s.Image, s.Width, s.Height, new Jitter(b, c, sat, h, s.Image.Channels)));
    }

    private readonly record struct Jitter(double B, double C, double Sat, double Hue, int Ch) : Ops.IKernel
    {
        public void Run<T>(T[] p, T[] q, double full) where T : unmanaged, INumber<T>
        {
            int n = p.Length / Ch;
            double mean = 0;
            for (int i = 0; i < p.Length; i++) mean += double.CreateTruncating(p[i]);
            mean = mean / p.Length * B;
            double cos = Math.Cos(Hue * 2 * Math.PI), sin = Math.Sin(Hue * 2 * Math.PI);
            for (int i = 0; i < n; i++)
            {
                int o = i * Ch, first = 0;
                if (Ch >= 3)
                {
                    double r = double.CreateTruncating(p[o]) * B, g = double.CreateTruncating(p[o + 1]) * B,
                        bl = double.CreateTruncating(p[o + 2]) * B;
                    r = (r - mean) * C + mean; g = (g - mean) * C + mean; bl = (bl - mean) * C + mean;
                    double y = 0.299 * r + 0.587 * g + 0.114 * bl;
                    r = y + (r - y) * Sat; g = y + (g - y) * Sat; bl = y + (bl - y) * Sat;
                    if (Hue != 0)
                    {
                        // Rotate chroma in YIQ space.
                        double ii = 0.596 * r - 0.274 * g - 0.322 * bl, qq = 0.211 * r - 0.523 * g + 0.312 * bl;
                        double i2 = ii * cos - qq * sin, q2 = ii * sin + qq * cos;
                        r = y + 0.956 * i2 + 0.621 * q2; g = y - 0.272 * i2 - 0.647 * q2;
                        bl = y - 1.106 * i2 + 1.703 * q2;
                    }
                    q[o] = Ops.Store<T>(r, full); q[o + 1] = Ops.Store<T>(g, full); q[o + 2] = Ops.Store<T>(bl, full);
                    first = 3;
                }
                for (int k = first; k < Ch; k++)
                    q[o + k] = Ops.Store<T>((double.CreateTruncating(p[o + k]) * B - mean) * C + mean, full);
            }
        }
    }
}

/// <summary>Additive Gaussian noise on the image (std in 0-255 units: a 16-bit image gets the same share of its full
/// scale).</summary>
public sealed class GaussianNoise(double std = 8, double probability = 0.5) : ISampleTransform
{
    /// <inheritdoc />
    public Sample Apply(Sample s, Random rng, int ignoreIndex)
    {
        if (rng.NextDouble() >= probability) return s;
        return s.WithImage(Ops.Run(s.Image, s.Width, s.Height, new Noise(std, rng)));
    }

    private readonly record struct Noise(double Std, Random Rng) : Ops.IKernel
    {
        public void Run<T>(T[] p, T[] q, double full) where T : unmanaged, INumber<T>
        {
            double std = Std * (full / 255);
            for (int i = 0; i < p.Length; i++)
                q[i] = Ops.Store<T>(double.CreateTruncating(p[i]) + std * Math.Sqrt(-2 * Math.Log(1
                    - Rng.NextDouble())) * Math.Cos(2 * Math.PI * Rng.NextDouble()), full);
        }
    }
}

/// <summary>Gaussian blur of the image with sigma drawn in [0.1, maxSigma].</summary>
public sealed class GaussianBlur(double maxSigma = 1.5, double probability = 0.5) : ISampleTransform
{
    /// <inheritdoc />
    public Sample Apply(Sample s, Random rng, int ignoreIndex)
    {
        if (rng.NextDouble() >= probability) return s;
        double sigma = 0.1 + rng.NextDouble() * Math.Max(0, maxSigma - 0.1);
        int radius = Math.Max(1, (int)Math.Ceiling(2.5 * sigma));
        var k = new double[2 * radius + 1];
        double sum = 0;
        for (int i = -radius; i <= radius; i++) sum += k[i + radius] = Math.Exp(-i * i / (2 * sigma * sigma));
        for (int i = 0; i < k.Length; i++) k[i] /= sum;
        return s.WithImage(Ops.Run(s.Image, s.Width, s.Height, new Blur(k, s.Width, s.Height, s.Image.Channels)));
    }

    private readonly record struct Blur(double[] K, int W, int H, int Ch) : Ops.IKernel
    {
        public void Run<T>(T[] src, T[] dst, double full) where T : unmanaged, INumber<T>
        {
            int radius = K.Length / 2, w = W, h = H, ch = Ch;
            var tmp = new double[src.Length];
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    for (int c = 0; c < ch; c++)
                    {
                        double acc = 0;
                        for (int i = -radius; i <= radius; i++) acc += K[i + radius]
                            * double.CreateTruncating(src[(y * w + Math.Clamp(x + i, 0, w - 1)) * ch + c]);
                        tmp[(y * w + x) * ch + c] = acc;
                    }
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    for (int c = 0; c < ch; c++)
                    {
                        double acc = 0;
                        for (int i = -radius; i <= radius; i++) acc += K[i + radius]
                            * tmp[(Math.Clamp(y + i, 0, h - 1) * w + x) * ch + c];
                        dst[(y * w + x) * ch + c] = Ops.Store<T>(acc, full);
                    }
        }
    }
}

/// <summary>Pixel operations shared by the transforms, at either sample depth (8 or 16 bits: <see
/// cref="IKernel"/>).</summary>
internal static class Ops
{
    public static byte Clamp(double v) => v <= 0 ? (byte)0 : v >= 255 ? (byte)255 : (byte)(v + 0.5);

    /// <summary>A value rounded to the nearest sample and clamped to [0, <paramref name="full"/>] (NaN: 0).</summary>
    public static T Store<T>(double v, double full) where T : unmanaged, INumber<T> =>
        !(v > 0) ? T.Zero : v >= full ? T.CreateTruncating(full) : T.CreateTruncating(v + 0.5);

    /// <summary>Pixel work written once for both depths: an image's samples in, a new image's of the same depth out,
    /// with the depth's full scale (255 or 65535).</summary>
    public interface IKernel
    {
        /// <summary>Fills <paramref name="dst"/> from <paramref name="src"/>.</summary>
        void Run<T>(T[] src, T[] dst, double full) where T : unmanaged, INumber<T>;
    }

    /// <summary>A new <paramref name="w"/> x <paramref name="h"/> image at <paramref name="image"/>'s depth and
    /// channels, filled by <paramref name="kernel"/>.</summary>
    public static ImageBuffer Run<TKernel>(ImageBuffer image, int w, int h, TKernel kernel) where TKernel : IKernel
    {
        var dst = image.Blank(w, h, image.Channels);
        if (image.Pixels16 is { } wide) kernel.Run(wide, dst.Pixels16!, ushort.MaxValue);
        else kernel.Run(image.Pixels, dst.Pixels, byte.MaxValue);
        return dst;
    }

    /// <summary>Bilinear image (half-pixel centres, as align_corners=False), nearest mask.</summary>
    public static Sample Resize(Sample s, int w, int h)
    {
        if (w == s.Width && h == s.Height) return s;
        int sw = s.Width, sh = s.Height;
        var mask = new byte[w * h];
        var inst = s.Instances is null ? null : new ushort[w * h];
        double fx = (double)sw / w, fy = (double)sh / h;
        for (int y = 0; y < h; y++)
        {
            int ny = Math.Min((int)((y + 0.5) * fy), sh - 1);
            for (int x = 0; x < w; x++)
            {
                int nx = Math.Min((int)((x + 0.5) * fx), sw - 1);
                mask[y * w + x] = s.Mask[ny * sw + nx];
                if (inst is not null) inst[y * w + x] = s.Instances![ny * sw + nx];
            }
        }
        return s.Transformed(Run(s.Image, w, h, new Bilinear(sw, sh, w, h, s.Image.Channels)), mask, inst);
    }

    private readonly record struct Bilinear(int Sw, int Sh, int W, int H, int Ch) : IKernel
    {
        public void Run<T>(T[] src, T[] dst, double full) where T : unmanaged, INumber<T>
        {
            int sw = Sw, sh = Sh, w = W, h = H, ch = Ch;
            double fx = (double)sw / w, fy = (double)sh / h;
            var x0s = new int[w]; var x1s = new int[w]; var wxs = new double[w];
            for (int x = 0; x < w; x++)
            {
                double sx = Math.Max(0, (x + 0.5) * fx - 0.5);
                int x0 = Math.Min((int)sx, sw - 1);
                x0s[x] = x0; x1s[x] = Math.Min(x0 + 1, sw - 1); wxs[x] = sx - x0;
            }
            for (int y = 0; y < h; y++)
            {
                double sy = Math.Max(0, (y + 0.5) * fy - 0.5);
                int y0 = Math.Min((int)sy, sh - 1), y1 = Math.Min(y0 + 1, sh - 1);
                double wy = sy - y0;
                int r0 = y0 * sw, r1 = y1 * sw;
                for (int x = 0; x < w; x++)
                {
                    double wx = wxs[x];
                    int a = (r0 + x0s[x]) * ch, b = (r0 + x1s[x]) * ch, c = (r1 + x0s[x]) * ch, d = (r1 + x1s[x]) * ch;
                    int o = (y * w + x) * ch;
                    for (int k = 0; k < ch; k++)
                    {
                        double pa = double.CreateTruncating(src[a + k]), pb = double.CreateTruncating(src[b + k]);
                        double pc = double.CreateTruncating(src[c + k]), pd = double.CreateTruncating(src[d + k]);
                        double top = pa + (pb - pa) * wx, bottom = pc + (pd - pc) * wx;
                        dst[o + k] = Store<T>(top + (bottom - top) * wy, full);
                    }
                }
            }
        }
    }

    public static Sample PadTo(Sample s, int h, int w, int ignoreIndex)
    {
        if (s.Width >= w && s.Height >= h) return s;
        int nw = Math.Max(w, s.Width), nh = Math.Max(h, s.Height), ch = s.Image.Channels;
        var img = s.Image.Blank(nw, nh, ch);
        var mask = new byte[nw * nh];
        Array.Fill(mask, (byte)ignoreIndex);
        var inst = s.Instances is null ? null : new ushort[nw * nh];
        for (int y = 0; y < s.Height; y++)
        {
            Array.Copy(s.Image.Samples, y * s.Width * ch, img.Samples, y * nw * ch, s.Width * ch);
            Array.Copy(s.Mask, y * s.Width, mask, y * nw, s.Width);
            if (inst is not null) Array.Copy(s.Instances!, y * s.Width, inst, y * nw, s.Width);
        }
        return s.Transformed(img, mask, inst);
    }

    public static Sample Crop(Sample s, int x0, int y0, int w, int h)
    {
        if (x0 == 0 && y0 == 0 && w == s.Width && h == s.Height) return s;
        int ch = s.Image.Channels;
        var img = s.Image.Blank(w, h, ch);
        var mask = new byte[w * h];
        var inst = s.Instances is null ? null : new ushort[w * h];
        for (int y = 0; y < h; y++)
        {
            Array.Copy(s.Image.Samples, ((y0 + y) * s.Width + x0) * ch, img.Samples, y * w * ch, w * ch);
            Array.Copy(s.Mask, (y0 + y) * s.Width + x0, mask, y * w, w);
            if (inst is not null) Array.Copy(s.Instances!, (y0 + y) * s.Width + x0, inst, y * w, w);
        }
        return s.Transformed(img, mask, inst);
    }

    /// <summary>Output (x, y) takes input at map(x, y): exact pixel moves (flips, 90° rotations).</summary>
    public static Sample Remap(Sample s, int w, int h, Func<int, int, (int X, int Y)> map)
    {
        var mask = new byte[w * h];
        var inst = s.Instances is null ? null : new ushort[w * h];
        var sources = new int[w * h];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                var (sx, sy) = map(x, y);
                int si = sy * s.Width + sx, di = y * w + x;
                sources[di] = si;
                mask[di] = s.Mask[si];
                if (inst is not null) inst[di] = s.Instances![si];
            }
        return s.Transformed(Run(s.Image, w, h, new Gather(sources, s.Image.Channels)), mask, inst);
    }

    /// <summary>Output pixel i takes input pixel <c>Sources[i]</c>, every channel.</summary>
    private readonly record struct Gather(int[] Sources, int Ch) : IKernel
    {
        public void Run<T>(T[] src, T[] dst, double full) where T : unmanaged, INumber<T>
        {
            int ch = Ch;
            for (int di = 0; di < Sources.Length; di++)
                for (int k = 0; k < ch; k++) dst[di * ch + k] = src[Sources[di] * ch + k];
        }
    }

    public static Sample Rotate(Sample s, double radians, int ignoreIndex)
    {
        double cx = (s.Width - 1) / 2.0, cy = (s.Height - 1) / 2.0, cos = Math.Cos(radians), sin = Math.Sin(radians);
        return Warp(s, (x, y) => (cos * (x - cx) + sin * (y - cy) + cx, -sin * (x - cx) + cos * (y - cy) + cy),
            ignoreIndex);
    }

    /// <summary>
    /// Output (x, y) takes the input at <paramref name="source"/>(x, y): the image bilinearly (0 outside), the mask
    /// from the nearest pixel (the ignore label outside), so image and mask move together.
    /// </summary>
    public static Sample Warp(Sample s, Func<int, int, (double X, double Y)> source, int ignoreIndex)
    {
        int w = s.Width, h = s.Height;
        var mask = new byte[w * h];
        var inst = s.Instances is null ? null : new ushort[w * h];
        var at = new (double X, double Y)[w * h];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                var (sx, sy) = at[y * w + x] = source(x, y);
                int di = y * w + x;
                int rx = (int)Math.Round(sx), ry = (int)Math.Round(sy);
                bool inside = rx >= 0 && rx < w && ry >= 0 && ry < h;
                mask[di] = inside ? s.Mask[ry * w + rx] : (byte)ignoreIndex;
                if (inst is not null && inside) inst[di] = s.Instances![ry * w + rx];
            }
        return s.Transformed(Run(s.Image, w, h, new Sampled(at, w, h, s.Image.Channels)), mask, inst);
    }

    /// <summary>Output pixel i is the input bilinearly at <c>At[i]</c> (0 beyond half a pixel outside).</summary>
    private readonly record struct Sampled((double X, double Y)[] At, int W, int H, int Ch) : IKernel
    {
        public void Run<T>(T[] src, T[] dst, double full) where T : unmanaged, INumber<T>
        {
            int w = W, h = H, ch = Ch;
            for (int di = 0; di < At.Length; di++)
            {
                var (sx, sy) = At[di];
                if (sx < -0.5 || sy < -0.5 || sx > w - 0.5 || sy > h - 0.5) continue;
                int x0 = Math.Clamp((int)Math.Floor(sx), 0, w - 1), y0 = Math.Clamp((int)Math.Floor(sy), 0, h - 1);
                int x1 = Math.Min(x0 + 1, w - 1), y1 = Math.Min(y0 + 1, h - 1);
                double fx = Math.Clamp(sx - x0, 0, 1), fy = Math.Clamp(sy - y0, 0, 1);
                for (int k = 0; k < ch; k++)
                {
                    double top = double.CreateTruncating(src[(y0 * w + x0) * ch + k]) * (1 - fx)
                        + double.CreateTruncating(src[(y0 * w + x1) * ch + k]) * fx;
                    double bottom = double.CreateTruncating(src[(y1 * w + x0) * ch + k]) * (1 - fx)
                        + double.CreateTruncating(src[(y1 * w + x1) * ch + k]) * fx;
                    dst[di * ch + k] = Store<T>(top * (1 - fy) + bottom * fy, full);
                }
            }
        }
    }

    /// <summary>Separable Gaussian smoothing of a w x h field (edges clamped).</summary>
    public static double[] Smooth(double[] field, int w, int h, double sigma)
    {
        int r = Math.Max(1, (int)Math.Ceiling(3 * sigma));
        var kernel = Enumerable.Range(-r, 2 * r + 1).Select(i => Math.Exp(-i * i / (2 * sigma * sigma))).ToArray();
        double norm = kernel.Sum();
        var tmp = new double[field.Length];
        var result = new double[field.Length];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                double acc = 0;
                for (int i = -r; i <= r; i++) acc += kernel[i + r] * field[y * w + Math.Clamp(x + i, 0, w - 1)];
                tmp[y * w + x] = acc / norm;
            }
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                double acc = 0;
                for (int i = -r; i <= r; i++) acc += kernel[i + r] * tmp[Math.Clamp(y + i, 0, h - 1) * w + x];
                result[y * w + x] = acc / norm;
            }
        return result;
    }
}
