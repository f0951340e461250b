using System.Globalization;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

using Segmentation.Shared;

namespace Segmentation.Onnx;

/// <summary>How an <see cref="OnnxPredictor"/> runs a model.</summary>
public sealed record OnnxPredictorOptions
{
    /// <summary>Classes, for a model without <c>segment export</c>'s metadata (e.g. <c>torch.onnx.export</c>); else
    /// read from the model.</summary>
    public int? Classes { get; init; }
    /// <summary>Per-channel mean of (pixel / 255 - mean) / std, for a model without metadata; default 0 (pixel / 255,
    /// milesial's).</summary>
    public float[]? Mean { get; init; }
    /// <summary>Per-channel std, for a model without metadata; default 1.</summary>
    public float[]? Std { get; init; }
    /// <summary>Sliding-window height and width; null runs the whole image at once.</summary>
    public (int Height, int Width)? Window { get; init; }
    /// <summary>Sliding-window stride; null: two thirds of the window.</summary>
    public (int Height, int Width)? Stride { get; init; }
    /// <summary>Test-time augmentation: the views whose logits are averaged (mapped back onto the image) before
    /// anything is decoded; the same as the TorchSharp predictor's.</summary>
    public TestTimeAugmentation Tta { get; init; }
    /// <summary>ONNX Runtime threads within an operator (0: its default).</summary>
    public int Threads { get; init; }
    /// <summary>Instance models: seed objects where P(object) is at least this (0 to 1, open), instead of the
    /// model's metadata.</summary>
    public double? SeedThreshold { get; init; }
    /// <summary>The output to decode: "semantic" (the class map alone, from any model), "instance" (objects, from an
    /// instance or panoptic model) or "panoptic"; null: the model's own task.</summary>
    public string? Task { get; init; }
}

/// <summary>The views test-time augmentation averages; the same as the TorchSharp predictor's.</summary>
public enum TestTimeAugmentation
{
    /// <summary>The image alone.</summary>
    None,
    /// <summary>The image and its left-right mirror image (2 passes).</summary>
    Flip,
    /// <summary>The image and its three mirror images: left-right, up-down and both (4 passes).</summary>
    Flips,
    /// <summary>The four of <see cref="Flips"/> and their transposes: the eight symmetries of the square (8
    /// passes).</summary>
    Dihedral,
}

/// <summary>How an instance model's logits become objects (the model's metadata).</summary>
/// <param name="Things">For each class before the last (the boundary): whether it is a thing class.</param>
/// <param name="MinSize">Smallest object kept, in pixels.</param>
/// <param name="MinSeedSize">Smallest interior region that seeds an object, in pixels.</param>
/// <param name="Panoptic">Whether stuff classes are predicted beside the objects (a class map comes with
/// them).</param>
/// <param name="SeedThreshold">Seeds where P(thing) is at least this; null: where the best class is a thing. With
/// <paramref name="Distance"/>: where the distance is at least this (null: 0.5).</param>
/// <param name="Distance">Whether the model gives a distance plane after the classes (the distance target): objects
/// are then seeded from and flooded by it.</param>
public sealed record OnnxInstanceDecoding(bool[] Things, int MinSize, int MinSeedSize, bool Panoptic = false,
    double? SeedThreshold = null, bool Distance = false)
{
    /// <summary>Mask classifiers (Mask2Former): the decoding of their per-query outputs; null for per-pixel
    /// models.</summary>
    public OnnxMaskDecoding? Queries { get; init; }
}

/// <summary>How a mask classifier's per-query outputs become objects and segments (transformers'
/// post-processing).</summary>
/// <param name="Threshold">The least instance score, and the least class probability of a panoptic segment's
/// query.</param>
/// <param name="MaskThreshold">The mask probability of a panoptic query's own pixels.</param>
/// <param name="Overlap">The share of its own pixels a panoptic query must keep.</param>
/// <param name="Fuse">The classes that are one panoptic segment each (the stuff classes).</param>
public sealed record OnnxMaskDecoding(float Threshold, float MaskThreshold, float Overlap, int[] Fuse);

/// <summary>The objects of one image.</summary>
/// <param name="Objects">An object number per pixel (0: none), row by row.</param>
/// <param name="Count">Objects, numbered 1..Count.</param>
/// <param name="Classes">The class of object i at [i - 1].</param>
/// <param name="ClassMap">Panoptic models: a class per pixel (objects' classes, stuff classes, 255 for none); null
/// otherwise.</param>
public sealed record OnnxInstances(int[] Objects, int Count, int[] Classes, byte[]? ClassMap);

/// <summary>An image as the model reads it, H x W x C, channels interleaved: 8-bit samples (<see cref="Pixels"/>)
/// or, for a 16-bit PNG or TIFF, 16-bit ones (<see cref="Pixels16"/>), the other null. The model sees a sample as a
/// share of its depth's full scale (255 or 65535), as the TorchSharp side does.</summary>
/// <param name="Width">Columns.</param>
/// <param name="Height">Rows.</param>
/// <param name="Pixels">8-bit samples, or null.</param>
/// <param name="Pixels16">16-bit samples, or null.</param>
public sealed record OnnxImage(int Width, int Height, byte[]? Pixels, ushort[]? Pixels16)
{
    /// <summary>Bits a sample: 8 or 16.</summary>
    public int Bits => Pixels16 is null ? 8 : 16;

