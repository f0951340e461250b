extern alias onnx;

using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using onnx::Segmentation.Onnx;
using Segmentation.Training;
using static TorchSharp.torch;
using Tta = Segmentation.Inference.TestTimeAugmentation;

namespace Segmentation.Tests.Inference;

/// <summary>Segmentation.Onnx (ONNX Runtime, no libtorch) predicts the masks the TorchSharp predictor does.</summary>
public class OnnxPredictorTests
{
    private static readonly Lazy<Checkpoint> ShapesModel = new(() =>
    {
        // Two epochs on the shapes: enough for masks of several classes, which random weights do not give.
        using var dir = new TempDir();
        var train = SegmentationDataset.Shapes(new ShapesOptions { Count = 96, Size = 64, Seed = 1 });
        using var model = new SegmentationModel(ModelDescription.UNet(inChannels: 3, classes: 4, baseChannels: 8, depth: 3, seed: 2));
        // Cross-entropy with Dice, as the main job trains: after 3 epochs of cross-entropy alone the model predicted
        // background everywhere at one libtorch thread (its sums run in another order than at two).
        using var trainer = new Trainer(model, new TrainerOptions { Epochs = 4, BatchSize = 8, Workers = 1, Device = "cpu", ManageProcessMemory = false, Loss = LossKind.CrossEntropyDice, Optimizer = new() { LearningRate = 3e-3 }, Checkpoints = new() { Directory = dir.Path } });
        trainer.Fit(train, null);
        return Checkpoint.Load(dir["last.ckpt"]);
    });

    private static Checkpoint Trained(ModelDescription options, Size2? resize)
    {
        using var model = new SegmentationModel(options);
        return new Checkpoint
        {
            Model = options,
            Dataset = new DatasetDescription { Classes = options.Classes, ClassNames = Enumerable.Range(0, options.Classes).Select(i => $"c{i}").ToArray(), ClassColors = DatasetDescription.Defaults(options.Classes).Colors },
            Preprocessing = new Preprocessing(Normalization.DefaultFor(options.InChannels), resize), TrainerSettings = new TrainerOptions().ToJson(), State = new TrainingState(),
            Weights = Checkpoint.SerializeWeights(model),
        };
    }

    [Theory]
    [InlineData("whole image, odd size", false, Tta.None, false)]
    [InlineData("sliding window", true, Tta.None, false)]
    [InlineData("flip TTA", false, Tta.Flip, false)]
    [InlineData("dihedral TTA in windows", true, Tta.Dihedral, false)]
    [InlineData("trained at a fixed size", false, Tta.None, true)]
    public void Onnx_predictions_match_the_TorchSharp_predictor(string what, bool window, Tta tta,
        bool resize)
    {
        using var dir = new TempDir();
        var trained = ShapesModel.Value;
        var checkpoint = new Checkpoint
        {
            Model = trained.Model, Dataset = trained.Dataset, TrainerSettings = trained.TrainerSettings, State = trained.State, Weights = trained.Weights,
            Preprocessing = trained.Preprocessing with { Size = resize ? new Size2(40, 48) : null },
        };
        OnnxExport.Write(checkpoint, dir["model.onnx"]);
        // A shapes picture cropped to an odd size.
        var sample = SegmentationDataset.Shapes(new ShapesOptions { Count = 4, Size = 64, Seed = 9 }).Load(0).Image;
        int h = 53, w = 61;
        var pixels = new byte[h * w * 3];
        for (int y = 0; y < h; y++) Array.Copy(sample.Pixels, y * 64 * 3, pixels, y * w * 3, w * 3);

        var torchOptions = new PredictorOptions { Device = "cpu", Tta = tta, Window = window ? new Size2(32, 32) : null, Stride = window ? new Size2(20, 20) : null };
        using var torchPredictor = new Predictor(checkpoint, torchOptions);
        var expected = torchPredictor.Predict(new ImageBuffer(w, h, 3, pixels)).Labels;

        using var onnx = new OnnxPredictor(dir["model.onnx"], new OnnxPredictorOptions { Tta = (onnx::Segmentation.Onnx.TestTimeAugmentation)(int)tta, Window = window ? (32, 32) : null, Stride = window ? (20, 20) : null });
        Assert.Equal(resize ? (40, 48) : null, onnx.Info.Resize);
        var actual = onnx.Predict(pixels, w, h);
        double agree = expected.Zip(actual).Count(p => p.First == p.Second) / (double)expected.Length;
        Assert.True(agree >= 0.999, $"{what}: {agree:P2} of pixels agree");
        Assert.True(expected.Distinct().Count() > 1, "the masks should not be one class");
    }

    [Fact]
    public void A_model_without_metadata_takes_its_class_count_from_the_graph_and_pixel_over_255()
    {
        using var dir = new TempDir();
        var checkpoint = Trained(ModelDescription.UNet(inChannels: 3, classes: 2, baseChannels: 4, depth: 2, seed: 1), null);
        var model = OnnxExport.Build(checkpoint);
        model.MetadataProps.Clear(); // as torch.onnx.export writes it
        File.WriteAllBytes(dir["bare.onnx"], Google.Protobuf.MessageExtensions.ToByteArray(model));
        using var bare = new OnnxPredictor(dir["bare.onnx"]);
        Assert.Equal(2, bare.Info.Classes);
        Assert.Equal(new float[3], bare.Info.Mean);
        Assert.Equal(new[] { 1f, 1f, 1f }, bare.Info.Std);
        var e = Assert.Throws<InvalidDataException>(() => new OnnxPredictor(dir["bare.onnx"], new OnnxPredictorOptions { Classes = 3 }));
        Assert.Contains("outputs 2 classes; 3 were given", e.Message);
    }

    [Fact]
    public void The_onnx_packages_image_listing_takes_every_format_the_decoder_reads_as_predict_does()
    {
        using var dir = new TempDir();
        foreach (var name in new[] { "b.png", "a.jpg", "C.JPEG", "d.webp", "notes.txt", "e.tif" }) File.WriteAllText(dir[name], "");
        Assert.Equal(new[] { "C.JPEG", "a.jpg", "b.png", "d.webp", "e.tif" }, OnnxPredictor.ImageFilesIn(dir.Path).Select(Path.GetFileName));
    }
}
