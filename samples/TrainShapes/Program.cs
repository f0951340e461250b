// Train a U-Net on the built-in synthetic shapes (background, circle, rectangle, triangle) and print the
// validation metrics. Runs on a laptop CPU in about two minutes; on CUDA when there is a GPU.
//   dotnet run --project samples/TrainShapes -c Release
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Training;

var data = SegmentationDataset.Shapes(new ShapesOptions { Count = 600, Size = 64, Seed = 0 });
var (train, val) = data.Split(0.8, seed: 0);

var model = new SegmentationModel(ModelDescription.UNet(classes: 4, baseChannels: 16, seed: 0)); // the seed fixes the weights
using var trainer = new Trainer(model, new TrainerOptions
{
    Epochs = 12, BatchSize = 8, Loss = LossKind.CrossEntropyDice,
    Optimizer = new() { LearningRate = 3e-3 },
    Checkpoints = new() { Directory = "runs/shapes-sample" },
});

// The library never prints: progress arrives here, and the script decides what to show.
var progress = new SynchronousProgress<TrainingProgress>(p => // in order, on the training thread
{
    if (p.Kind == ProgressKind.Epoch)
        Console.WriteLine($"epoch {p.Epoch,2}/{p.Epochs}  loss {p.Record!.TrainLoss:F4}  val mean IoU {p.Record.MeanIoU:F4}  {p.Record.ImagesPerSecond:F0} img/s");
});
var best = trainer.Fit(train, val, progress);

Console.WriteLine($"best epoch {best.BestEpoch} ({best.BestCheckpoint}):");
Console.Write(best.Metrics);
