using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Models;
using Segmentation.Models.Layers;
using Segmentation.Tasks;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Inference;

/// <summary>How a <see cref="Predictor"/> runs the model.</summary>
public sealed record PredictorOptions
{
    /// <summary>auto, cpu, cuda or cuda:N.</summary>
    public string Device { get; init; } = "auto";
    /// <summary>Sliding-window size; null predicts the whole image at once.</summary>
    public Size2? Window { get; init; }
    /// <summary>Sliding-window stride; null uses two thirds of the window.</summary>
    public Size2? Stride { get; init; }
    /// <summary>Test-time augmentation: the views whose logits are averaged (mapped back onto the image) before
    /// anything is decoded.</summary>
    public TestTimeAugmentation Tta { get; init; }
    /// <summary>
    /// Resize inputs to this size before the model and the logits back to the input size after (as in training with a
    /// fixed size). Null: the size the checkpoint was trained at, if it was trained at a fixed size, else none.
    /// </summary>
    public Size2? Size { get; init; }
    /// <summary>The arithmetic of the convolutions; any checkpoint runs in any (the weights stay float32).</summary>
    public Precision Precision { get; init; } = Precision.Float32;
    /// <summary>libtorch's CPU threads (process-wide; null: leave them as they are). See <see
    /// cref="CpuThreads"/>.</summary>
    public int? Threads { get; init; }
    /// <summary>Instance models: seeds where P(object) is at least this, instead of the checkpoint's setting (<see
    /// cref="InstanceSettings.SeedThreshold"/>).</summary>
    public double? SeedThreshold { get; init; }
    /// <summary>The output to decode (null: the task the model was trained for): any model gives the class map alone
    /// (<see cref="SegmentationTaskKind.Semantic"/>), and a panoptic model its objects alone (<see
    /// cref="SegmentationTaskKind.Instance"/>); one model, its outputs chosen.</summary>
    public SegmentationTaskKind? Task { get; init; }
}

/// <summary>The views test-time augmentation averages; the same in <c>Segmentation.Onnx</c>.</summary>
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

/// <summary>A prediction for one image.</summary>
public sealed class Prediction
{
    /// <summary>Width.</summary>
    public int Width { get; init; }
    /// <summary>Height.</summary>
    public int Height { get; init; }
    /// <summary>Classes the model predicts (the planes of <see cref="Probabilities"/>; a mask classifier of instance
    /// data predicts the data's classes without the per-pixel boundary).</summary>
    public int Classes { get; init; }
    /// <summary>Class index per pixel (argmax).</summary>
    public byte[] Labels { get; init; } = Array.Empty<byte>();
    /// <summary>Softmax probabilities, C x H x W (null unless asked for).</summary>
    public float[]? Probabilities { get; init; }
    /// <summary>Instance models: the objects (an object number per pixel); null otherwise.</summary>
    public InstancePrediction? Instances { get; init; }
}

/// <summary>
/// Runs a trained model from a checkpoint alone: whole-image or sliding-window prediction (logits averaged where
/// windows overlap, as mmsegmentation's <c>slide</c> mode), optional flip test-time augmentation.
/// </summary>
public sealed class Predictor : IDisposable
{
    private readonly SegmentationModel model;
    private readonly Device device;
    private readonly SegmentationTask task;
    private double? activationsPerPixel;

    /// <summary>What the labels mean (names, colours).</summary>
    public DatasetDescription Description { get; }
    /// <summary>Input normalisation used in training.</summary>
    public Normalization Normalization { get; }
    /// <summary>The options.</summary>
    public PredictorOptions Options { get; }
    /// <summary>What the model is.</summary>
    public ModelDescription Model => model.Description;

    /// <summary>The latest convolution check of the model (it runs before the first input of each shape).</summary>
    public ConvolutionReport? Convolutions => model.Convolutions;

