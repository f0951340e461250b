using Segmentation.Data;
using Segmentation.Models;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>A validation picture: image | truth | prediction | errors, side by side, RGB, H x W x 3 bytes.</summary>
/// <param name="Name">The sample's name.</param>
/// <param name="Width">Width of the whole panel.</param>
/// <param name="Height">Height of the panel.</param>
/// <param name="Rgb">The pixels, row-major, 3 bytes each.</param>
public sealed record Preview(string Name, int Width, int Height, byte[] Rgb);

/// <summary>Renders <see cref="Preview"/>s of a model's predictions on the first validation samples.</summary>
internal static class Previews
{
    /// <summary>White pixels between the four pictures of a panel.</summary>
    internal const int Gap = 4;
    private const int MinHeight = 128;
    internal static readonly Rgb Ignored = new(220, 220, 220), Wrong = new(230, 30, 30), Right = new(20, 20, 20);

    private static readonly Rgb[] WrongCandidates = { Wrong, new(255, 0, 255), new(0, 230, 255), new(255, 220, 0),
        new(0, 200, 0), new(255, 128, 0) };

    /// <summary>The errors panel's colour for wrong pixels: red, unless a class (or the ignored and right colours) is
    /// close to red; then the first of magenta, cyan, yellow, green and orange that none is close to.</summary>
    internal static Rgb WrongFor(IReadOnlyList<Rgb> classColors)
    {
        static bool Close(Rgb a, Rgb b) => (a.R - b.R) * (a.R - b.R) + (a.G - b.G) * (a.G - b.G)
            + (a.B - b.B) * (a.B - b.B) < 60 * 60;
        var taken = classColors.Append(Ignored).Append(Right).ToList();
        return WrongCandidates.FirstOrDefault(c => !taken.Any(t => Close(c, t)), Wrong);
    }

    /// <summary>The first <paramref name="count"/> samples of <paramref name="loader"/>'s epoch 0, predicted by
    /// <paramref name="model"/> in eval mode.</summary>
    public static IReadOnlyList<Preview> Render(SegmentationModel model, DataLoader loader,
        Normalization normalization, Device device, DatasetDescription d, int count)
    {
        var order = loader.Order(0);
        var result = new List<Preview>();
        bool training = model.training;
        model.eval();
        try
        {
            for (int i = 0; i < Math.Min(count, order.Length); i++)
            {
                using var scope = NewDisposeScope();
                using var grad = no_grad();
                var sample = loader.Prepare(order, 0, i);
                var batch = DataLoader.Collate(new[] { sample }, normalization);
                var (x, _) = batch.ToDevice(device);
                // the classes' planes only (an instance target may add planes after them)
                var labels = model.Logits(normalization.Apply(x, batch))[.., ..d.Classes].argmax(1)[0]
                    .to_type(ScalarType.Byte).cpu().data<byte>().ToArray();
                result.Add(Panel(sample.Name, sample.Image, sample.Mask, labels, d.ClassColors));
            }
        }
        finally { if (training) model.train(); }
        return result;
    }

    /// <summary>image | truth | prediction | errors (red, or another colour no class has: wrong; light grey: ignored),
    /// upscaled by a whole factor
    /// (nearest) to at least 128 pixels high.</summary>
    public static Preview Panel(string name, ImageBuffer image, byte[] truth, byte[] prediction,
        IReadOnlyList<Rgb> colors)
    {
        image = image.ForDisplay();
        int w = image.Width, h = image.Height, s = Math.Max(1, (MinHeight + h - 1) / h);
        int pw = w * s, ph = h * s, width = 4 * pw + 3 * Gap;
        var rgb = new byte[width * ph * 3];
        Array.Fill(rgb, (byte)255);
        Rgb Color(byte label) => label < colors.Count ? colors[label] : Ignored;
        var wrong = WrongFor(colors);
        Rgb[] At(int i) =>
        [
            image.Channels == 1 ? new Rgb(image.Pixels[i], image.Pixels[i], image.Pixels[i])
                : new Rgb(image.Pixels[i * image.Channels], image.Pixels[i * image.Channels + 1],
                image.Pixels[i * image.Channels + 2]),
            Color(truth[i]),
            Color(prediction[i]),
            truth[i] >= colors.Count ? Ignored : truth[i] == prediction[i] ? Right : wrong,
        ];
        for (int y = 0; y < ph; y++)
            for (int x = 0; x < pw; x++)
            {
                var px = At(y / s * w + x / s);
                for (int p = 0; p < 4; p++)
                {
                    int o = (y * width + p * (pw + Gap) + x) * 3;
                    (rgb[o], rgb[o + 1], rgb[o + 2]) = (px[p].R, px[p].G, px[p].B);
                }
            }
        return new Preview(name, width, ph, rgb);
    }
}
