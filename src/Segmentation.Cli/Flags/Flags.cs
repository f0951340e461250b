using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Layers;
using Segmentation.Training;

namespace Segmentation.Cli;

/// <summary>The flags that say how masks are read (shared by train, eval and score).</summary>
internal sealed class DataFlags
{
    public required Option<int?> Classes { get; init; }
    public required Option<string> Mask { get; init; }
    public required Option<string?> Palette { get; init; }
    public required Option<int> IgnoreIndex { get; init; }
    public required Option<bool> SkipUnpaired { get; init; }
    public required Option<int?> BinaryThreshold { get; init; }
    public required Option<long?> MaxPixels { get; init; }
    public required Option<string> Task { get; init; }
    public required Option<int?> BoundaryWidth { get; init; }
    public required Option<double?> BoundaryWeight { get; init; }
    public required Option<int?> MinObjectSize { get; init; }
    public required Option<string?> Things { get; init; }
    public required Option<string?> InstanceTarget { get; init; }

    public static DataFlags Add(Command cmd)
    {
        var f = new DataFlags
        {
            Classes = new Option<int?>("--classes") { Description =
                "Number of classes (default: detected from the masks)." },
            Mask = new Option<string>("--mask") { Description =
                "Mask encoding: auto, index, binary, palette or indexed.", DefaultValueFactory = _ => "auto" },
            Palette = new Option<string?>("--palette") { Description =
                "CSV or JSON file with class names and colours (index,name,r,g,b)." },
            IgnoreIndex = new Option<int>("--ignore-index") { Description =
                "Mask value to ignore (e.g. 11 for CamVid's void).", DefaultValueFactory = _ => Labels.Ignore },
            SkipUnpaired = new Option<bool>("--skip-unpaired") { Description =
                "Skip images without masks (and masks without images) instead of failing." },
            BinaryThreshold = new Option<int?>("--binary-threshold") { Description =
                "Binary masks: gray values at or above this are the foreground (for masks saved lossily, e.g. JPEG)." },
            MaxPixels = new Option<long?>("--max-pixels") { Description =
                "Largest image or mask accepted, in pixels (default 100,000,000), checked from the header before "
                    + "decoding." },
            Task = new Option<string>("--task") { Description = "semantic (a class per pixel), instance (every "
                + "object its own mask: masks of object numbers, 16-bit PNG, or the Data Science Bowl layout) or "
                + "panoptic (objects of thing classes and regions of stuff classes: classes/ beside masks/).",
                DefaultValueFactory = _ => "semantic" },
            Things = new Option<string?>("--things") { Description =
                "Panoptic data: the thing classes, e.g. 1,2 (default: the classes whose pixels carry object "
                    + "numbers)." },
            BoundaryWidth = new Option<int?>("--boundary-width") { Description =
                "Instance data: object pixels this close to another object or the background are its boundary class "
                    + "(default 2)." },
            BoundaryWeight = new Option<double?>("--boundary-weight") { Description =
                "Instance data: loss weight of the boundary class (default 2)." },
            MinObjectSize = new Option<int?>("--min-object-size") { Description =
                "Instance data: smallest predicted object kept, in pixels (default 8)." },
            InstanceTarget = new Option<string?>("--instance-target") { Description =
                "Instance data, training: boundary (the classes and each object's boundary; the default) or distance "
                    + "(one more output, each object pixel's distance to its edge over the object's largest: objects "
                    + "are seeded from its peaks, as StarDist's object probability)." },
        };
        foreach (var o in new Option[] { f.Classes, f.Mask, f.Palette, f.IgnoreIndex, f.SkipUnpaired,
            f.BinaryThreshold, f.MaxPixels, f.Task, f.BoundaryWidth, f.BoundaryWeight, f.MinObjectSize, f.Things,
            f.InstanceTarget })
            cmd.Options.Add(o);
        return f;
    }

    /// <summary>True when <paramref name="spec"/> is a folder laid out as train/ and val/ (rather than images/ and
    /// masks/).</summary>
    public static bool IsSplitFolder(string spec) => RunConfig.IsSplitFolder(spec);

    public static DatasetOptions Read(ParseResult p, DataFlags f, int? inChannels) => new()
    {
        Classes = p.GetValue(f.Classes),
        Encoding = Cli.ParseEnum(p.GetValue(f.Mask)!, "--mask", ("auto", MaskEncoding.Auto),
            ("index", MaskEncoding.Index), ("binary", MaskEncoding.Binary),
            ("palette", MaskEncoding.Palette), ("indexed", MaskEncoding.IndexedPng)),
        PaletteFile = p.GetValue(f.Palette),
        IgnoreIndex = p.GetValue(f.IgnoreIndex),
        SkipUnpaired = p.GetValue(f.SkipUnpaired),
        InChannels = inChannels,
        MaxPixels = p.GetValue(f.MaxPixels) is { } max ? max >= 1 ? max
            : throw new OptionsException($"--max-pixels {max} must be at least 1.") : ImageReader.DefaultMaxPixels,
        BinaryThreshold = p.GetValue(f.BinaryThreshold) is { } t
            ? p.GetValue(f.Mask) is "binary" or "auto" ? t
            : throw new OptionsException($"--binary-threshold {t} applies to binary masks; --mask is "
            + $"{p.GetValue(f.Mask)}.")
            : null,
        Task = ReadTask(p, f),
        Instances = ReadInstances(p, f),
        ThingClasses = p.GetValue(f.Things) is { } things ? things.Split(',').Select(t => int.TryParse(t.Trim(),
            out var c) && c >= 0 ? c
                : throw new OptionsException($"--things '{things}': give class numbers, e.g. 1,2."))
            .ToArray() : null,
    };

