// The README's "Use it from your app", as a user's console app would hold it: train one epoch on generated data,
// predict an image, export ONNX. tools/package/smoke.sh builds it against the packed Segmentation package.
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Training;

var folder = args.Length > 0 ? args[0] : "run";
var (train, val) = SegmentationDataset.Shapes(new ShapesOptions { Count = 32, Size = 64, Seed = 1 }).Split(0.75, seed: 0);
using var model = new SegmentationModel(ModelDescription.UNet(classes: train.Description.Classes, baseChannels: 8, depth: 3));
using var trainer = new Trainer(model, new TrainerOptions { Epochs = 1, BatchSize = 8,
    Checkpoints = new() { Directory = folder } });
var result = trainer.Fit(train, val);
Console.WriteLine($"trained {result.Epochs} epoch(s): mean IoU {result.Metrics!.MeanIoU:F4}");

using var predictor = Predictor.FromFile(Path.Combine(folder, "best.ckpt"));
var image = val.Load(0).Image;
var prediction = predictor.Predict(image);
Console.WriteLine($"predicted {prediction.Width}x{prediction.Height}, classes {string.Join(",", prediction.Labels.Distinct().Order())}");
MaskWriter.SaveImage(Path.Combine(folder, "input.png"), image);

OnnxExport.Write(Checkpoint.Load(Path.Combine(folder, "best.ckpt")), Path.Combine(folder, "model.onnx"));
Console.WriteLine($"exported {Path.Combine(folder, "model.onnx")}");
