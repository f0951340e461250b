using System.Text.Json.Nodes;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Tests.Training;

/// <summary>
/// A user's loss, written against the seam: it reads the model's outputs and the batch's targets by name. It counts its
/// calls and whether anyone disposed it.
/// </summary>
public sealed class CountingCrossEntropy : ISegmentationLoss, IDisposable
{
    public int Calls { get; private set; }
    public bool Disposed { get; private set; }

    public Tensor Compute(ModelOutputs outputs, Targets targets)
    {
        Calls++;
        return nn.functional.cross_entropy(outputs[ModelOutputs.LogitsName], targets[Targets.MaskName], ignore_index: Labels.Ignore);
    }

    public void Dispose() => Disposed = true;
}

/// <summary>The loss seam and the run folder the trainer owns, without the CLI.</summary>
public class LossObjectTests
{
    private static (SegmentationDataset Train, SegmentationDataset Val) Shapes() =>
        SegmentationDataset.Shapes(new ShapesOptions { Count = 16, Size = 32, Seed = 11, MaxShapes = 2 }).Split(0.75, seed: 0);

    private static SegmentationModel Tiny() => new(ModelDescription.UNet(classes: 4, baseChannels: 4, depth: 2, seed: 3));

    [Fact]
    public void A_loss_object_trains_as_the_same_loss_by_kind_and_is_left_to_its_owner()
    {
        var (train, val) = Shapes();
        var options = new TrainerOptions { Epochs = 2, BatchSize = 4, Seed = 5, Workers = 1, Device = "cpu", Augment = false };
        TrainingResult byKind, byObject;
        using (var model = Tiny())
        using (var trainer = new Trainer(model, options with { Loss = LossKind.CrossEntropy }))
            byKind = trainer.Fit(train, val);
        var loss = new CountingCrossEntropy();
        using (var model = Tiny())
        using (var trainer = new Trainer(model, options with { Loss = TrainingLoss.From(loss) }))
            byObject = trainer.Fit(train, val);

        // Cross-entropy either way: the same losses, epoch by epoch (same seed, same data, same arithmetic).
        Assert.Equal(byKind.History.Select(r => r.TrainLoss), byObject.History.Select(r => r.TrainLoss));
        Assert.Equal(byKind.History.Select(r => r.ValLoss), byObject.History.Select(r => r.ValLoss));
        Assert.Equal(2 * 3 + 2 * 1, loss.Calls); // 3 training batches and 1 validation batch per epoch
        Assert.False(loss.Disposed); // the trainer disposes only what it built
    }

    [Fact]
    public void The_run_folder_is_written_by_the_trainer_and_a_loss_object_is_recorded_by_its_type()
    {
        using var dir = new TempDir();
        var (train, val) = Shapes();
        var options = new TrainerOptions
        {
            Epochs = 2, BatchSize = 4, Seed = 5, Workers = 1, Device = "cpu", Augment = false,
            Loss = TrainingLoss.From(new CountingCrossEntropy()),
            Checkpoints = new() { Directory = dir.Path },
        };
        using (var model = Tiny())
        using (var trainer = new Trainer(model, options))
            trainer.Fit(train, val);

        var metrics = File.ReadAllLines(Path.Combine(dir.Path, "metrics.jsonl"));
        Assert.Equal(2, metrics.Length);
        Assert.Equal(2, (int)JsonNode.Parse(metrics[1])!["epoch"]!);
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, "summary.json")))!;
        Assert.Equal("completed", (string)summary["stopReason"]!);
        Assert.Equal(Path.Combine(dir.Path, "best.ckpt"), (string)summary["checkpoint"]!);

        var checkpoint = Checkpoint.Load(Path.Combine(dir.Path, "last.ckpt"));
        Assert.Equal($"custom:{typeof(CountingCrossEntropy).FullName}", (string)checkpoint.TrainerSettings["Loss"]!);
        var recorded = TrainerOptions.FromCheckpoint(checkpoint);
        Assert.Null(recorded.Loss.Object);
        using var again = checkpoint.CreateModel();
        var e = Assert.Throws<OptionsException>(() => new Trainer(again, recorded with { Checkpoints = recorded.Checkpoints with { Directory = null } }));
        Assert.Contains("needs it given again", e.Message);
    }
}
