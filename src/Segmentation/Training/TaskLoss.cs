using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Tasks;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>
/// The training loss of a task: the loss of the classes (the options' loss), plus the terms of the task's own targets
/// (<see cref="SegmentationTask.OwnLoss"/>: the distance target's, say). Disposes the loss of the classes when it owns
/// it.
/// </summary>
internal sealed class TaskLoss(ISegmentationLoss classes, SegmentationTask task, bool ownsClasses) : ISegmentationLoss,
    IDisposable
{
    /// <inheritdoc />
    public Tensor Compute(ModelOutputs outputs, Targets targets)
    {
        var value = classes.Compute(outputs, targets);
        if (task.OwnLoss(outputs, targets) is not { } own) return value;
        using var scope = NewDisposeScope();
        return (value + own).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (ownsClasses) (classes as IDisposable)?.Dispose();
    }
}