    /// <summary>8-bit samples for pictures: the image's own, or a 16-bit image stretched from its lowest sample to
    /// its highest.</summary>
    public byte[] ForDisplay() => Pixels16 is { } wide ? PixelDecoder.ForDisplay(wide) : Pixels!;
}

/// <summary>What the model says about itself (from <c>segment export</c>'s metadata, or the options).</summary>
/// <param name="Classes">Output classes.</param>
/// <param name="InChannels">Image channels the model takes (1 gray, 3 RGB).</param>
/// <param name="ClassNames">A name per class.</param>
/// <param name="ClassColors">A colour per class, #rrggbb.</param>
/// <param name="Mean">Normalisation mean per channel.</param>
/// <param name="Std">Normalisation std per channel.</param>
/// <param name="Resize">The size the model was trained at (images are resized to it and the logits back), or
/// null.</param>
/// <param name="MinimumInputSize">Smaller images are padded up to this.</param>
public sealed record OnnxModelInfo(int Classes, int InChannels, string[] ClassNames, string[] ClassColors,
    float[] Mean, float[] Std, (int Height, int Width)? Resize, int MinimumInputSize)
{
    /// <summary>The per-image step before the mean and std: <c>fixed</c> (none), <c>percentile</c> or
    /// <c>zscore</c>.</summary>
    public string NormalizationScheme { get; init; } = "fixed";
    /// <summary>The percentiles that map to 0 and 1 under <c>percentile</c>.</summary>
    public (double Low, double High) Percentiles { get; init; } = (1, 99.8);
    /// <summary>Bits a sample of the images the model was trained on (8 or 16): a record; it takes either
    /// depth.</summary>
    public int ImageBits { get; init; } = 8;
    /// <summary>The output's planes: the classes, and after them any an instance target adds (the distance).</summary>
    public int Planes { get; init; } = Classes;
}

/// <summary>
/// Runs a U-Net exported to ONNX on ONNX Runtime, with no TorchSharp or libtorch: decode (ImageSharp), normalise,
/// resize to the training size if there was one, whole image or sliding window (logits averaged where windows
/// overlap), flip TTA, argmax. The same steps as the TorchSharp predictor, on float arrays.
/// </summary>
public sealed class OnnxPredictor : IDisposable
{
    private readonly InferenceSession session;
    private readonly string input, output;

    /// <summary>The options.</summary>
    public OnnxPredictorOptions Options { get; }
    /// <summary>What the model says about itself.</summary>
    public OnnxModelInfo Info { get; }
    /// <summary>Instance models: how their logits become objects (from the metadata); null for semantic
    /// models.</summary>
    public OnnxInstanceDecoding? Instances { get; }

    /// <summary>Opens <paramref name="modelPath"/>; a model without metadata needs <see
    /// cref="OnnxPredictorOptions.Classes"/> or a fixed class dimension.</summary>
    public OnnxPredictor(string modelPath, OnnxPredictorOptions? options = null)
    {
        Options = options ?? new OnnxPredictorOptions();
        if (Options.Window is var (wh, ww) && SlidingWindow.Problem(wh, ww, (Options.Stride ?? (wh, ww)).Height,
            (Options.Stride ?? (wh, ww)).Width) is { } windowing)
            throw new ArgumentException($"Sliding window: {windowing}.", nameof(options));
        if (RegularFile.Problem(modelPath) is { } problem)
            throw problem == "missing" ? new FileNotFoundException($"{modelPath}: no such ONNX model.", modelPath)
                : new InvalidDataException($"{modelPath}: {problem}, not an ONNX model; refused without opening it.");
        using var so = new SessionOptions();
        if (Options.Threads > 0) so.IntraOpNumThreads = Options.Threads;
        try { session = new InferenceSession(modelPath, so); }
        catch (OnnxRuntimeException e) { throw new InvalidDataException($"{modelPath}: ONNX Runtime cannot load it "
            + $"({e.Message}).", e); }
        input = session.InputMetadata.Keys.First();
        output = PixelLogitsOutput(modelPath, session);
        Info = ReadInfo(modelPath);
        Instances = Chosen(ReadInstances(modelPath, session.ModelMetadata.CustomMetadataMap, Info.Classes),
            Options.Task);
        if (Options.SeedThreshold is { } seed)
            Instances = seed > 0 && seed < 1 ? Instances is null ? throw new ArgumentException("A seed threshold "
                + "applies to instance models; this one is semantic.") : Instances with { SeedThreshold = seed,
                    Queries = Instances.Queries is { } q ? q with { Threshold = (float)seed } : null }
                : throw new ArgumentException($"Seed threshold {seed}: expected above 0 and below 1.");
        if (Instances?.Queries is not null)
        {
            if (Options.Window is not null || Options.Tta != TestTimeAugmentation.None)
                throw new ArgumentException("This model decodes its objects from its queries, from one pass of the "
                    + "whole image: sliding windows and test-time augmentation do not apply to them. Predict without "
                    + "--slide and with --tta none (OnnxPredictorOptions.Window, Tta).");
            queryOutputs = (OutputOfKind(modelPath, session, OnnxMetadataKeys.QueryClassLogits),
                OutputOfKind(modelPath, session, OnnxMetadataKeys.QueryMaskLogits));
        }
    }

    private readonly (string Classes, string Masks)? queryOutputs;

