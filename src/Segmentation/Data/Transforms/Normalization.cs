using Segmentation.Shared;
using static TorchSharp.torch;

namespace Segmentation.Data;

/// <summary>How an image's intensities are brought to a common range before the per-channel mean and std.</summary>
public enum NormalizationScheme
{
    /// <summary>One mean and std per channel for every image (ImageNet's, the data set's, or symmetric).</summary>
    Fixed,
    /// <summary>Per image: the low and high percentiles of its pixels map to 0 and 1 (StarDist's 1 and 99.8), not
    /// clipped. For microscopy, whose images differ in exposure and stain.</summary>
    Percentile,
    /// <summary>Per image: zero mean and unit standard deviation (nnU-Net's for non-CT images).</summary>
    ZScore,
}

/// <summary>
/// Input normalisation of a uint8 batch, done on the batch tensor's device: a per-image step (<see cref="Scheme"/>,
/// from each whole image's histogram, <see cref="IntensityLevels"/>), then per-channel mean and std. Recorded in
/// checkpoints and in the ONNX model's metadata, and applied alike by the trainer, the predictor and
/// <c>Segmentation.Onnx</c>.
/// </summary>
public sealed record Normalization(float[] Mean, float[] Std)
{
    /// <summary>The per-image step before the mean and std (default none: <see
    /// cref="NormalizationScheme.Fixed"/>).</summary>
    public NormalizationScheme Scheme { get; init; } = NormalizationScheme.Fixed;
    /// <summary><see cref="NormalizationScheme.Percentile"/>: the percentile that maps to 0.</summary>
    public double LowPercentile { get; init; } = IntensityLevels.DefaultLow;
    /// <summary><see cref="NormalizationScheme.Percentile"/>: the percentile that maps to 1.</summary>
    public double HighPercentile { get; init; } = IntensityLevels.DefaultHigh;

    /// <summary>Bits a sample of the training images: 8, or 16 when any was 16-bit. A record: the model takes either
    /// depth, each sample as a share of its full scale (255 or 65535), so that a 16-bit image keeps every level its
    /// 8-bit copy would round away.</summary>
    public int ImageBits { get; init; } = 8;

    /// <summary>ImageNet statistics (RGB).</summary>
    public static Normalization ImageNet { get; } = new(new[] { 0.485f, 0.456f, 0.406f },
        new[] { 0.229f, 0.224f, 0.225f });

    /// <summary>Maps [0, 255] to about [-1, 1] for every channel.</summary>
    public static Normalization Symmetric(int channels) => new(Enumerable.Repeat(0.5f, channels).ToArray(),
        Enumerable.Repeat(0.5f, channels).ToArray());

    /// <summary>ImageNet for 3 channels, symmetric otherwise.</summary>
    public static Normalization DefaultFor(int channels) => channels == 3 ? ImageNet : Symmetric(channels);

    /// <summary>StarDist's per-image percentile normalisation (1 to 99.8), for <paramref name="channels"/>.</summary>
    public static Normalization Percentiles(int channels, double low = IntensityLevels.DefaultLow,
        double high = IntensityLevels.DefaultHigh) => new(new float[channels], Enumerable.Repeat(1f, channels)
            .ToArray())
        { Scheme = NormalizationScheme.Percentile, LowPercentile = low, HighPercentile = high };

    /// <summary>Per-image z-score, for <paramref name="channels"/>.</summary>
    public static Normalization ZScore(int channels) => new(new float[channels],
        Enumerable.Repeat(1f, channels).ToArray()) { Scheme = NormalizationScheme.ZScore };

    /// <summary>The scheme as <see cref="IntensityLevels"/> and the ONNX metadata name it.</summary>
    internal string SchemeName => Scheme switch
    {
        NormalizationScheme.Percentile => IntensityLevels.Percentile,
        NormalizationScheme.ZScore => IntensityLevels.ZScore,
        _ => IntensityLevels.Fixed,
    };

