using System.CommandLine;
using System.Diagnostics;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Onnx;
using Segmentation.Models;
using Segmentation.Models.Layers;

namespace Segmentation.Cli;

/// <summary><c>segment predict</c>: masks for images.</summary>
internal static class PredictCommand
{
    public static Command Create(CommandContext ctx)
    {
        var cmd = new Command("predict",
            "Predict masks: <name>.png holds class indices; --color, --overlay and --probabilities add pictures.");
        var f = PredictFlags.Add(cmd).WithTask(cmd);
        var input = new Option<string>("--input") { Description = "An image file or a folder of images.",
            Required = true };
        var outDir = new Option<string>("--out") { Description = "Output folder.", Required = true };
        var overlay = new Option<bool>("--overlay") { Description =
            "Also write <name>_overlay.png (classes blended over the image)." };
        var color = new Option<bool>("--color") { Description =
            "Also write <name>_color.png (each class in its colour)." };
        var probabilities = new Option<bool>("--probabilities") { Description =
            "Also write <name>_prob_<class>.png per class (probability x 255)." };
        var onnx = new Option<string?>("--onnx") { Description =
            "Predict with an ONNX model instead of a checkpoint (ONNX Runtime, no libtorch): one from 'segment "
                + "export', or torch.onnx.export's (give --classes if its graph does not fix them; inputs pixel / "
                + "255)." };
        var classes = new Option<int?>("--classes") { Description =
            "--onnx: the class count, for a model that does not record it." };
        var overwrite = new Option<bool>("--overwrite") { Description =
            "Replace output files that exist already (otherwise predict refuses before writing anything)." };
        foreach (var o in new Option[] { input, outDir, overlay, color, probabilities, onnx,
            classes, overwrite }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var path = p.GetValue(input)!;
            var files = Directory.Exists(path) ? ImageFiles.In(path)
                : File.Exists(path) ? new List<string> { path }
                : throw new DataException($"{path}: no such file or folder.", path);
            if (files.Count == 0)
                throw new DataException($"{path}: no images found (looked for "
                    + $"{string.Join(", ", ImageFiles.Extensions)}).", path);
            var dir = p.GetValue(outDir)!;
            Cli.RefuseFileAsFolder(dir);
            if (p.GetValue(onnx) is { } model)
            {
                if (p.GetValue(f.Checkpoint) is not null)
                    throw new OptionsException("Give --checkpoint or --onnx, not both.");
                if (p.GetValue(color) || p.GetValue(probabilities))
                    throw new OptionsException("--onnx writes masks and --overlay; --color and --probabilities need a "
                        + "checkpoint.");
                return PredictOnnx(ctx, p, f, model, p.GetValue(classes), files, dir, p.GetValue(overlay),
                    p.GetValue(overwrite));
            }
            return PredictCheckpoint(ctx, p, f, files, dir, p.GetValue(color), p.GetValue(overlay),
                p.GetValue(probabilities), p.GetValue(overwrite));
        });
        return cmd;
    }

    /// <summary>Every image through the checkpoint's predictor (TorchSharp).</summary>
    private static int PredictCheckpoint(CommandContext ctx, ParseResult p, PredictFlags f, List<string> files,
        string dir, bool color, bool overlay, bool probabilities, bool overwrite)
    {
        var ckpt = Checkpoint.Load(f.CheckpointPath(p));
        var outputs = OutputNames(files, color, overlay, probabilities
            ? ckpt.Dataset.Classes : 0, ckpt.Dataset.Task == SegmentationTaskKind.Panoptic);
        CheckOutputs(files, outputs, dir, overwrite);
        Directory.CreateDirectory(dir);
        using var predictor = f.Open(p, ckpt, ctx.Err);
        var clock = Stopwatch.StartNew();
        long objects = 0;
        foreach (var file in files) objects += PredictOne(ctx, predictor, file, dir, color,
            overlay, probabilities);
        ctx.FinishLine();
        ctx.Out.WriteLine($"predicted {files.Count} image(s)"
            + (predictor.Description.Task == SegmentationTaskKind.Semantic ? "" : $", {objects} objects,")
            + $" in {clock.Elapsed.TotalSeconds:F1} s into {dir}");
        return Cli.Ok;
    }

    /// <summary>One image through the checkpoint's predictor: its mask and the pictures asked for; returns the objects
    /// found (instance models).</summary>
    private static int PredictOne(CommandContext ctx, Predictor predictor, string file, string dir, bool color,
        bool overlay, bool probabilities)
    {
        var d = predictor.Description;
        var image = new ImageReader().ReadImage(file, d.InChannels);
        var pred = predictor.Predict(image, probabilities);
        var stem = Path.GetFileNameWithoutExtension(file);
        if (pred.Instances is { } objects)
        {
            // instance models: object numbers (16-bit) and an overlay of a colour per object with its contour
            MaskWriter.SaveInstances(Path.Combine(dir, stem + ".png"), objects.Objects, pred.Width, pred.Height);
            if (overlay) MaskWriter.SaveInstanceOverlay(Path.Combine(dir, stem + "_overlay.png"), image,
                objects.Objects);
            if (color) MaskWriter.SaveColorized(Path.Combine(dir, stem + "_color.png"), pred.Labels, pred.Width,
                pred.Height, d.ClassColors);
            if (d.Task == SegmentationTaskKind.Panoptic) // a class per pixel: each object's, and the stuff classes
                MaskWriter.SaveLabels(Path.Combine(dir, stem + "_classes.png"), Segmentation.Shared.InstanceDecoder
                    .ClassMap(objects.Objects, objects.Classes, objects.BestClass, d.Instances!.Things), pred.Width,
                    pred.Height);
            ctx.Status(ctx.Out, $"{Path.GetFileName(file)} -> {stem}.png ({objects.Count} objects)");
            return objects.Count;
        }
        MaskWriter.SaveLabels(Path.Combine(dir, stem + ".png"), pred.Labels, pred.Width, pred.Height);
        if (color) MaskWriter.SaveColorized(Path.Combine(dir, stem + "_color.png"), pred.Labels, pred.Width,
            pred.Height, d.ClassColors);
        if (overlay) MaskWriter.SaveOverlay(Path.Combine(dir, stem + "_overlay.png"), image, pred.Labels,
            d.ClassColors);
        if (pred.Probabilities is { } probs)
            for (int c = 0; c < pred.Classes; c++)
                MaskWriter.SaveProbability(Path.Combine(dir, $"{stem}_prob_{c}.png"), probs, c, pred.Width,
                    pred.Height);
        ctx.Status(ctx.Out, $"{Path.GetFileName(file)} -> {stem}.png");
        return 0;
    }

    /// <summary>The same views in Segmentation.Onnx's enum (the two enums list them in the same order).</summary>
    private static Segmentation.Onnx.TestTimeAugmentation OnnxTta(Inference.TestTimeAugmentation tta) =>
        (Segmentation.Onnx.TestTimeAugmentation)(int)tta;

    /// <summary>The ONNX predictor's options from the flags (views: none unless given).</summary>
    private static OnnxPredictorOptions OnnxOptions(CommandContext ctx, ParseResult p, PredictFlags f, int? classes,
        Size2? window, Size2? stride, Inference.TestTimeAugmentation? tta) => new()
    {
        Classes = classes, Tta = OnnxTta(tta ?? Inference.TestTimeAugmentation.None),
        Threads = Cli.ResolveThreads(p.GetValue(f.Threads), ctx.Err),
        Window = window is { } w ? (w.Height, w.Width) : null, Stride = stride is { } s ? (s.Height, s.Width) : null,
        SeedThreshold = p.GetValue(f.SeedThreshold), Task = f.TaskKind(p)?.ToString().ToLowerInvariant(),
    };

    /// <summary>--onnx: the same masks through Segmentation.Onnx (ONNX Runtime), with no TorchSharp in the
    /// path.</summary>
    private static int PredictOnnx(CommandContext ctx, ParseResult p, PredictFlags f, string model, int? classes,
        List<string> files, string dir, bool overlay, bool overwrite)
    {
        var (window, stride, tta) = f.Windowing(p);
        CheckOutputs(files, OutputNames(files, false, overlay, 0), dir, overwrite);
        Directory.CreateDirectory(dir);
        OnnxPredictor predictor;
        try
        {
            var options = OnnxOptions(ctx, p, f, classes, window, stride, tta);
            predictor = new OnnxPredictor(model, options);
            if (tta is null && predictor.Instances is { Queries: null })
            {
                // objects: the checkpoints' default
                predictor.Dispose();
                predictor = new OnnxPredictor(model, options with { Tta = OnnxTta(PredictFlags.DefaultTta(true)) });
            }
        }
        catch (Exception e) when (e is InvalidDataException
            || e is FileNotFoundException) { throw new SegmentationException(e.Message, e); }
        catch (ArgumentException e) { throw new OptionsException(e.Message); }
        using (predictor)
        {
            var clock = Stopwatch.StartNew();
            long found = 0;
            foreach (var file in files)
            {
                var image = predictor.Read(file);
                int width = image.Width, height = image.Height;
                var stem = Path.GetFileNameWithoutExtension(file);
                if (predictor.Instances is not null)
                {
                    var objects = predictor.PredictInstances(image);
                    OnnxPredictor.SaveInstances(Path.Combine(dir, stem + ".png"), objects.Objects, width, height);
                    if (overlay) predictor.SaveInstanceOverlay(Path.Combine(dir, stem + "_overlay.png"), image,
                        objects.Objects);
                    if (objects.ClassMap is { } map) OnnxPredictor.SaveLabels(Path.Combine(dir, stem + "_classes.png"),
                        map, width, height);
                    ctx.Status(ctx.Out, $"{Path.GetFileName(file)} -> {stem}.png ({objects.Count} objects)");
                    found += objects.Count;
                    continue;
                }
                var labels = predictor.Predict(image);
                OnnxPredictor.SaveLabels(Path.Combine(dir, stem + ".png"), labels, width, height);
                if (overlay) predictor.SaveOverlay(Path.Combine(dir, stem + "_overlay.png"), image, labels);
                ctx.Status(ctx.Out, $"{Path.GetFileName(file)} -> {stem}.png");
            }
            ctx.FinishLine();
            ctx.Out.WriteLine($"predicted {files.Count} image(s)"
                + (predictor.Instances is null ? "" : $", {found} objects,")
                + $" in {clock.Elapsed.TotalSeconds:F1} s into {dir} (ONNX Runtime, {predictor.Info.Classes} classes)");
        }
        return Cli.Ok;
    }

    /// <summary>For each input, the names of the files predict writes for it (the mask first).</summary>
    internal static List<List<string>> OutputNames(List<string> inputs, bool color, bool overlay,
        int probabilityClasses, bool panoptic = false) =>
        inputs.Select(file =>
        {
            var stem = Path.GetFileNameWithoutExtension(file);
            var names = new List<string> { stem + ".png" };
            if (color) names.Add(stem + "_color.png");
            if (overlay) names.Add(stem + "_overlay.png");
            if (panoptic) names.Add(stem + "_classes.png");
            for (int c = 0; c < probabilityClasses; c++) names.Add($"{stem}_prob_{c}.png");
            return names;
        }).ToList();

    /// <summary>
    /// Refuses, before anything is written, two inputs whose outputs share a name (a.png and a.jpg; a.png's overlay and
    /// an input named a_overlay.png), outputs that would overwrite an input, and, unless <paramref name="overwrite"/>,
    /// outputs that exist already.
    /// </summary>
    internal static void CheckOutputs(List<string> inputs, List<List<string>> outputs, string dir, bool overwrite)
    {
        var owner = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var clashes = new List<string>();
        for (int i = 0; i < inputs.Count; i++)
            foreach (var name in outputs[i])
                if (!owner.TryAdd(name, inputs[i]) && clashes.Count < 5)
                    clashes.Add($"{Path.GetFileName(owner[name])} and {Path.GetFileName(inputs[i])} would both write "
                        + $"{name}");
        if (clashes.Count > 0)
            throw new DataException($"{dir}: {string.Join("; ", clashes)}. Rename the inputs, or predict them into "
                + $"separate folders.", dir);
        var inputSet = inputs.Select(Path.GetFullPath).ToHashSet(StringComparer.Ordinal);
        var overwrites = owner.Keys.Select(n => Path.GetFullPath(Path.Combine(dir, n))).Where(inputSet.Contains).Take(3)
            .ToList();
        if (overwrites.Count > 0)
            throw new DataException($"{dir}: predicting here would overwrite the input "
                + $"{string.Join(", ", overwrites.Select(Path.GetFileName))}; choose another --out folder.",
                overwrites[0]);
        if (overwrite) return;
        var existing = owner.Keys.Where(n => File.Exists(Path.Combine(dir, n))).Order(StringComparer.Ordinal).ToList();
        if (existing.Count > 0)
            throw new OptionsException($"{dir}: {existing.Count} of the output files exist already "
                + $"({string.Join(", ", existing.Take(3))}{(existing.Count > 3 ? ", ..." : "")}); give --overwrite to "
                + $"replace them, or another --out.");
    }
}