    /// <summary>The decoding of the output <paramref name="task"/> asks for: none for the class map alone, objects
    /// without segments from a panoptic model; an error where the model does not give it.</summary>
    private static OnnxInstanceDecoding? Chosen(OnnxInstanceDecoding? own, string? task) => task switch
    {
        null => own,
        "semantic" => null,
        "instance" when own is not null => own with { Panoptic = false },
        "panoptic" when own is { Panoptic: true } => own,
        _ => throw new ArgumentException($"Task '{task}': this model gives "
            + (own is null ? "the class map (semantic) alone" : own.Panoptic ? "segments (panoptic), objects "
                + "(instance) and the class map (semantic)" : "objects (instance) and the class map (semantic)")
            + "."),
    };

    /// <summary>The instance decoding settings of an instance model, checked against its class count.</summary>
    private static OnnxInstanceDecoding? ReadInstances(string path, Dictionary<string, string> meta, int classes)
    {
        if (!meta.TryGetValue(OnnxMetadataKeys.Task, out var task) || task == "semantic") return null;
        if (task is not ("instance" or "panoptic"))
            throw new InvalidDataException($"{path}: metadata '{OnnxMetadataKeys.Task}' = '{Clip(task)}'; this "
                + "library predicts semantic, instance and panoptic models.");
        if (!meta.TryGetValue(OnnxMetadataKeys.InstanceDecoding, out var json))
            throw new InvalidDataException($"{path}: an instance model without '{OnnxMetadataKeys.InstanceDecoding}' "
                + "metadata; export it again with 'segment export'.");
        try
        {
            var o = JsonDocument.Parse(json).RootElement;
            var things = o.GetProperty("things").EnumerateArray().Select(e => e.GetBoolean()).ToArray();
            double? seed = o.TryGetProperty("seedThreshold", out var t) && t.ValueKind != JsonValueKind.Null
                ? t.GetDouble() : null;
            var d = new OnnxInstanceDecoding(things, o.GetProperty("minSize").GetInt32(),
                o.GetProperty("minSeedSize").GetInt32(), task == "panoptic", seed, DistanceTarget(o))
                { Queries = ReadMaskDecoding(path, meta, classes) };
            if (seed is { } st && !(st > 0 && st < 1))
                throw new FormatException($"seedThreshold {st}: expected above 0 and below 1");
            // a mask classifier predicts the classes alone; a per-pixel model the boundary after them
            int flags = d.Queries is null ? classes - 1 : classes;
            if (things.Length != flags || !things.Contains(true) || d.MinSize < 1 || d.MinSeedSize < 1)
                throw new FormatException($"{things.Length} thing flags for {classes} classes (one per class"
                    + (d.Queries is null ? " before the boundary" : "") + ", at least one set), sizes at least 1");
            return d;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException
            or FormatException)
        {
            throw new InvalidDataException($"{path}: metadata '{OnnxMetadataKeys.InstanceDecoding}' = "
                + $"'{Clip(json)}' cannot be read ({e.Message}).", e);
        }
    }

    /// <summary>A mask classifier's decoding settings (<see cref="OnnxMetadataKeys.MaskDecoding"/>), or null where the
    /// metadata has none (a per-pixel model).</summary>
    private static OnnxMaskDecoding? ReadMaskDecoding(string path, Dictionary<string, string> meta, int classes)
    {
        if (!meta.TryGetValue(OnnxMetadataKeys.MaskDecoding, out var json)) return null;
        try
        {
            var o = JsonDocument.Parse(json).RootElement;
            var d = new OnnxMaskDecoding(o.GetProperty("threshold").GetSingle(),
                o.GetProperty("maskThreshold").GetSingle(), o.GetProperty("overlap").GetSingle(),
                o.GetProperty("fuse").EnumerateArray().Select(e => e.GetInt32()).ToArray());
            if (!(d.Threshold is >= 0 and < 1) || !(d.MaskThreshold is >= 0 and < 1) || !(d.Overlap is >= 0 and < 1)
                || d.Fuse.Any(c => c < 0 || c >= classes))
                throw new FormatException($"thresholds and overlap from 0 to below 1, and classes below {classes}, "
                    + "expected");
            return d;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException
            or FormatException)
        {
            throw new InvalidDataException($"{path}: metadata '{OnnxMetadataKeys.MaskDecoding}' = '{Clip(json)}' "
                + $"cannot be read ({e.Message}).", e);
        }
    }

    /// <summary>Whether instance-decoding metadata names the distance target ("target": "distance"; absent: the
    /// boundary, as every model before it).</summary>
    private static bool DistanceTarget(JsonElement o) => o.TryGetProperty("target", out var t)
        && t.ValueKind != JsonValueKind.Null ? t.GetString() switch
        {
            "distance" => true, "boundary" => false,
            var other => throw new FormatException($"target '{Clip(other ?? "")}': expected boundary or distance"),
        } : false;