    /// <summary>Builds the model from a checkpoint.</summary>
    public Predictor(Checkpoint checkpoint, PredictorOptions? options = null)
    {
        Options = options ?? new PredictorOptions();
        // predict as it was trained
        if (Options.Size is null && checkpoint.Preprocessing.Size is { } trained) Options =
            Options with { Size = trained };
        if (Options.Window is { } win && Shared.SlidingWindow.Problem(win.Height, win.Width,
            (Options.Stride ?? win).Height, (Options.Stride ?? win).Width) is { } windowing)
            throw new OptionsException($"Sliding window: {windowing}.");
        if (Options.Stride is { } s && (s.Height < 1 || s.Width < 1))
            throw new OptionsException($"Stride {s} must be positive.");
        Description = Options.SeedThreshold is { } seed && checkpoint.Dataset.Instances is { } objects
            ? checkpoint.Dataset with { Instances = objects with { SeedThreshold = seed } } : checkpoint.Dataset;
        Description = Description with { Task = Decoded(Description.Task, Options.Task) };
        Normalization = checkpoint.Preprocessing.Normalization;
        CpuThreads.Apply(Options.Threads);
        device = Devices.Resolve(Options.Device);
        model = checkpoint.CreateModel();
        try
        {
            task = TaskRegistry.For(Description, model.Outputs.Select(o => o.Kind)); // decodes and scores its outputs
            task.CheckModel(model.Outputs);
            if (task.DecodesQueries && (Options.Window is not null || Options.Tta != TestTimeAugmentation.None))
                throw new OptionsException($"This {task.Name} model decodes its objects from its queries, from one "
                    + "pass of the whole image: sliding windows and test-time augmentation do not apply to them. "
                    + "Predict without --slide and with --tta none (PredictorOptions.Window, Tta).");
        }
        catch { model.Dispose(); throw; }
        int min = model.MinimumInputSize;
        if (Options.Window is { } w && (w.Height < min || w.Width < min))
        {
            model.Dispose();
            throw new OptionsException($"Sliding window {w} is smaller than the model's minimum input {min}x{min}.");
        }
        model.to(device);
        model.Precision = Options.Precision;
        model.eval();
    }

    /// <summary>The task to decode: <paramref name="asked"/> where the trained one holds it (the class map in any;
    /// objects in panoptic segments), else an error that says what the model gives.</summary>
    internal static SegmentationTaskKind Decoded(SegmentationTaskKind trained, SegmentationTaskKind? asked) =>
        asked switch
        {
            null => trained,
            var a when a == trained || a == SegmentationTaskKind.Semantic => a.Value,
            SegmentationTaskKind.Instance when trained == SegmentationTaskKind.Panoptic
                => SegmentationTaskKind.Instance,
            var a => throw new OptionsException($"This model was trained on {Name(trained)} data: it gives "
                + (trained == SegmentationTaskKind.Semantic ? "the class map (semantic) alone"
                    : trained == SegmentationTaskKind.Instance ? "objects (instance) and the class map (semantic)"
                    : "segments (panoptic), objects (instance) and the class map (semantic)")
                + $", not {Name(a!.Value)} output."),
        };

    private static string Name(SegmentationTaskKind kind) => kind.ToString().ToLowerInvariant();

    /// <summary>Loads <paramref name="checkpointPath"/> and builds the predictor.</summary>
    public static Predictor FromFile(string checkpointPath, PredictorOptions? options = null)
        => new(Checkpoint.Load(checkpointPath), options);

    /// <summary>Reads the image file at <paramref name="imagePath"/> as the model's channels (any format the library
    /// reads; errors name the file) and predicts it.</summary>
    public Prediction Predict(string imagePath, bool probabilities = false) =>
        Predict(new ImageReader().ReadImage(imagePath, model.Description.InChannels), probabilities);

