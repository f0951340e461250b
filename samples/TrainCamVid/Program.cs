// Train on a multi-class data set with train/ and val/ folders, index masks with a void label and class weights:
// the CamVid layout (11 classes, mask value 11 = void) with its palette file for names and colours.
//   dotnet run --project samples/TrainCamVid -c Release -- ../shared/datasets/camvid [minutes]
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Training;

string dir = args.Length > 0 ? args[0] : "../shared/datasets/camvid";
double minutes = args.Length > 1 ? double.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 75;

var options = new DatasetOptions
{
    Encoding = MaskEncoding.Index, Classes = 11, IgnoreIndex = 11,
    PaletteFile = Path.Combine(dir, "classes.csv"), // names and colours for reports and overlays
};
var (train, val) = SegmentationDataset.FromSplitFolders(dir, options);
Console.WriteLine(train.DetectionReport);

// SegNet's median-frequency balancing, computed from the training masks (void pixels are skipped).
var stats = train.ComputeClassStatistics();
var weights = ClassWeights.MedianFrequency(stats.ClassPixels, stats.PixelsOfImagesWithClass);
Console.WriteLine("class weights: " + string.Join(", ", weights.Select((w, i) => $"{train.Description.ClassNames[i]} {w:F2}")));

var model = new SegmentationModel(ModelDescription.UNet(classes: 11, inChannels: 3, baseChannels: 32));
using var trainer = new Trainer(model, new TrainerOptions
{
    // About 2.5 minutes an epoch on a 2-core CPU (an hour in all); minutes on a GPU, where more epochs pay off.
    Epochs = 24, BatchSize = 4, Crop = new Size2(256, 256), ClassWeights = weights,
    ValBatchSize = 4, CacheBytes = 1L << 30,
    Optimizer = new() { LearningRate = 1e-3 },
    Schedule = new() { TimeLimit = TimeSpan.FromMinutes(minutes) },
    Checkpoints = new() { EvalEvery = 4, Directory = "runs/camvid-sample" },
});
var progress = new SynchronousProgress<TrainingProgress>(p => // in order, on the training thread
{
    if (p.Kind == ProgressKind.Epoch)
        Console.WriteLine($"epoch {p.Epoch,3}  loss {p.Record!.TrainLoss:F4}" + (double.IsNaN(p.Record.MeanIoU) ? "" : $"  val mean IoU {p.Record.MeanIoU:F4}"));
});
var best = trainer.Fit(train, val, progress);
Console.Write(best.Metrics);
