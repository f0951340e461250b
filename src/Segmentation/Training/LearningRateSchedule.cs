namespace Segmentation.Training;

/// <summary>Learning-rate schedule after the warm-up.</summary>
public enum ScheduleKind
{
    /// <summary>lr = base * (1 - t)^power (<see cref="ScheduleOptions.PolyPower"/>: 0.9 by default, as mmsegmentation's
    /// and torchvision's segmentation recipes; SegFormer's is 1.0).</summary>
    Poly,
    /// <summary>Half a cosine from base to the minimum.</summary>
    Cosine,
    /// <summary>Constant base rate.</summary>
    Constant,
}

/// <summary>Linear warm-up then poly, cosine or constant; a pure function of the optimiser step, so resuming needs only
/// the step.</summary>
internal sealed record LearningRateSchedule(ScheduleKind Kind, double BaseRate, long TotalSteps, long WarmupSteps = 0,
    double Power = 0.9, double MinRate = 0)
{
    /// <summary>The rate for optimiser step <paramref name="step"/> (0-based).</summary>
    public double RateAt(long step)
    {
        if (WarmupSteps > 0 && step < WarmupSteps)
            return BaseRate * (step + 1) / WarmupSteps;
        long span = Math.Max(1, TotalSteps - WarmupSteps);
        double t = Math.Clamp((double)(step - WarmupSteps) / span, 0, 1);
        return Kind switch
        {
            ScheduleKind.Poly => MinRate + (BaseRate - MinRate) * Math.Pow(1 - t, Power),
            ScheduleKind.Cosine => MinRate + (BaseRate - MinRate) * 0.5 * (1 + Math.Cos(Math.PI * t)),
            _ => BaseRate,
        };
    }
}
