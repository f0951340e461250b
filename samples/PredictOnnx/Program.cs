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
using var predictor = new OnnxPredictor(modelPath, new OnnxPredictorOptions { Tta = TestTimeAugmentation.Flip });
Console.WriteLine($"{predictor.Info.Classes} classes: {string.Join(", ", predictor.Info.ClassNames)}");
var files = OnnxPredictor.ImageFilesIn(imageDir); // PNG, JPEG, BMP, GIF, TIFF, WebP, TGA, PBM
if (files.Count == 0)
{
    Console.Error.WriteLine($"{imageDir}: no images found");
    return 1;
}
Directory.CreateDirectory(outDir);
foreach (var file in files)
{
    var image = predictor.Read(file); // 8 or 16 bits a sample, as the file holds
    var labels = predictor.Predict(image);
    var stem = Path.GetFileNameWithoutExtension(file);
    OnnxPredictor.SaveLabels(Path.Combine(outDir, stem + ".png"), labels, image.Width, image.Height);
    predictor.SaveOverlay(Path.Combine(outDir, stem + "_overlay.png"), image, labels);
}
Console.WriteLine($"wrote masks and overlays of {files.Count} image(s) to {outDir}");
return 0;