    /// <summary>--task; the instance flags ask for instance data.</summary>
    public static SegmentationTaskKind ReadTask(ParseResult p, DataFlags f)
    {
        var task = Cli.ParseEnum(p.GetValue(f.Task)!, "--task", ("semantic", SegmentationTaskKind.Semantic),
            ("instance", SegmentationTaskKind.Instance), ("panoptic", SegmentationTaskKind.Panoptic));
        if (task != SegmentationTaskKind.Panoptic && p.GetValue(f.Things) is not null)
            throw new OptionsException("--things names the thing classes of panoptic data: add --task panoptic.");
        if (task == SegmentationTaskKind.Semantic && (p.GetValue(f.BoundaryWidth) ?? p.GetValue(f.MinObjectSize))
            is not null || task == SegmentationTaskKind.Semantic && (p.GetValue(f.BoundaryWeight) is not null
                || p.GetValue(f.InstanceTarget) is not null))
            throw new OptionsException("--boundary-width, --boundary-weight, --min-object-size and --instance-target "
                + "apply to instance data: add --task instance.");
        return task;
    }

    private static InstanceSettings? ReadInstances(ParseResult p, DataFlags f)
    {
        var s = new InstanceSettings();
        s = s with
        {
            BoundaryWidth = p.GetValue(f.BoundaryWidth) ?? s.BoundaryWidth,
            BoundaryWeight = p.GetValue(f.BoundaryWeight) ?? s.BoundaryWeight,
            MinSize = p.GetValue(f.MinObjectSize) ?? s.MinSize,
            Target = p.GetValue(f.InstanceTarget) is { } target ? Cli.ParseEnum(target, "--instance-target",
                ("boundary", Data.InstanceTarget.Boundary), ("distance", Data.InstanceTarget.Distance)) : s.Target,
        };
        s.ValidateSizes();
        return s;
    }
}

/// <summary>The flags that shape the U-Net (shared by train, summary and bench).</summary>
internal sealed class ModelFlags
{
    public required Option<int?> BaseChannels { get; init; }
    public required Option<int?> Depth { get; init; }
    public required Option<string> Upsampling { get; init; }
    public required Option<string> Norm { get; init; }
    public required Option<double> Dropout { get; init; }
    public required Option<string> Encoder { get; init; }
    public required Option<string> Arch { get; init; }
    public required Option<int> FullResolutionSkip { get; init; }

    public static ModelFlags Add(Command cmd)
    {
        var f = new ModelFlags
        {
            Arch = new Option<string>("--arch")
            {
                Description = "The architecture: "
                    + string.Join(", ", ModelRegistry.ArchitectureNames().Select(a => a.Name)
                    .Order(StringComparer.Ordinal))
                    + ". unet (the default) is the paper's U-Net, or smp's Unet on another encoder; an encoder whose "
                    + "default is another architecture (mit-b*: segformer) gets that one. 'segment models' lists them.",
                DefaultValueFactory = _ => "unet",
            },
            BaseChannels = new Option<int?>("--base-channels") { Description =
                "Channels of the first level (default 64; shapes: 16)." },
            Depth = new Option<int?>("--depth") { Description = "Down-samplings (default 4)." },
            Upsampling = new Option<string>("--upsampling") { Description = "transposed or bilinear.",
                DefaultValueFactory = _ => "transposed" },
            Norm = new Option<string>("--norm") { Description = "batch, group or none.", DefaultValueFactory = _
                => "batch" },
            Dropout = new Option<double>("--dropout") { Description = "Dropout before the bottleneck.",
                DefaultValueFactory = _ => 0 },
            Encoder = new Option<string>("--encoder") { Description = "The encoder: "
                + string.Join(", ", ModelRegistry.Parts(PartKind.Encoder).Select(e => e.Name))
                + ". unet is the paper's (--base-channels, --depth, --upsampling and --dropout shape it); the others "
                + "take smp's decoder in a U-Net; mlnet-resnet18 takes --encoder-weights builtin (ML.NET's ImageNet "
                + "ResNet-18). 'segment models' describes each.", DefaultValueFactory = _ => "unet" },
            FullResolutionSkip = new Option<int>("--full-res-skip") { Description =
                "With a ResNet --encoder: channels of a full-resolution skip into smp's decoder (two 3x3 convolutions "
                    + "on the input, concatenated at its last block, where smp's Unet has no skip). Default 0: none.",
                DefaultValueFactory = _ => 0 },
        };
        foreach (var o in new Option[] { f.Arch, f.Encoder, f.BaseChannels, f.Depth, f.Upsampling, f.Norm,
            f.Dropout, f.FullResolutionSkip }) cmd.Options.Add(o);
        return f;
    }

    /// <summary>Model options; classes and input channels are filled in from the data later.</summary>
    public static ModelDescription Read(ParseResult p, ModelFlags f, bool shapes, int inChannels = 3, int classes = 2)
        => Cli.Model(inChannels, classes,
        p.GetValue(f.BaseChannels) ?? (shapes ? TrainCommand.ShapesDefaults.BaseChannels : 64), p.GetValue(f.Depth)
            ?? (shapes ? TrainCommand.ShapesDefaults.Depth : 4),
        p.GetValue(f.Upsampling)!, p.GetValue(f.Norm)!, p.GetValue(f.Dropout), p.GetValue(f.Encoder)!,
            p.GetValue(f.Arch)!, p.GetValue(f.FullResolutionSkip));
}

