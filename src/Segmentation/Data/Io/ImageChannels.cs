using System.Collections.Concurrent;

namespace Segmentation.Data;

/// <summary>
/// Gray or colour, decided over every image of a data set, not the first: a folder whose images are all gray is
/// trained on one channel; one with any colour image is trained on three, and the report says how many of each it
/// found. A PNG stored as gray is gray from its header alone; any other file is decoded and is gray when every pixel
/// has R = G = B (microscopy saved as RGB).
/// </summary>
internal static class ImageChannels
{
    /// <summary>What the survey found: how many images of each kind, one file of each, and the channels
    /// chosen.</summary>
    public sealed record Survey(int Gray, int Colour, string? GrayExample, string? ColourExample)
    {
        /// <summary>1 when every image is gray, else 3.</summary>
        public int Channels => Colour == 0 ? 1 : 3;

        /// <summary>"1-channel images (all 30 gray)", "3-channel images (mixed: 411 gray, 121 colour, e.g. a.png and
        /// b.png; trained as colour)".</summary>
        public string Describe()
        {
            if (Colour == 0) return $"1-channel images (all {Gray} gray)";
            if (Gray == 0) return $"3-channel images (all {Colour} colour)";
            return $"3-channel images (mixed: {Gray} gray, {Colour} colour, e.g. {Path.GetFileName(GrayExample)} and "
                + $"{Path.GetFileName(ColourExample)}; trained as colour, gray images replicated to three channels)";
        }
    }

    /// <summary>Whether every pixel of an image of three or more channels has R = G = B (one channel:
    /// always).</summary>
    public static bool AllGray(ImageBuffer image) => image.Channels < 3 || (image.Pixels16 is { } wide
        ? AllGray(wide, image.Channels) : AllGray(image.Pixels, image.Channels));

    private static bool AllGray<T>(T[] p, int channels) where T : IEquatable<T>
    {
        for (int i = 0; i + 2 < p.Length; i += channels)
            if (!p[i].Equals(p[i + 1]) || !p[i + 1].Equals(p[i + 2])) return false;
        return true;
    }

    /// <summary>Surveys every image (in parallel). Unreadable files are left to the data check, which names
    /// them.</summary>
    public static Survey Of(IReadOnlyList<string> images, ImageReader reader)
    {
        int gray = 0, colour = 0;
        var examples = new ConcurrentDictionary<bool, string>();
        Parallel.For(0, images.Count, i =>
        {
            bool? isGray;
            try { isGray = reader.IsGray(images[i]); }
            catch (DataException) { isGray = null; }
            if (isGray is not { } g) return;
            Interlocked.Increment(ref g ? ref gray : ref colour);
            examples.AddOrUpdate(g, images[i], (_, old) => string.CompareOrdinal(old, images[i]) <= 0 ? old
                : images[i]);
        });
        return new Survey(gray, colour, examples.GetValueOrDefault(true), examples.GetValueOrDefault(false));
    }
}