    /// <summary>The output planes an instance target adds after the classes (read before the classes are checked
    /// against the output: the distance target's model gives one more plane than it has classes).</summary>
    private static int ExtraPlanes(Dictionary<string, string> meta)
    {
        if (!meta.TryGetValue(OnnxMetadataKeys.InstanceDecoding, out var json)) return 0;
        try { return DistanceTarget(JsonDocument.Parse(json).RootElement) ? 1 : 0; }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            return 0; // ReadInstances reports what is wrong with it, naming the key
        }
    }

    /// <summary>Metadata values at most 1 MiB each (class names and colours for 256 classes are a few KiB).</summary>
    private const int MaxMetadataChars = Limits.OnnxMetadataChars;
    /// <summary>Largest image, and largest training size a model may declare: 100 megapixels (the library's image
    /// limit).</summary>
    public const long MaxPixels = Limits.ImagePixels;

    /// <summary>
    /// The metadata, checked against the graph: a 4-d input; the declared channels and classes equal to the graph's
    /// fixed dimensions; 1 to 256 classes (masks are 8-bit) with as many names and colours; finite means and positive
    /// finite stds per channel; a training size and minimum input within the image limit. Anything else is an error
    /// that names the file, the key and both values.
    /// </summary>
    private OnnxModelInfo ReadInfo(string path)
    {
        var meta = session.ModelMetadata.CustomMetadataMap;
        var inDims = session.InputMetadata[input].Dimensions;
        var outDims = session.OutputMetadata[output].Dimensions;
        if (inDims.Length != 4 || outDims.Length != 4)
            throw new InvalidDataException($"{path}: the graph's input has {inDims.Length} dimensions and its output "
                + $"{outDims.Length}; a segmentation model takes N x C x H x W and gives N x classes x H x W.");
        if (meta.FirstOrDefault(kv => kv.Value.Length > MaxMetadataChars) is { Key: not null } big)
            throw new InvalidDataException($"{path}: metadata '{big.Key}' is {big.Value.Length:N0} characters, over "
                + $"the limit of {MaxMetadataChars:N0}.");
        T Read<T>(string key, Func<string, T> parse, T fallback)
        {
            if (!meta.TryGetValue(key, out var text)) return fallback;
            try { return parse(text); }
            catch (Exception e) when (e is FormatException or OverflowException or JsonException
                or ArgumentException or NullReferenceException)
            {
                throw new InvalidDataException($"{path}: metadata '{key}' = '{Clip(text)}' cannot be read "
                    + $"({e.Message}).", e);
            }
        }
        int Int(string text) => int.Parse(text, CultureInfo.InvariantCulture);
        int channels = Read(OnnxMetadataKeys.InChannels, Int, inDims[1] > 0 ? inDims[1] : 3);
        Agree(path, OnnxMetadataKeys.InChannels, channels, "input", inDims[1]);
        int extra = ExtraPlanes(meta);
        int? known = Read<int?>(OnnxMetadataKeys.Classes, t => Int(t), outDims[1] > 0 ? outDims[1] - extra : null);
        if (known is { } declared) AgreeClasses(path, declared, extra, outDims[1]);
        if (known is { } k && Options.Classes is { } asked && asked != k)
            throw new InvalidDataException($"{path}: the model outputs {k} classes; {asked} were given.");
        int classes = known ?? Options.Classes
            ?? throw new InvalidDataException($"{path}: the model does not say how many classes it has; give them "
            + $"(Classes, --classes).");
        if (classes is < 1 or > 256 || channels is < 1 or > 64)
            throw new InvalidDataException($"{path}: {classes} classes and {channels} input channels; a model here has "
                + $"1 to 256 classes (masks are 8-bit) and 1 to 64 channels.");
        var names = Read(OnnxMetadataKeys.ClassNames, t => JsonSerializer.Deserialize<string[]>(t)!,
            Enumerable.Range(0, classes).Select(i => $"class {i}").ToArray());
        var colors = Read(OnnxMetadataKeys.ClassColors, t => JsonSerializer.Deserialize<string[]>(t)!,
            Enumerable.Range(0, classes).Select(DefaultColor).ToArray());
        CheckClasses(path, names, colors, classes);
        var mean = Read(OnnxMetadataKeys.NormalizationMean, t => JsonSerializer.Deserialize<float[]>(t)!,
            Options.Mean ?? new float[channels]);
        var std = Read(OnnxMetadataKeys.NormalizationStd, t => JsonSerializer.Deserialize<float[]>(t)!,
            Options.Std ?? Enumerable.Repeat(1f, channels).ToArray());
        if (mean.Length != channels || std.Length != channels)
            throw new InvalidDataException($"{path}: normalisation for {mean.Length} channels; the model takes "
                + $"{channels}.");
        (int, int)? resize = Read<(int, int)?>(OnnxMetadataKeys.Resize, t => t.Length == 0 ? null // none
            : t.Split('x') is [var h, var w] ? (Int(h), Int(w)) : throw new FormatException("expected HxW"), null);
        int minimum = Read(OnnxMetadataKeys.MinimumInputSize, Int, 16);
        CheckRanges(path, mean, std, resize, minimum);
        var (scheme, low, high) = Read(OnnxMetadataKeys.NormalizationScheme, IntensityLevels.Parse,
            (IntensityLevels.Fixed, IntensityLevels.DefaultLow, IntensityLevels.DefaultHigh));
        int bits = Read(OnnxMetadataKeys.ImageBits, t => Int(t) is var b && b is 8 or 16 ? b
            : throw new FormatException("expected 8 or 16"), 8);
        return new OnnxModelInfo(classes, channels, names, colors, mean, std, resize, minimum)
            { NormalizationScheme = scheme, Percentiles = (low, high), ImageBits = bits, Planes = classes + extra };
    }

    private static void CheckClasses(string path, string[] names, string[] colors, int classes)
    {
        if (names.Length != classes || colors.Length != classes)
            throw new InvalidDataException($"{path}: metadata names {names.Length} class names and {colors.Length} "
                + $"colours for {classes} classes.");
        if (colors.FirstOrDefault(c => !System.Text.RegularExpressions.Regex.IsMatch(c ?? "", "^#[0-9a-fA-F]{6}$"))
            is { } badColor)
            throw new InvalidDataException($"{path}: metadata '{OnnxMetadataKeys.ClassColors}' holds '{badColor}'; "
                + $"colours are #rrggbb.");
    }

    private static void CheckRanges(string path, float[] mean, float[] std, (int, int)? resize, int minimum)
    {
        if (!mean.All(float.IsFinite) || !std.All(v => float.IsFinite(v) && v > 0))
            throw new InvalidDataException($"{path}: normalisation mean [{string.Join(", ", mean)}], std "
                + $"[{string.Join(", ", std)}]; each std must be a positive number and each mean finite.");
        if (resize is var (rh, rw) && (rh < 1 || rw < 1 || (long)rh * rw > MaxPixels))
            throw new InvalidDataException($"{path}: metadata '{OnnxMetadataKeys.Resize}' = {rh}x{rw}; a training "
                + $"size is positive and at most {MaxPixels:N0} pixels.");
        if (minimum is < 1 or > 4096)
            throw new InvalidDataException($"{path}: metadata '{OnnxMetadataKeys.MinimumInputSize}' = {minimum}; "
                + $"expected 1 to 4096.");
    }

    private static string Clip(string text) => text.Length > 60 ? text[..60] + "..." : text;

    /// <summary>The declared classes, and the planes an instance target adds after them, against the graph's output
    /// channels.</summary>
    private static void AgreeClasses(string path, int classes, int extra, int dimension)
    {
        if (extra == 0) Agree(path, OnnxMetadataKeys.Classes, classes, "output", dimension);
        else if (dimension > 0 && classes + extra != dimension)
            throw new InvalidDataException($"{path}: metadata '{OnnxMetadataKeys.Classes}' = {classes} and the "
                + $"distance target's plane after them make {classes + extra} output planes, but the graph's output "
                + $"has {dimension} channels; the metadata does not describe this graph.");
    }

    /// <summary>A metadata value must equal the graph's dimension when the graph fixes it.</summary>
    private static void Agree(string path, string key, int declared, string what, int dimension)
    {
        if (dimension > 0 && declared != dimension)
            throw new InvalidDataException($"{path}: metadata '{key}' = {declared}, but the graph's {what} has "
                + $"{dimension} channels; the metadata does not describe this graph.");
    }

    private static string DefaultColor(int i)
    {
        uint h = (uint)(i * 2654435761u);
        return i == 0 ? "#000000" : $"#{(byte)(h >> 24):x2}{(byte)(h >> 16):x2}{(byte)(h >> 8):x2}";
    }

    /// <summary>The image files directly in <paramref name="folder"/> that <see cref="ReadImage(string)"/> reads (PNG,
    /// JPEG,
    /// BMP, GIF, TIFF, WebP, TGA, PBM, by extension), in name order: what <c>segment predict</c> lists too.</summary>
    public static IReadOnlyList<string> ImageFilesIn(string folder) => ImageFiles.In(folder);

    /// <summary>Reads an image file as the model's channels, H x W x C, exactly as the TorchSharp side reads it (<see
    /// cref="PixelDecoder"/>: EXIF orientation, gray by luminance, gray replicated, alpha dropped), at its depth: a
    /// 16-bit PNG or TIFF keeps 16 bits a sample.</summary>
    public OnnxImage Read(string path) => Read(path, Info.InChannels);

    /// <summary>Reads an 8-bit image file as the model's channels (<see cref="Read(string)"/>); a 16-bit file is
    /// refused rather than rounded to 8 bits: read it with <see cref="Read(string)"/>.</summary>
    public (byte[] Pixels, int Width, int Height) ReadImage(string path)
    {
        var image = Read(path);
        return image.Pixels is { } px ? (px, image.Width, image.Height) : throw new InvalidDataException(
            $"{path}: 16 bits a sample; ReadImage gives 8-bit samples and would round away its levels: read it with "
            + "Read(path) and predict the OnnxImage.");
    }

    /// <summary>Reads an image file as <paramref name="channels"/> channels (<see
    /// cref="Read(string)"/>).</summary>
    internal static OnnxImage Read(string path, int channels)
    {
        var bytes = RegularFile.ReadAllBytes(path, Limits.ImageFileBytes, "image file");
        var info = Image.Identify(bytes)
            ?? throw new InvalidDataException($"{path}: not an image ImageSharp can read.");
        if ((long)info.Width * info.Height > MaxPixels)
            throw new InvalidDataException($"{path}: {info.Width}x{info.Height} = {(long)info.Width * info.Height:N0} "
                + $"pixels, over the limit of {MaxPixels:N0}; refused before decoding.");
        var d = PixelDecoder.Decode(Configuration.Default, bytes, channels);
        return new OnnxImage(d.Width, d.Height, d.Pixels, d.Pixels16);
    }

    /// <summary>Class index per pixel (row-major, H x W) for an 8-bit H x W x C image.</summary>
    public byte[] Predict(byte[] pixels, int width, int height) => Predict(new OnnxImage(width, height, pixels, null));

    /// <summary>Class index per pixel (row-major, H x W) for an image at either depth.</summary>
    public byte[] Predict(OnnxImage image) =>
        Tensors.Argmax(ImageLogits(image), Info.Classes, image.Height * image.Width);

    /// <summary>Instance models: the objects of an 8-bit H x W x C image (<see
    /// cref="PredictInstances(OnnxImage)"/>).</summary>
    public OnnxInstances PredictInstances(byte[] pixels, int width, int height) =>
        PredictInstances(new OnnxImage(width, height, pixels, null));

    /// <summary>
    /// Instance models: the objects of an image, an object number per pixel (0: none), decoded from the logits by the
    /// same seeded watershed as the TorchSharp predictor's, with the settings in the model's metadata.
    /// </summary>
    public OnnxInstances PredictInstances(OnnxImage image)
    {
        var settings = Instances ?? throw new InvalidOperationException("This model is not an instance model (its "
            + $"metadata has no '{OnnxMetadataKeys.Task}' = instance).");
        if (settings.Queries is { } queries) return PredictQueries(image, settings, queries);
        var r = InstanceDecoder.Decode(ImageLogits(image), Info.Classes, image.Height, image.Width, settings.Things,
            settings.MinSize, settings.MinSeedSize, settings.SeedThreshold, settings.Distance);
        return new OnnxInstances(r.Labels, r.Count, r.Classes, settings.Panoptic
            ? InstanceDecoder.ClassMap(r.Labels, r.Classes, r.BestClass, settings.Things) : null);
    }

    /// <summary>A mask classifier's objects: one pass at the model's size, its queries decoded as the TorchSharp
    /// predictor decodes them (<see cref="MaskClassificationDecoder"/>), pixels of no segment given the class map's
    /// class.</summary>
    private OnnxInstances PredictQueries(OnnxImage image, OnnxInstanceDecoding settings, OnnxMaskDecoding d)
    {
        int width = image.Width, height = image.Height;
        CheckMemory(height, width, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);
        var x = Normalised(image);
        var (rh, rw) = Info.Resize ?? (height, width);
        if (rh < Info.MinimumInputSize || rw < Info.MinimumInputSize)
            throw new ArgumentException($"A {width}x{height} image is smaller than this model's smallest input "
                + $"({Info.MinimumInputSize}x{Info.MinimumInputSize}); its queries' masks are not padded.");
        if (Info.Resize is not null) x = Tensors.Resize(x, Info.InChannels, height, width, rh, rw);
        var (classOutput, maskOutput) = queryOutputs!.Value;
        var tensor = new DenseTensor<float>(x, new[] { 1, Info.InChannels, rh, rw });
        using var results = session.Run(new[] { NamedOnnxValue.CreateFromTensor(input, tensor) },
            new[] { output, classOutput, maskOutput });
        var logits = results.First(r => r.Name == output).AsTensor<float>().ToArray();
        var classLogits = results.First(r => r.Name == classOutput).AsTensor<float>().ToArray();
        var maskTensor = results.First(r => r.Name == maskOutput).AsTensor<float>();
        int q = maskTensor.Dimensions[1], h = maskTensor.Dimensions[2], w = maskTensor.Dimensions[3];
        if (Info.Resize is not null) logits = Tensors.Resize(logits, Info.Planes, rh, rw, height, width);
        var best = Array.ConvertAll(Tensors.Argmax(logits, Info.Classes, height * width), v => (int)v);
        var things = Enumerable.Range(0, settings.Things.Length).Where(c => settings.Things[c]).ToHashSet();
        var decoded = settings.Panoptic
            ? MaskClassificationDecoder.Panoptic(classLogits, maskTensor.ToArray(), q, h, w, height, width,
                d.Threshold, d.MaskThreshold, d.Overlap, d.Fuse.ToHashSet())
            : MaskClassificationDecoder.Instances(classLogits, maskTensor.ToArray(), q, h, w, height, width,
                d.Threshold, things);
        var (objects, count, classes, classMap) = MaskClassificationDecoder.ToObjects(decoded, things, best);
        return new OnnxInstances(objects, count, classes, settings.Panoptic
            ? InstanceDecoder.ClassMap(objects, classes, classMap, settings.Things) : null);
    }

    /// <summary>Logits C x H x W of an 8-bit H x W x C image: what <see cref="Predict(byte[], int, int)"/> takes the
    /// argmax of.</summary>
    internal float[] Logits(byte[] pixels, int width, int height) =>
        ImageLogits(new OnnxImage(width, height, pixels, null));

    /// <summary>Logits C x H x W of an image at either depth.</summary>
    internal float[] Logits(OnnxImage image) => ImageLogits(image);

    private float[] ImageLogits(OnnxImage image)
    {
        int width = image.Width, height = image.Height;
        CheckMemory(height, width, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);
        var x = Normalised(image);
        return Info.Resize is { } size
            ? Tensors.Resize(Logits(Tensors.Resize(x, Info.InChannels, height, width, size.Height, size.Width),
            size.Height, size.Width), Info.Planes, size.Height, size.Width, height, width) : Logits(x, height, width);
    }

    /// <summary>Activations a segmentation network keeps per pixel of its input, at least (a U-Net's first stage alone
    /// holds 64 channels twice, and its skip connection): the floor of the estimate below.</summary>
    private const int ActivationFloatsPerPixel = 256;

    /// <summary>
    /// About how many bytes predicting one <paramref name="height"/> x <paramref name="width"/> image takes: the input
    /// and the logits at the image's size (and at the model's training size, twice with flip TTA, with a window's sum
    /// and count), and the network's activations at the size it runs, one window or the whole (resized) image, taken
    /// as <see cref="ActivationFloatsPerPixel"/> floats a pixel, since the graph does not say. A floor, not a bound.
    /// </summary>
    public double BytesNeeded(int height, int width)
    {
        long pixels = (long)height * width;
        var (rh, rw) = Info.Resize ?? (height, width);
        long runPixels = (long)rh * rw;
        long modelPixels = Options.Window is var (wh, ww) ? (long)Math.Min(wh, rh) * Math.Min(ww, rw) : runPixels;
        double logits = (pixels + runPixels) * (double)Info.Planes * (Options.Tta == 0 ? 1 : 2)
            * (Options.Window is null ? 1 : 2);
        return sizeof(float) * ((double)modelPixels * (ActivationFloatsPerPixel + Info.Planes) + logits
            + (pixels + runPixels) * (double)Info.InChannels);
    }

    /// <summary>Refuses, before anything is allocated, an image whose prediction would need more than <paramref
    /// name="available"/> bytes, saying to use windows.</summary>
    public void CheckMemory(int height, int width, long available)
    {
        double needed = BytesNeeded(height, width);
        if (needed <= available) return;
        var size = Info.Resize is var (h, w) ? $"{width}x{height} image (run at the model's {w}x{h})"
            : $"{width}x{height} image";
        throw new InvalidDataException($"Predicting a {size} needs at least {needed / (1L << 30):N1} GiB; this "
            + $"machine has {available / (double)(1L << 30):N1} GiB. Predict it in windows (--slide 512x512, "
            + $"OnnxPredictorOptions.Window)"
            + $"{(Info.Resize is null ? "" : ", or export a model without a training size")}.");
    }

    /// <summary>The image normalised at its depth (<see cref="Normalise{T}"/>).</summary>
    private float[] Normalised(OnnxImage image) => image.Pixels16 is { } wide
        ? Normalise(wide, image.Width, image.Height, ushort.MaxValue)
        : Normalise(image.Pixels ?? throw new ArgumentException("An OnnxImage without samples."), image.Width,
            image.Height, byte.MaxValue);

    /// <summary>C x H x W floats: ((pixel / full - offset) / scale - mean) / std, with the image's offset and scale
    /// under the model's per-image scheme (the library's rule, <see cref="IntensityLevels"/>); full is 255 for 8-bit
    /// samples and 65535 for 16-bit ones.</summary>
    private float[] Normalise<T>(T[] pixels, int width, int height, int full)
        where T : unmanaged, System.Numerics.INumber<T>
    {
        int c = Info.InChannels, plane = width * height;
        if (pixels.Length != c * plane)
            throw new ArgumentException($"An image of {width}x{height}x{c} needs {c * plane} samples; got "
                + $"{pixels.Length}.");
        var (offset, scale) = Info.NormalizationScheme == IntensityLevels.Fixed ? (0f, 1f)
            : IntensityLevels.Of(Info.NormalizationScheme, pixels is ushort[] wide ? IntensityLevels.Histogram(wide)
                : IntensityLevels.Histogram((byte[])(object)pixels), Info.Percentiles.Low, Info.Percentiles.High,
                full);
        var x = new float[c * plane];
        for (int i = 0; i < plane; i++)
            for (int k = 0; k < c; k++)
                x[k * plane + i] = ((float.CreateTruncating(pixels[i * c + k]) / full - offset) / scale - Info.Mean[k])
                    / Info.Std[k];
        return x;
    }

    /// <summary>Logits C x H x W of a normalised C x H x W image, with the window and TTA.</summary>
    private float[] Logits(float[] x, int h, int w)
    {
        var logits = Windowed(x, h, w);
        var views = TestTimeViews.Of((int)Options.Tta);
        foreach (var v in views.Skip(1))
        {
            var (vh, vw) = v.Transpose ? (w, h) : (h, w);
            var back = TestTimeViews.Undo(Windowed(TestTimeViews.Apply(x, Info.InChannels, h, w, v), vh, vw),
                Info.Planes, h, w, v);
            for (int i = 0; i < logits.Length; i++) logits[i] += back[i];
        }
        if (views.Length > 1)
            for (int i = 0; i < logits.Length; i++) logits[i] /= views.Length;
        return logits;
    }

    private float[] Windowed(float[] x, int h, int w)
    {
        if (Options.Window is not { } win || (win.Height >= h && win.Width >= w)) return Run(x, h, w);
        var stride = Options.Stride ?? SlidingWindow.DefaultStride(win.Height, win.Width);
        var sum = new float[Info.Planes * h * w];
        var count = new float[h * w];
        foreach (var (y1, x1, th, tw) in SlidingWindow.Tiles(h, w, win.Height, win.Width, stride.Height, stride.Width))
        {
            var part = Run(Tensors.Crop(x, Info.InChannels, h, w, y1, x1, th, tw), th, tw);
            Tensors.AddInto(sum, count, part, Info.Planes, h, w, y1, x1, th, tw);
        }
        for (int k = 0; k < Info.Planes; k++)
            for (int i = 0; i < h * w; i++) sum[k * h * w + i] /= count[i];
        return sum;
    }

    /// <summary>One forward pass; inputs under the minimum size are padded (edge) and the logits cropped
    /// back.</summary>
    private float[] Run(float[] x, int h, int w)
    {
        int min = Info.MinimumInputSize;
        if (h < min || w < min)
        {
            int ph = Math.Max(h, min), pw = Math.Max(w, min);
            var padded = Run(Tensors.PadEdge(x, Info.InChannels, h, w, ph, pw), ph, pw);
            return Tensors.Crop(padded, Info.Planes, ph, pw, 0, 0, h, w);
        }
        var tensor = new DenseTensor<float>(x, new[] { 1, Info.InChannels, h, w });
        using var results = session.Run(new[] { NamedOnnxValue.CreateFromTensor(input, tensor) }, new[] { output });
        return results.First().AsTensor<float>().ToArray();
    }

    /// <summary>
    /// The graph output this predictor decodes: the class logits per pixel, found by meaning in the outputs the
    /// metadata lists (<see cref="OnnxMetadataKeys.Outputs"/>; a model may give others beside them, auxiliary or per
    /// query), or the graph's only output where the metadata lists none (exports before the list, other tools').
    /// </summary>
    private static string PixelLogitsOutput(string path, InferenceSession session) =>
        session.ModelMetadata.CustomMetadataMap.ContainsKey(OnnxMetadataKeys.Outputs)
            ? OutputOfKind(path, session, OnnxMetadataKeys.PixelClassLogits) : session.OutputMetadata.Keys.First();

    /// <summary>The graph output of a kind (<see cref="OnnxMetadataKeys.PixelClassLogits"/>, ...), found by meaning in
    /// the outputs the metadata lists; an error names what the model gives.</summary>
    private static string OutputOfKind(string path, InferenceSession session, string kind)
    {
        var json = session.ModelMetadata.CustomMetadataMap.GetValueOrDefault(OnnxMetadataKeys.Outputs, "[]");
        List<(string Name, string Kind)> declared;
        try
        {
            declared = JsonDocument.Parse(json).RootElement.EnumerateArray()
                .Select(e => (e.GetProperty("name").GetString() ?? "", e.GetProperty("kind").GetString() ?? ""))
                .ToList();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException)
        {
            throw new InvalidDataException($"{path}: metadata '{OnnxMetadataKeys.Outputs}' is not a list of outputs "
                + $"with a name and a kind ({e.Message}).", e);
        }
        var name = declared.FirstOrDefault(o => o.Kind == kind).Name;
        if (string.IsNullOrEmpty(name))
            throw new InvalidDataException($"{path}: the model gives no {Words(kind)} ({kind}; its outputs: "
                + $"{string.Join(", ", declared.Select(o => $"{o.Name} ({o.Kind})"))}); this predictor decodes "
                + "those.");
        if (!session.OutputMetadata.ContainsKey(name))
            throw new InvalidDataException($"{path}: the metadata names the {kind} output '{name}', which is not an "
                + $"output of the graph ({string.Join(", ", session.OutputMetadata.Keys)}).");
        return name;
    }

    private static string Words(string kind) => kind switch
    {
        OnnxMetadataKeys.PixelClassLogits => "class logits per pixel",
        OnnxMetadataKeys.QueryClassLogits => "class logits per query",
        OnnxMetadataKeys.QueryMaskLogits => "mask logits per query",
        _ => kind,
    };

    /// <summary>Writes <paramref name="labels"/> as an 8-bit gray PNG of class indices.</summary>
    public static void SaveLabels(string path, byte[] labels, int width, int height)
    {
        using var image = Image.LoadPixelData<L8>(labels, width, height);
        AtomicFile.Write(path, s => image.SaveAsPng(s)); // a full disk leaves no half (or empty) PNG
    }

    /// <summary>Writes object numbers as a 16-bit gray PNG (0: none).</summary>
    public static void SaveInstances(string path, int[] objects, int width, int height)
    {
        var values = objects.Select(v => new L16(v is >= 0 and <= ushort.MaxValue ? (ushort)v
            : throw new InvalidDataException($"{path}: object number {v} does not fit a 16-bit PNG."))).ToArray();
        using var image = Image.LoadPixelData<L16>(values, width, height);
        AtomicFile.Write(path, s => image.SaveAsPng(s));
    }

    /// <summary>Writes the image with each object in a colour of its own and its contour drawn, as an RGB PNG (a
    /// 16-bit image: <see cref="OnnxImage.ForDisplay"/>).</summary>
    public void SaveInstanceOverlay(string path, OnnxImage image, int[] objects) =>
        SaveInstanceOverlay(path, image.ForDisplay(), image.Width, image.Height, objects);

    /// <summary>Writes the image with each object in a colour of its own and its contour drawn, as an RGB
    /// PNG.</summary>
    public void SaveInstanceOverlay(string path, byte[] pixels, int width, int height, int[] objects)
    {
        var rgb = InstanceOverlay.Draw(pixels, Info.InChannels, objects, width, height);
        using var image = Image.LoadPixelData<Rgb24>(rgb, width, height);
        AtomicFile.Write(path, s => image.SaveAsPng(s));
    }

    /// <summary>Writes the image with each class but 0 blended in its colour (half and half), as an RGB PNG (a 16-bit
    /// image: <see cref="OnnxImage.ForDisplay"/>).</summary>
    public void SaveOverlay(string path, OnnxImage image, byte[] labels) =>
        SaveOverlay(path, image.ForDisplay(), image.Width, image.Height, labels);

    /// <summary>Writes the image with each class but 0 blended in its colour (half and half), as an RGB PNG.</summary>
    public void SaveOverlay(string path, byte[] pixels, int width, int height, byte[] labels)
    {
        var colors = Info.ClassColors.Select(c => Color.ParseHex(c).ToPixel<Rgb24>()).Select(p => (p.R, p.G, p.B))
            .ToList();
        var rgb = Shared.OverlayBlend.Blend(pixels, Info.InChannels, labels, colors);
        using var image = Image.LoadPixelData<Rgb24>(rgb, width, height);
        AtomicFile.Write(path, s => image.SaveAsPng(s));
    }

    /// <inheritdoc />
    public void Dispose() => session.Dispose();
}
