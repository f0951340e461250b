// Train on a folder of gray images and binary masks: the ISBI 2012 membranes layout
//   DIR/images/00.png ... DIR/masks/00.png ...   (masks hold 0 and 255; 0/1 works too)
//   dotnet run --project samples/TrainMembranes -c Release -- ../shared/datasets/isbi2012-membrane/train [minutes]
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Training;

string dir = args.Length > 0 ? args[0] : "../shared/datasets/isbi2012-membrane/train";
double minutes = args.Length > 1 ? double.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 30;

// Binary masks: 0 and 255 become classes 0 and 1 (any other value is an error that names the file).
var data = SegmentationDataset.FromFolder(dir, new DatasetOptions { Encoding = MaskEncoding.Binary, ClassNames = new[] { "membrane", "cell" } });
Console.WriteLine(data.DetectionReport);
var (train, val) = data.Split(25.0 / 30, seed: 0); // 25 train / 5 val of the 30 labelled slices

var model = new SegmentationModel(ModelDescription.UNet(classes: 2, inChannels: 1, baseChannels: 32));
using var trainer = new Trainer(model, new TrainerOptions
{
    // The README's ISBI recipe: 80 epochs took 25 minutes on a 2-core CPU (mean IoU 0.78, pixel error 0.092).
    Epochs = 80, BatchSize = 4, Crop = new Size2(256, 256),  // random scale 0.5-2.0, then a 256x256 crop
    VerticalFlip = true,                       // microscopy has no "up"
    Loss = LossKind.CrossEntropyDice, ValBatchSize = 1,
    CacheBytes = 512L << 20,                   // decode each slice once
    Optimizer = new() { LearningRate = 1e-3 },
    // a safety net: ends cleanly after the epoch in which it passes
    Schedule = new() { TimeLimit = TimeSpan.FromMinutes(minutes) },
    Checkpoints = new() { Directory = "runs/membranes-sample", EarlyStoppingPatience = 30 },
});

var progress = new SynchronousProgress<TrainingProgress>(p => // in order, on the training thread
{
    if (p.Kind == ProgressKind.Epoch && !double.IsNaN(p.Record!.MeanIoU))
        Console.WriteLine($"epoch {p.Epoch,3}  loss {p.Record.TrainLoss:F4}  val mean IoU {p.Record.MeanIoU:F4}  pixel error {1 - p.Record.PixelAccuracy:F4}");
    else if (p.Kind == ProgressKind.Message) Console.WriteLine(p.Message);
});
var best = trainer.Fit(train, val, progress);
Console.WriteLine($"{best.StopReason} after {best.Epochs} epochs, {best.Seconds / 60:F1} min; best epoch {best.BestEpoch}:");
Console.Write(best.Metrics);
