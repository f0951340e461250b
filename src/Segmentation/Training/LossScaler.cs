using TorchSharp;
using static TorchSharp.torch;
using Segmentation.Checkpoints;

namespace Segmentation.Training;

/// <summary>
/// Dynamic loss scaling for float16 training, as PyTorch's <c>GradScaler</c> does it: the loss is multiplied by
/// <see cref="Scale"/> before the backward pass so that small gradients survive float16; before the optimiser step the
/// gradients are divided by it again and checked. A step with an infinite or NaN gradient is skipped and the scale is
/// multiplied by <see cref="BackoffFactor"/>; after <see cref="GrowthInterval"/> good steps in a row it is multiplied
/// by <see cref="GrowthFactor"/>. Its state (<see cref="Scale"/>, <see cref="GoodSteps"/>) is part of a checkpoint.
/// </summary>
internal sealed class LossScaler
{
    /// <summary>PyTorch's defaults: 2^16, x2 every 2000 good steps, x0.5 on overflow.</summary>
    public LossScaler(double initialScale = 65536, double growthFactor = 2, double backoffFactor = 0.5,
        int growthInterval = 2000)
    {
        if (!(initialScale > 0) || double.IsInfinity(initialScale))
            throw new OptionsException($"Loss scale {initialScale} must be a positive number.");
        if (!(growthFactor > 1))
            throw new OptionsException($"Loss-scale growth factor {growthFactor} must be above 1.");
        if (!(backoffFactor > 0 && backoffFactor < 1))
            throw new OptionsException($"Loss-scale back-off factor {backoffFactor} must be in (0, 1).");
        if (growthInterval < 1)
            throw new OptionsException($"Loss-scale growth interval {growthInterval} must be at least 1.");
        Scale = initialScale; GrowthFactor = growthFactor; BackoffFactor = backoffFactor; GrowthInterval =
            growthInterval;
    }

    /// <summary>The factor the loss is multiplied by.</summary>
    public double Scale { get; private set; }
    /// <summary>Good steps since the last change of scale.</summary>
    public int GoodSteps { get; private set; }
    /// <summary>Steps skipped for a non-finite gradient, in all.</summary>
    public long SkippedSteps { get; private set; }
    /// <summary>Steps skipped in a row, up to the latest.</summary>
    public int ConsecutiveSkips { get; private set; }
    /// <summary>Multiplies the scale after <see cref="GrowthInterval"/> good steps.</summary>
    public double GrowthFactor { get; }
    /// <summary>Multiplies the scale after a step with a non-finite gradient.</summary>
    public double BackoffFactor { get; }
    /// <summary>Good steps in a row before the scale grows.</summary>
    public int GrowthInterval { get; }

    /// <summary>Restores a saved state (from a checkpoint).</summary>
    public void Restore(double scale, int goodSteps)
    {
        if (!(scale > 0) || double.IsInfinity(scale) || goodSteps < 0)
            throw new CheckpointException($"Saved loss-scale state ({scale}, {goodSteps} good steps) is not valid.");
        Scale = scale; GoodSteps = goodSteps;
    }

    /// <summary>Takes the state the device kept (<see cref="DeviceLossScaler.ReadInto"/>).</summary>
    internal void Set(double scale, int goodSteps, long skippedSteps, int consecutiveSkips) =>
        (Scale, GoodSteps, SkippedSteps, ConsecutiveSkips) = (scale, goodSteps, skippedSteps, consecutiveSkips);

    /// <summary>The loss multiplied by <see cref="Scale"/> (call backward on this).</summary>
    public Tensor ScaleLoss(Tensor loss) => loss * Scale;

    /// <summary>
    /// Divides every gradient of <paramref name="parameters"/> by <see cref="Scale"/> in place and says whether all of
    /// them are finite (one read-back for the whole model).
    /// </summary>
    public bool Unscale(IEnumerable<Tensor> parameters)
    {
        using var scope = NewDisposeScope();
        var grads = parameters.Select(p => p.grad).Where(g => g is not null).Select(g => g!).ToList();
        if (grads.Count == 0) return true;
        double inverse = 1.0 / Scale;
        var finite = new List<Tensor>(grads.Count);
        using (no_grad())
        {
            foreach (var g in grads)
            {
                g.mul_(inverse);
                finite.Add(g.isfinite().all());
            }
            return stack(finite).all().item<bool>();
        }
    }

    /// <summary>
    /// Records a step's outcome: after a non-finite one (which the caller skipped) the scale backs off; after
    /// <see cref="GrowthInterval"/> finite ones in a row it grows.
    /// </summary>
    public void Update(bool finite)
    {
        if (!finite)
        {
            Scale *= BackoffFactor;
            GoodSteps = 0;
            SkippedSteps++;
            ConsecutiveSkips++;
            return;
        }
        ConsecutiveSkips = 0;
        if (++GoodSteps >= GrowthInterval)
        {
            double grown = Scale * GrowthFactor;
            if (!double.IsInfinity(grown) && grown <= float.MaxValue) Scale = grown;
            GoodSteps = 0;
        }
    }
}
