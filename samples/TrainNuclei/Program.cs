// Instance segmentation: every nucleus its own mask. Trains a U-Net to tell object interiors from object boundaries,
// turns its output into objects with a seeded watershed, and scores them as the 2018 Data Science Bowl did (AP over
// IoU 0.50..0.95) and by panoptic quality. Without an argument it trains on the built-in touching objects (about a
// minute on a laptop CPU); give it a folder of images/ + masks/ (16-bit object numbers) or of the Data Science Bowl
// layout (ID/images/ID.png, ID/masks/*.png) to train on your own.
//   dotnet run --project samples/TrainNuclei -c Release [-- DIR]
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Training;

var data = args.Length > 0
    ? SegmentationDataset.FromFolder(args[0], new DatasetOptions { Task = SegmentationTaskKind.Instance, InChannels = 3 })
    : SegmentationDataset.Shapes(new ShapesOptions { Count = 400, Size = 64, Instances = true });
Console.WriteLine(data.DetectionReport);
var (train, val) = data.Split(0.8, seed: 0);

// three classes: background, object interior, object boundary (data.Description says so). OutputPlanes() counts them
// and any plane the instance target adds: with `Instances = new InstanceSettings { Target = InstanceTarget.Distance }`
// in the DatasetOptions, one more (StarDist's object probability, docs/instances.md).
using var model = new SegmentationModel(ModelDescription.UNet(classes: data.Description.OutputPlanes(), baseChannels: 16,
    seed: 0));
using var trainer = new Trainer(model, new TrainerOptions
{
    Epochs = args.Length > 0 ? 40 : 12, BatchSize = 8,
    Crop = args.Length > 0 ? new Size2(128, 128) : null,
    Optimizer = new() { LearningRate = args.Length > 0 ? 1e-3 : 3e-3 },
    Checkpoints = new() { Directory = "runs/nuclei-sample" },
});
var progress = new SynchronousProgress<TrainingProgress>(p =>
{
    if (p.Kind == ProgressKind.Epoch && p.Record!.Metrics?.Instances is { } m)
        Console.WriteLine($"epoch {p.Epoch,2}/{p.Epochs}  loss {p.Record.TrainLoss:F4}  AP {m.Ap:F4}  AP50 {m.Ap50:F4}  PQ {m.Pq:F4}");
});
var best = trainer.Fit(train, val, progress); // the best checkpoint is the one with the highest AP
Console.WriteLine(best.Metrics!.Instances);

// predict: an object number per pixel, written as a 16-bit PNG, and an overlay with a colour per object
using var predictor = Predictor.FromFile(best.RequireBestCheckpoint());
var sample = val.Load(0);
var objects = predictor.Predict(sample.Image).Instances!;
MaskWriter.SaveInstances("runs/nuclei-sample/objects.png", objects.Objects, objects.Width, objects.Height);
MaskWriter.SaveInstanceOverlay("runs/nuclei-sample/overlay.png", sample.Image, objects.Objects);
Console.WriteLine($"{sample.Name}: {objects.Count} objects -> runs/nuclei-sample/objects.png, overlay.png");
