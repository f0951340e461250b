// An ONNX-only app (Segmentation.Onnx: ONNX Runtime, no TorchSharp, no libtorch): the model TrainApp exported,
// every image of a folder, masks and overlays.
using Segmentation.Onnx;

var (modelPath, imageDir, outDir) = (args[0], args[1], args[2]);
using var predictor = new OnnxPredictor(modelPath);
var files = OnnxPredictor.ImageFilesIn(imageDir);
if (files.Count == 0) { Console.Error.WriteLine($"{imageDir}: no images found"); return 1; }
Directory.CreateDirectory(outDir);
foreach (var file in files)
{
    var (pixels, width, height) = predictor.ReadImage(file);
    var labels = predictor.Predict(pixels, width, height);
    OnnxPredictor.SaveLabels(Path.Combine(outDir, Path.GetFileNameWithoutExtension(file) + ".png"), labels, width, height);
}
Console.WriteLine($"onnx: {files.Count} image(s), {predictor.Info.Classes} classes -> {outDir}");
return 0;
