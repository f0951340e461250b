// Predict masks with an ONNX model (from `segment export --format onnx`) on ONNX Runtime: no TorchSharp, no libtorch.
//   dotnet run --project samples/PredictOnnx -c Release -- model.onnx ../shared/datasets/camvid/val/images out/
using Segmentation.Onnx;

if (args.Length < 3)
{
    Console.Error.WriteLine("usage: PredictOnnx MODEL.onnx IMAGE_DIR OUT_DIR");
    return 2;
}
var (modelPath, imageDir, outDir) = (args[0], args[1], args[2]);

// Classes, names, colours, normalisation and the training resize come from the model's metadata.
using var predictor = new OnnxPredictor(modelPath, new OnnxPredictorOptions { FlipTta = true });
Console.WriteLine($"{predictor.Info.Classes} classes: {string.Join(", ", predictor.Info.ClassNames)}");
Directory.CreateDirectory(outDir);
foreach (var file in Directory.EnumerateFiles(imageDir, "*.png").Order())
{
    var (pixels, width, height) = predictor.ReadImage(file);
    var labels = predictor.Predict(pixels, width, height);
    var stem = Path.GetFileNameWithoutExtension(file);
    OnnxPredictor.SaveLabels(Path.Combine(outDir, stem + ".png"), labels, width, height);
    predictor.SaveOverlay(Path.Combine(outDir, stem + "_overlay.png"), pixels, width, height, labels);
}
Console.WriteLine($"wrote masks and overlays to {outDir}");
return 0;
