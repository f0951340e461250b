using Segmentation.Data;
using Segmentation.Models.Layers;
using Segmentation.Models;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>
/// The loss of the distance target (<see cref="InstanceTarget.Distance"/>): the loss of the classes, plus the binary
/// cross-entropy of the distance output's logits against the normalised distances (StarDist's object-probability
/// loss), averaged over the pixels that are not ignored, weight 1.
/// </summary>
internal sealed class DistanceLoss(ISegmentationLoss classes) : ISegmentationLoss, IDisposable
{
    /// <inheritdoc />
    public Tensor Compute(ModelOutputs outputs, Targets targets)
    {
        using var scope = NewDisposeScope();
        var logits = outputs[InstanceSegmentation.DistanceName].to_type(ScalarType.Float32);
        var valid = targets.Mask.ne(Scalars.Ignore).to_type(ScalarType.Float32);
        var bce = nn.functional.binary_cross_entropy_with_logits(logits, targets[InstanceSegmentation.DistanceName],
            reduction: nn.Reduction.None);
        var term = (bce * valid).sum() / valid.sum().clamp_min(Scalars.One);
        return (classes.Compute(outputs, targets) + term).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public void Dispose() => (classes as IDisposable)?.Dispose();
}
