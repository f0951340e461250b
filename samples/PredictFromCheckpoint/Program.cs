// Evaluate a checkpoint on a labelled folder, then write masks and overlays for a folder of images.
//   dotnet run --project samples/PredictFromCheckpoint -c Release -- runs/camvid-sample/best.ckpt ../shared/datasets/camvid/val out/
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Training;

if (args.Length < 3)
{
    Console.Error.WriteLine("usage: PredictFromCheckpoint CHECKPOINT DATA_DIR OUT_DIR   (DATA_DIR holds images/ and masks/)");
    return 2;
}
var (checkpointPath, dataDir, outDir) = (args[0], args[1], args[2]);

// Everything the predictor needs (weights, classes, colours, normalisation) is in the checkpoint.
var checkpoint = Checkpoint.Load(checkpointPath);
using var predictor = new Predictor(checkpoint, new PredictorOptions
{
    Window = new Size2(256, 256), Stride = new Size2(170, 170), // sliding window, logits averaged where windows overlap
    Tta = TestTimeAugmentation.Flip,                           // average with the mirrored image
});

// 1. Mean IoU on labelled data, read with the checkpoint's own mask encoding.
var data = SegmentationDataset.FromFolder(dataDir, new DatasetOptions { Description = checkpoint.Dataset });
Console.Write(predictor.Evaluate(data));

// 2. Masks for every image: class indices, colours and overlays, as PNG.
Directory.CreateDirectory(outDir);
var reader = new ImageReader();
foreach (var file in Directory.EnumerateFiles(Path.Combine(dataDir, "images")).Order())
{
    var image = reader.ReadImage(file, predictor.Model.InChannels);
    var prediction = predictor.Predict(image);
    var stem = Path.GetFileNameWithoutExtension(file);
    MaskWriter.SaveLabels(Path.Combine(outDir, stem + ".png"), prediction.Labels, prediction.Width, prediction.Height);
    MaskWriter.SaveOverlay(Path.Combine(outDir, stem + "_overlay.png"), image, prediction.Labels, predictor.Description.ClassColors);
}
Console.WriteLine($"wrote masks and overlays to {outDir}");
return 0;