    /// <summary>"mean [..], std [..]", after the per-image step if there is one, as the CLI reports it.</summary>
    public override string ToString()
    {
        var fixedPart = $"mean [{string.Join(", ", Mean)}], std [{string.Join(", ", Std)}]";
        return Scheme switch
        {
            NormalizationScheme.Percentile => string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"per-image percentiles {LowPercentile:G4}-{HighPercentile:G4} to 0-1, then {fixedPart}"),
            NormalizationScheme.ZScore => $"per-image z-score, then {fixedPart}",
            _ => fixedPart,
        };
    }

    /// <summary>The per-image offset and scale of one sample (units of its depth's full scale), from its whole
    /// image.</summary>
    public (float Offset, float Scale) LevelsOf(Sample sample) => Scheme == NormalizationScheme.Fixed ? (0f, 1f)
        : IntensityLevels.Of(SchemeName, sample.Histogram, LowPercentile, HighPercentile, sample.Image.FullScale);

    /// <summary>Throws <see cref="OptionsException"/> for a record that cannot normalise
    /// <paramref name="channels"/>.</summary>
    public void Validate(int channels)
    {
        if (Mean.Length != channels || Std.Length != channels)
            throw new OptionsException($"Normalisation has {Mean.Length} means and {Std.Length} stds for a batch of "
                + $"{channels} channels.");
        if (Std.Any(s => !(s > 0) || float.IsInfinity(s)))
            throw new OptionsException($"Normalisation stds must be positive numbers; got std "
                + $"[{string.Join(", ", Std)}].");
        if (!Enum.IsDefined(Scheme))
            throw new OptionsException($"Normalisation scheme {(int)Scheme} is not one of fixed, percentile, zscore.");
        if (Scheme == NormalizationScheme.Percentile && !(LowPercentile >= 0 && HighPercentile <= 100
            && LowPercentile < HighPercentile))
            throw new OptionsException($"Normalisation percentiles {LowPercentile} and {HighPercentile}: expected 0 <= "
                + $"low < high <= 100.");
    }

    /// <summary>Float N x C x H x W of a fixed-scheme batch: (x / full - mean) / std, on <paramref name="images"/>'s
    /// device; full is 255 for a uint8 batch (8-bit images) and 65535 for an int32 one (16-bit images). A per-image
    /// scheme needs each image's levels: <see cref="Apply(Tensor, HostBatch)"/>.</summary>
    public Tensor Apply(Tensor images) => Scheme == NormalizationScheme.Fixed ? Apply(images, (float[]?)null)
        : throw new InvalidOperationException($"{Scheme} normalisation needs each image's levels (the HostBatch).");

    /// <summary>Float N x C x H x W of a batch, with each image's levels as the loader took them from the whole
    /// image.</summary>
    internal Tensor Apply(Tensor images, HostBatch batch) => Apply(images, batch.Levels);

    /// <summary>The full scale of a batch's samples: 255 for uint8 (8-bit images), 65535 for int32 (16-bit images,
    /// <see cref="HostBatch.ToDevice"/>).</summary>
    internal static float FullScaleOf(Tensor images) => images.dtype switch
    {
        ScalarType.Byte => byte.MaxValue,
        ScalarType.Int32 => ushort.MaxValue,
        var t => throw new ArgumentException($"An image batch of {t}; expected uint8 (8-bit images) or int32 (16-bit "
            + "images)."),
    };

    private Tensor Apply(Tensor images, float[]? levels)
    {
        long n = images.shape[0], c = images.shape[1];
        Validate((int)c);
        using var mean = tensor(Mean, device: images.device).view(1, c, 1, 1);
        using var std = tensor(Std, device: images.device).view(1, c, 1, 1);
        using var scaled = images.to_type(ScalarType.Float32).div_(FullScaleOf(images));
        if (Scheme != NormalizationScheme.Fixed)
        {
            if (levels is null || levels.Length != 2 * n)
                throw new InvalidOperationException($"{Scheme} normalisation of {n} images got "
                    + $"{levels?.Length ?? 0} levels; expected an offset and a scale per image.");
            using var offsets = tensor(levels.Where((_, i) => i % 2 == 0).ToArray(), device: images.device)
                .view(n, 1, 1, 1);
            using var scales = tensor(levels.Where((_, i) => i % 2 == 1).ToArray(), device: images.device)
                .view(n, 1, 1, 1);
            scaled.sub_(offsets).div_(scales);
        }
        return scaled.sub(mean).div_(std);
    }
}
