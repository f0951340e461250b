using Segmentation.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>
/// An exponential moving average of a model's weights (Polyak averaging; timm's <c>ModelEmaV2</c>): after every
/// optimiser step n (counted from 1), each floating-point tensor of the state dict, parameters and normalisation
/// statistics alike, becomes <c>average = d * average + (1 - d) * weight</c> with <c>d = min(decay, (1 + n) / (10 +
/// n))</c>, so the first steps are not averaged with the random start; integer buffers (a batch norm's step count)
/// are copied. Validation, the checkpoints' weights and everything that predicts from them use the average; training
/// goes on from the model's own weights, which a checkpoint keeps beside it for an exact resume.
/// </summary>
internal sealed class WeightAverage : IDisposable
{
    private readonly List<(Tensor Model, Tensor Average)> pairs = new();

    /// <summary>The decay at full strength, in (0, 1).</summary>
    public double Decay { get; }

    /// <summary>Starts the average at the model's present weights.</summary>
    public WeightAverage(SegmentationModel model, double decay)
    {
        if (!(decay > 0 && decay < 1))
            throw new OptionsException($"The weight average's decay is {decay}; it must be between 0 and 1.");
        Decay = decay;
        using var _ = no_grad();
        foreach (var (_, t) in model.state_dict())
            pairs.Add((t, t.detach().clone().DetachFromDisposeScope()));
    }

    /// <summary>The decay used after optimiser step <paramref name="step"/> (1 for the first).</summary>
    public double DecayAt(long step) => Math.Min(Decay, (1.0 + step) / (10.0 + step));

    /// <summary>Folds the model's weights after optimiser step <paramref name="step"/> into the average.</summary>
    public void Update(long step)
    {
        double d = DecayAt(step);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var (w, avg) in pairs)
        {
            if (avg.is_floating_point()) avg.mul_(d).add_(w, alpha: 1 - d);
            else avg.copy_(w);
        }
    }

    /// <summary>Exchanges the model's weights and the average, in place (the model's tensors stay the same
    /// objects, so the optimiser's references hold): call it again to undo.</summary>
    public void Swap()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var (w, avg) in pairs)
        {
            var held = w.clone();
            w.copy_(avg);
            avg.copy_(held);
        }
    }

    /// <summary>Runs <paramref name="action"/> with the average in the model, and the model's own weights back
    /// after, whatever happens.</summary>
    public T With<T>(Func<T> action)
    {
        Swap();
        try { return action(); }
        finally { Swap(); }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var (_, avg) in pairs) avg.Dispose();
        pairs.Clear();
    }
}
