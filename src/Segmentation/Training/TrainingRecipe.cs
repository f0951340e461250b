namespace Segmentation.Training;

/// <summary>
/// The optimiser settings a model is trained with where it was published: an architecture's defaults (registered for
/// it with <see cref="TrainingRecipes.Add"/>). <see
/// cref="TrainerOptions.Recommended"/> starts from it; <c>segment train</c> takes every value a flag does not give from
/// it, and <c>run.json</c> records which recipe that was (<see cref="TrainerOptions.Recipe"/>) and every value.
/// </summary>
public sealed record TrainingRecipe
{
    /// <summary>The U-Nets' recipe (the trainer's defaults): AdamW 1e-3, weight decay 1e-4, poly 0.9, 5 %
    /// warm-up.</summary>
    public static TrainingRecipe Default { get; } = new()
    {
        Name = "unet",
        Source = "the common U-Net recipes (torchvision's and mmsegmentation's poly schedule with AdamW): AdamW 1e-3, "
            + "weight decay 1e-4, poly power 0.9, 5 % linear warm-up, one rate for all layers",
    };

    /// <summary>A short name, recorded in <c>run.json</c>.</summary>
    public required string Name { get; init; }
    /// <summary>Where the values come from and what they are, in words.</summary>
    public required string Source { get; init; }
    /// <summary>The optimiser.</summary>
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.AdamW;
    /// <summary>The base learning rate (the decoder's and head's; the encoder's is this times <see
    /// cref="EncoderLearningRateScale"/>).</summary>
    public double LearningRate { get; init; } = 1e-3;
    /// <summary>The encoder's share of <see cref="LearningRate"/>.</summary>
    public double EncoderLearningRateScale { get; init; } = 1;
    /// <summary>Weight decay.</summary>
    public double WeightDecay { get; init; } = 1e-4;
    /// <summary>The schedule after the warm-up.</summary>
    public ScheduleKind Schedule { get; init; } = ScheduleKind.Poly;
    /// <summary>The poly schedule's power.</summary>
    public double PolyPower { get; init; } = 0.9;
    /// <summary>Linear warm-up as a share of all optimiser steps.</summary>
    public double WarmupFraction { get; init; } = 0.05;
    /// <summary>The global gradient norm's clip (null: none).</summary>
    public double? GradientClipNorm { get; init; }
    /// <summary>The loss the architecture trains with (null: the trainer's default).</summary>
    public LossKind? Loss { get; init; }

    /// <summary><paramref name="options"/> with this recipe's values and name.</summary>
    public TrainerOptions ApplyTo(TrainerOptions options) => options with
    {
        Recipe = Name,
        Optimizer = options.Optimizer with { Kind = Optimizer, LearningRate = LearningRate,
            EncoderLearningRateScale = EncoderLearningRateScale, WeightDecay = WeightDecay,
            GradientClipNorm = GradientClipNorm ?? options.Optimizer.GradientClipNorm },
        Schedule = options.Schedule with { Kind = Schedule, PolyPower = PolyPower, WarmupFraction = WarmupFraction },
        Loss = Loss is { } loss ? loss : options.Loss,
    };

    /// <summary>
    /// Mask2Former's (Cheng et al. 2022, and transformers' defaults): AdamW 1e-4 with weight decay 0.05, the
    /// pretrained encoder at 0.1 x that, poly 0.9, the whole model's gradient norm clipped to 0.01, and its matched set
    /// loss. From scratch every layer takes 1e-4. The paper has no warm-up; the 5 % linear warm-up of the other
    /// recipes is kept, as short runs on small data otherwise start with the full rate on random queries.
    /// </summary>
    public static TrainingRecipe Mask2Former(bool pretrainedEncoder) => new()
    {
        Name = pretrainedEncoder ? "mask2former-finetune" : "mask2former-scratch",
        Source = "Mask2Former's paper: AdamW 1e-4, weight decay 0.05, the pretrained encoder at 0.1 x, poly 0.9, "
            + "gradient norm clipped to 0.01 over the whole model, the matched set loss (2 class, 5 mask, 5 Dice); "
            + "5 % linear warm-up",
        LearningRate = 1e-4, EncoderLearningRateScale = pretrainedEncoder ? 0.1 : 1, WeightDecay = 0.05,
        PolyPower = 0.9, GradientClipNorm = 0.01, Loss = LossKind.MaskClassification,
    };

    /// <summary>
    /// SegFormer's (Xie et al. 2021, and mmsegmentation's SegFormer configs): AdamW with weight decay 0.01, a poly
    /// schedule of power 1.0 after a linear warm-up; a pretrained encoder at 6e-5 and the decode head at 10x that
    /// (6e-4). From scratch, which the paper does not do, every layer takes the head's 6e-4. The paper warms up over
    /// 1,500 of 160,000 iterations; fine-tunes are usually far shorter, so the warm-up is a share of the steps (5 %),
    /// as for the U-Nets.
    /// </summary>
    public static TrainingRecipe Segformer(bool pretrainedEncoder) => new()
    {
        Name = pretrainedEncoder ? "segformer-finetune" : "segformer-scratch",
        Source = pretrainedEncoder
            ? "SegFormer's paper: AdamW, 6e-5 for the pretrained encoder and 10x (6e-4) for the decode head, weight "
                + "decay 0.01, poly power 1.0, linear warm-up (5 % of the steps; the paper's 1,500 of 160k iterations)"
            : "SegFormer's paper for a model with no pretrained part: AdamW 6e-4 (the paper's decode-head rate) for "
                + "every layer, weight decay 0.01, poly power 1.0, 5 % linear warm-up",
        LearningRate = 6e-4, EncoderLearningRateScale = pretrainedEncoder ? 0.1 : 1, WeightDecay = 0.01,
        PolyPower = 1.0,
    };
}
