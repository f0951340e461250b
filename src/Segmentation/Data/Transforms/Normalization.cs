using static TorchSharp.torch;

namespace Segmentation.Data;

/// <summary>Per-channel mean/std normalisation of a uint8 batch, done on the batch tensor's device.</summary>
public sealed record Normalization(float[] Mean, float[] Std)
{
    /// <summary>ImageNet statistics (RGB).</summary>
    public static Normalization ImageNet { get; } = new(new[] { 0.485f, 0.456f, 0.406f },
        new[] { 0.229f, 0.224f, 0.225f });

    /// <summary>Maps [0, 255] to about [-1, 1] for every channel.</summary>
    public static Normalization Symmetric(int channels) => new(Enumerable.Repeat(0.5f, channels).ToArray(),
        Enumerable.Repeat(0.5f, channels).ToArray());

    /// <summary>ImageNet for 3 channels, symmetric otherwise.</summary>
    public static Normalization DefaultFor(int channels) => channels == 3 ? ImageNet : Symmetric(channels);

    /// <summary>"mean [..], std [..]", as the CLI reports it.</summary>
    public override string ToString() => $"mean [{string.Join(", ", Mean)}], std [{string.Join(", ", Std)}]";

    /// <summary>Float N x C x H x W: (x / 255 - mean) / std, on <paramref name="images"/>'s device.</summary>
    public Tensor Apply(Tensor images)
    {
        long c = images.shape[1];
        if (Mean.Length != c || Std.Length != c)
            throw new OptionsException($"Normalisation has {Mean.Length} means and {Std.Length} stds for a batch of "
                + $"{c} channels.");
        if (Std.Any(s => !(s > 0)))
            throw new OptionsException($"Normalisation stds must be positive; got [{string.Join(", ", Std)}].");
        using var mean = tensor(Mean, device: images.device).view(1, c, 1, 1);
        using var std = tensor(Std, device: images.device).view(1, c, 1, 1);
        using var scaled = images.to_type(ScalarType.Float32).div_(255f);
        return scaled.sub(mean).div_(std);
    }
}