    /// <summary>Predicts one image (channels must match the model's).</summary>
    public Prediction Predict(ImageBuffer image, bool probabilities = false)
    {
        if (image.Channels != model.Description.InChannels)
            throw new DataException($"The image has {image.Channels} channel(s); the model takes "
                + $"{model.Description.InChannels}.");
        if (device.type == DeviceType.CPU) // CUDA reports its own out-of-memory error, with figures
            CheckMemory(image.Height, image.Width, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var batch = DataLoader.Collate(new[] { new Sample(image, new byte[image.Width * image.Height], "input") },
            Normalization);
        var (x, _) = batch.ToDevice(device);
        var input = Normalization.Apply(x, batch);
        var planes = Logits(input)[0];
        var logits = planes[..Description.Classes]; // the classes (an instance target may add planes after them)
        var labels = logits.argmax(0).to_type(ScalarType.Byte).cpu();
        float[]? probs = probabilities ? logits.softmax(0).cpu().data<float>().ToArray() : null;
        // the task's objects (instance data: the watershed the ONNX predictor runs too); none for classes alone
        var objects = task.DecodeObjects(planes, () => Outputs(input));
        return new Prediction { Width = image.Width, Height = image.Height, Classes = (int)logits.shape[0],
            Labels = labels.data<byte>().ToArray(), Probabilities = probs, Instances = objects };
    }

    /// <summary>
    /// About how many bytes predicting one <paramref name="height"/> x <paramref name="width"/> image takes: the
    /// input and the logits (twice with flip TTA) at the image's size (and, for objects, the decoding's buffers), and
    /// the model's activations (every layer's output, float32, estimated from its layer table) at the size it runs at:
    /// the image, the training size, or one window when windows are smaller than the image.
    /// </summary>
    internal double BytesNeeded(int height, int width)
    {
        long pixels = (long)height * width;
        var run = Options.Size is { } size ? (size.Height, size.Width) : (height, width);
        if (Options.Window is { } win && (win.Height < run.Item1 || win.Width < run.Item2))
            run = (Math.Min(win.Height, run.Item1), Math.Min(win.Width, run.Item2));
        int min = model.MinimumInputSize;
        // the layer table scales with the pixel count: traced once, at the smallest size
        activationsPerPixel ??= ModelSummary.EstimateActivationElements(model, min, min) / ((double)min * min);
        double activations = activationsPerPixel.Value * Math.Max(min, run.Item1) * Math.Max(min, run.Item2);
        double logits = (double)pixels * model.Description.Classes * (Options.Tta == 0 ? 1 : 2)
            * (Options.Window is null
            ? 1 : 2); // a window's sum and count beside the output
        // the task's decoding: instance models copy the logits to the host, and the watershed keeps per-pixel arrays
        double decoding = pixels * task.DecodingBytesPerPixel(model.Description.Classes);
        return sizeof(float) * (activations + logits + pixels * model.Description.InChannels) + decoding;
    }

    /// <summary>Refuses an image whose prediction would not fit <paramref name="available"/> bytes, before anything is
    /// allocated, with what to do instead.</summary>
    internal void CheckMemory(int height, int width, long available)
    {
        double needed = BytesNeeded(height, width);
        if (needed <= available) return;
        int side = (int)Math.Clamp(Math.Sqrt(available / 4.0 / Math.Max(1, needed / ((double)height * width))) / 64,
            1, 64) * 64;
        throw new OptionsException($"Predicting a {width}x{height} image "
            + $"{(Options.Window is { } w ? $"in {w} windows " : "")}needs about {needed / (1L << 30):N1} GiB for "
            + $"this model; this machine has {available / (double)(1L << 30):N1} GiB. Predict it in smaller windows "
            + $"(--slide {side}x{side}; PredictorOptions.Window), or at a smaller size.");
    }

    /// <summary>Logits N x C x H x W for a normalised batch N x C x H x W, with the configured window and
    /// TTA.</summary>
    public Tensor Logits(Tensor images)
    {
        using var scope = NewDisposeScope();
        long h = images.shape[2], w = images.shape[3];
        var x = images;
        if (Options.Size is { } size) x = nn.functional.interpolate(x, new long[] { size.Height, size.Width },
            mode: InterpolationMode.Bilinear, align_corners: false);
        var views = Shared.TestTimeViews.Of((int)Options.Tta);
        Tensor logits = Forward(x);
        foreach (var v in views.Skip(1)) logits = logits + Undo(Forward(View(x, v)), v);
        if (views.Length > 1) logits = logits / views.Length;
        if (Options.Size is not null) logits = nn.functional.interpolate(logits, new long[] { h, w },
            mode: InterpolationMode.Bilinear, align_corners: false);
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>The model's outputs for a normalised batch, from one pass at the configured size (no windows, no
    /// views); the class logits at the batch's size.</summary>
    private ModelOutputs Outputs(Tensor images)
    {
        long h = images.shape[2], w = images.shape[3];
        var x = Options.Size is { } size ? nn.functional.interpolate(images, new long[] { size.Height, size.Width },
            mode: InterpolationMode.Bilinear, align_corners: false) : images;
        int min = model.MinimumInputSize;
        if (x.shape[2] < min || x.shape[3] < min)
            throw new DataException($"A {w}x{h} image is smaller than this model's smallest input ({min}x{min}); its "
                + "queries' masks are not padded. Predict it at a larger size (--size, PredictorOptions.Size).");
        var raw = model.forward(x);
        var logits = raw.Logits.shape[2] == h && raw.Logits.shape[3] == w ? raw.Logits : nn.functional.interpolate(
            raw.Logits, new long[] { h, w }, mode: InterpolationMode.Bilinear, align_corners: false);
        return new ModelOutputs(raw.Names.ToDictionary(n => n, n => n == ModelOutputs.LogitsName ? logits : raw[n]),
            raw.Schema);
    }

    /// <summary>A N x C x H x W batch seen through a test-time view.</summary>
    private static Tensor View(Tensor x, Shared.TestTimeViews.View v)
    {
        if (v.Transpose) x = x.transpose(2, 3).contiguous();
        if (v.FlipRows) x = x.flip(2);
        return v.FlipColumns ? x.flip(3) : x;
    }

    /// <summary>A view's logits mapped back onto the image.</summary>
    private static Tensor Undo(Tensor y, Shared.TestTimeViews.View v)
    {
        if (v.FlipColumns) y = y.flip(3);
        if (v.FlipRows) y = y.flip(2);
        return v.Transpose ? y.transpose(2, 3).contiguous() : y;
    }

    private Tensor Forward(Tensor x)
    {
        long h = x.shape[2], w = x.shape[3];
        int min = model.MinimumInputSize;
        if (Options.Window is not { } win || (win.Height >= h && win.Width >= w))
            return h < min || w < min ? PaddedForward(x, min) : model.Logits(x);

        var (sh, sw) = Options.Stride is { } s ? (s.Height, s.Width) : Shared.SlidingWindow.DefaultStride(win.Height,
            win.Width);
        var sum = zeros(new long[] { x.shape[0], model.Description.Classes, h, w }, x.dtype, x.device);
        var count = zeros(new long[] { 1, 1, h, w }, x.dtype, x.device);
        foreach (var (top, left, th, tw) in Shared.SlidingWindow.Tiles((int)h, (int)w, win.Height, win.Width, sh, sw))
        {
            using var scope = NewDisposeScope();
            var window = x[.., .., top..(top + th), left..(left + tw)];
            var part = th < min || tw < min ? PaddedForward(window, min) : model.Logits(window);
            sum[.., .., top..(top + th), left..(left + tw)].add_(part);
            count[.., .., top..(top + th), left..(left + tw)].add_(Scalars.One, Scalars.One);
        }
        return sum / count;
    }

    /// <summary>Images smaller than the model's minimum are padded (reflect) up to it and the logits cropped
    /// back.</summary>
    private Tensor PaddedForward(Tensor x, int min)
    {
        long h = x.shape[2], w = x.shape[3];
        long ph = Math.Max(0, min - h), pw = Math.Max(0, min - w);
        var padded = nn.functional.pad(x, new[] { 0, pw, 0, ph }, PaddingModes.Replicate);
        return model.Logits(padded)[.., .., ..(int)h, ..(int)w];
    }

    /// <summary>Scores the model on a data set with this predictor's window, TTA and size.</summary>
    public SegmentationMetrics Evaluate(SegmentationDataset data, int batchSize = 1, int workers = 0,
        bool perImage = true, CancellationToken cancellation = default)
    {
        if (data.Description.Classes != Description.Classes)
            throw new DataException($"{data.Origin}: the data set has {data.Description.Classes} classes, the model "
                + $"{Description.Classes}.");
        if (data.Description.Task != Description.Task)
            throw new DataException($"{data.Origin}: {data.Description.Task.ToString().ToLowerInvariant()} data, but "
                + $"the model was trained on {Description.Task.ToString().ToLowerInvariant()} data.");
        var loader = new DataLoader(data, new DataLoaderOptions { BatchSize = batchSize, Shuffle = false,
            Workers = workers, Normalization = Normalization });
        // the task's own evaluation: the classes' confusion matrix, and objects, AP and PQ where the task has them
        return task.Evaluate(loader, device, Description, Normalization, x => task.DecodesQueries ? Outputs(x)
            : new ModelOutputs(Logits(x)), null, null, cancellation, perImage: perImage).Metrics;
    }

    /// <inheritdoc />
    public void Dispose() => model.Dispose();
}
