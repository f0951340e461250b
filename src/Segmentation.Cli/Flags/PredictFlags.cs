using System.CommandLine;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Layers;
using Segmentation.Shared;
using static TorchSharp.torch;

namespace Segmentation.Cli;

/// <summary>Flags of sliding-window and TTA prediction.</summary>
internal sealed class PredictFlags
{
    public required Option<string> Checkpoint { get; init; }
    public required Option<string?> Slide { get; init; }
    public required Option<string?> Stride { get; init; }
    public required Option<string?> Tta { get; init; }
    public required Option<string> Device { get; init; }
    public required Option<string> Precision { get; init; }
    public required Option<string?> Threads { get; init; }
    public required Option<double?> SeedThreshold { get; init; }
    /// <summary>predict's --task (null where the command has none).</summary>
    public Option<string?>? Task { get; private set; }

    /// <summary>Adds --task: the output to decode.</summary>
    public PredictFlags WithTask(Command cmd)
    {
        Task = new Option<string?>("--task") { Description = "The output to decode: semantic (the class map alone, "
            + "from any model), instance (objects; from an instance or panoptic model) or panoptic (segments). "
            + "Default: the task the model was trained for." };
        cmd.Options.Add(Task);
        return this;
    }

    /// <summary>--task as a task kind (null: not given).</summary>
    public SegmentationTaskKind? TaskKind(ParseResult p) => Task is not null && p.GetValue(Task) is { } t
        ? Cli.ParseEnum(t, "--task", ("semantic", SegmentationTaskKind.Semantic),
            ("instance", SegmentationTaskKind.Instance), ("panoptic", SegmentationTaskKind.Panoptic)) : null;

    public static PredictFlags Add(Command cmd)
    {
        var f = new PredictFlags
        {
            Checkpoint = new Option<string>("--checkpoint") { Description =
                "A .ckpt written by 'segment train' (or 'segment import')." },
            Slide = new Option<string?>("--slide") { Description =
                "Sliding-window size HxW (logits averaged where windows overlap)." },
            Stride = new Option<string?>("--stride") { Description =
                "Sliding-window stride HxW (default: 2/3 of the window)." },
            Tta = new Option<string?>("--tta") { Description = "Test-time augmentation, the logits of several views "
                + "averaged before anything is decoded: none; flip (the image and its mirror image); flips (and upside "
                + "down, and both: 4 passes); dihedral (those and their transposes: 8 passes). Default: flips for "
                + "instance and panoptic models (the best on the DSB2018 validation split: docs/plan.md), none for "
                + "semantic ones." },
            Device = new Option<string>("--device") { Description = "auto, cpu or cuda.", DefaultValueFactory = _
                => "auto" },
            Precision = new Option<string>("--precision") { Description =
                "fp32, bf16 or fp16: the convolutions' arithmetic (any checkpoint runs in any).",
                    DefaultValueFactory = _ => "fp32" },
            Threads = Cli.ThreadsFlag(),
            SeedThreshold = new Option<double?>("--seed-threshold") { Description = "Instance and panoptic models: "
                + "seed objects where P(object) is at least this, instead of the checkpoint's setting (which is the "
                + "best class, unless training chose one)." },
        };
        foreach (var o in new Option[] { f.Checkpoint, f.Slide, f.Stride, f.Tta, f.Device,
            f.Precision, f.Threads, f.SeedThreshold }) cmd.Options.Add(o);
        return f;
    }

    /// <summary>The --checkpoint given, or a usage error.</summary>
    public string CheckpointPath(ParseResult p) => p.GetValue(Checkpoint)
        ?? throw new OptionsException("--checkpoint is required.");

    /// <summary>A stride longer than the window (or not positive) refused before any work: it would leave pixels
    /// unpredicted.</summary>
    private void CheckWindow(ParseResult p)
    {
        if (p.GetValue(Slide) is not { } window) return;
        var w = Size2.Parse(window);
        var stride = p.GetValue(Stride) is { } given ? Size2.Parse(given) : w;
        if (SlidingWindow.Problem(w.Height, w.Width, stride.Height, stride.Width) is { } problem)
            throw new OptionsException($"--slide {window} --stride {p.GetValue(Stride)}: {problem}.");
    }

    /// <summary>--slide, --stride and --tta, checked.</summary>
    public (Size2? Window, Size2? Stride, TestTimeAugmentation? Tta) Windowing(ParseResult p)
    {
        var tta = p.GetValue(Tta);
        var mode = tta is null ? (int?)null : Shared.TestTimeViews.Parse(tta) ?? throw new OptionsException(
            $"--tta '{tta}' is not supported; use one of {string.Join(", ", Shared.TestTimeViews.Names)}.");
        if (p.GetValue(Stride) is not null && p.GetValue(Slide) is null)
            throw new OptionsException("--stride needs --slide.");
        CheckWindow(p);
        return (p.GetValue(Slide) is { } s ? Size2.Parse(s) : null, p.GetValue(Stride) is { } st ? Size2.Parse(st)
            : null, (TestTimeAugmentation?)mode);
    }

    /// <summary>The test-time augmentation when --tta is not given: <see cref="TestTimeAugmentation.Flips"/> for
    /// models that find objects (the best of the four on the DSB2018 validation split, docs/plan.md), none for
    /// semantic ones (no view raised ISBI 2012's pixel accuracy by more than 0.001).</summary>
    public static TestTimeAugmentation DefaultTta(bool objects) =>
        objects ? TestTimeAugmentation.Flips : TestTimeAugmentation.None;

    public Predictor Open(ParseResult p, Checkpoint ckpt, TextWriter? log = null)
    {
        var (window, stride, tta) = Windowing(p);
        var task = Predictor.Decoded(ckpt.Dataset.Task, TaskKind(p));
        // a mask classifier decodes its objects from one pass: no views by default
        bool queries = Segmentation.Tasks.TaskRegistry.For(ckpt.Dataset with { Task = task }, ckpt.Model)
            .DecodesQueries;
        return new Predictor(ckpt, new PredictorOptions
        {
            Device = p.GetValue(Device)!, Size = ckpt.Preprocessing.Size,
                Tta = tta ?? DefaultTta(task != SegmentationTaskKind.Semantic && !queries), Task = task,
                Precision = Precisions.Parse(p.GetValue(Precision)!),
            Window = window, Stride = stride,
            Threads = Cli.ResolveThreads(p.GetValue(Threads), log),
            SeedThreshold = p.GetValue(SeedThreshold) is { } seed ? ckpt.Dataset.Task != SegmentationTaskKind.Semantic
                ? seed : throw new OptionsException("--seed-threshold applies to instance and panoptic models; this "
                    + "one is semantic.") : null,
        });
    }
}
