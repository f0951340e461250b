using Segmentation.Data;

namespace Segmentation.Training;

/// <summary>Training loss (see <see cref="LossRegistry"/> for the names and what each is built from).</summary>
public enum LossKind
{
    /// <summary>Cross-entropy.</summary>
    CrossEntropy,
    /// <summary>Soft Dice.</summary>
    Dice,
    /// <summary>Cross-entropy + Dice (weights 1 and <see cref="TrainerOptions.DiceWeight"/>).</summary>
    CrossEntropyDice,
    /// <summary>Focal loss (<see cref="FocalLoss"/>, exponent <see cref="TrainerOptions.FocalGamma"/>).</summary>
    Focal,
    /// <summary>Lovász-softmax (<see cref="LovaszSoftmaxLoss"/>), a surrogate of 1 - IoU.</summary>
    Lovasz,
    /// <summary>Cross-entropy + Lovász-softmax, equal weights (the paper trains this way from the start).</summary>
    CrossEntropyLovasz,
    /// <summary>Mask2Former's matched set loss on per-query class and mask logits (<see
    /// cref="MaskClassificationLoss"/>).</summary>
    MaskClassification,
}

/// <summary>
/// The losses there are: one line each, with the name the CLI and run files use and how the trainer builds it from
/// its options. A new loss is an <see cref="ISegmentationLoss"/>, a <see cref="LossKind"/> member and a line here.
/// </summary>
public static class LossRegistry
{
    /// <summary>One loss: its kind, its name (<c>--loss</c>), a line of help, and how to build it.</summary>
    public sealed record Entry(LossKind Kind, string Name, string Description, Func<TrainerOptions,
        ISegmentationLoss> Create);

    /// <summary>Every loss, in the order help lists them.</summary>
    public static IReadOnlyList<Entry> All { get; } = new Entry[]
    {
        new(LossKind.CrossEntropy, "ce", "cross-entropy (class weights, label smoothing)", CrossEntropy),
        new(LossKind.Dice, "dice", "soft Dice over the classes", _ => new DiceLoss()),
        new(LossKind.CrossEntropyDice, "ce+dice", "cross-entropy + DiceWeight x Dice",
            o => new CombinedLoss((CrossEntropy(o), 1.0), (new DiceLoss(), o.DiceWeight))),
        new(LossKind.Focal, "focal", "focal loss, (1 - p)^FocalGamma x cross-entropy per pixel",
            o => new FocalLoss(o.FocalGamma)),
        new(LossKind.Lovasz, "lovasz", "Lovasz-softmax, a surrogate of 1 - IoU", _ => new LovaszSoftmaxLoss()),
        new(LossKind.CrossEntropyLovasz, "ce+lovasz", "cross-entropy + Lovasz-softmax",
            o => new CombinedLoss((CrossEntropy(o), 1.0), (new LovaszSoftmaxLoss(), 1.0))),
        new(LossKind.MaskClassification, "mask2former", "Mask2Former's loss: queries matched to the classes' masks, "
            + "2 x class cross-entropy + 5 x mask cross-entropy + 5 x Dice on sampled points, auxiliary predictions "
            + "too", _ => new MaskClassificationLoss()),
    };

    private static ISegmentationLoss CrossEntropy(TrainerOptions o) => new CrossEntropyLoss(o.ClassWeights,
        ignoreIndex: Labels.Ignore, labelSmoothing: o.LabelSmoothing);

    /// <summary>The loss <paramref name="options"/> ask for, built from them (dispose it if it is <see
    /// cref="IDisposable"/>); a loss object is not built here.</summary>
    public static ISegmentationLoss Create(TrainerOptions options) => options.Loss.Kind is { } kind
        ? Find(kind).Create(options)
        : throw new OptionsException($"The loss is a loss object ({options.Loss}); it is used as it is, not built. "
            + (options.Loss.Object is null ? "A run recorded with one needs it given again (TrainerOptions.Loss)."
            : ""));

    /// <summary>The kind named <paramref name="name"/> (case-insensitive); the error lists the names.</summary>
    public static LossKind Parse(string name) =>
        All.FirstOrDefault(e => string.Equals(e.Name, name, StringComparison.OrdinalIgnoreCase))?.Kind
        ?? throw new OptionsException($"Loss '{name}' is not one of: {string.Join(", ", All.Select(e => e.Name))}.");

    /// <summary>The name of <paramref name="kind"/>.</summary>
    public static string NameOf(LossKind kind) => Find(kind).Name;

    private static Entry Find(LossKind kind) => All.FirstOrDefault(e => e.Kind == kind)
        ?? throw new OptionsException($"Loss {kind} is not one of: {string.Join(", ", All.Select(e => e.Kind))}.");
}
