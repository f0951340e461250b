extern alias onnx;

using System.Text.Json;
using onnx::Segmentation.Onnx;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Training;

namespace Segmentation.Tests.Checkpoints;

/// <summary>
/// Checkpoints written by an earlier build (22c4344, before heads received every feature map and declared their
/// outputs) and what that build predicted from them, kept in <c>tests/fixtures/checkpoints-22c4344</c>: each loads
/// today and predicts the same class maps and objects, in TorchSharp bit for bit and through today's ONNX export on
/// ONNX Runtime. One small model per family of parts and per task: the paper's U-Net for instances and for panoptic
/// segments, smp's U-Net decoder and head, SegFormer's decode head and resizing head, and the FPN (each on a small
/// U-Net encoder: the ResNet-34 and Mix Transformer encoders alone are 85 and 13 MB of weights; their keys and
/// numerics are held by the conformance test and the torchvision and Hugging Face fixtures).
/// <c>SEGMENTATION_WRITE_FIXTURES=DIR dotnet test --filter Write_the_fixtures</c> writes them again.
/// </summary>
public class FormerBuildCheckpointTests
{
    private const string Folder = "checkpoints-22c4344";

    /// <summary>The fixtures: name, model, data.</summary>
    private static readonly (string Name, ModelDescription Model, ShapesOptions Data)[] Cases =
    {
        ("instance", ModelDescription.UNet(classes: 3, baseChannels: 8, depth: 3, seed: 1),
            new ShapesOptions { Count = 200, Size = 48, Seed = 4, Instances = true }),
        ("panoptic", ModelDescription.UNet(classes: 4, baseChannels: 8, depth: 3, seed: 2),
            new ShapesOptions { Count = 200, Size = 48, Seed = 2, Panoptic = true }),
        ("smp-unet", Small(ModelPart.Of("smp-unet", new SmpUNetDecoderOptions { Channels = new[] { 16, 8, 8 } }),
            new ModelPart("smp-conv")), new ShapesOptions { Count = 200, Size = 48, Seed = 3 }),
        ("segformer-head", Small(ModelPart.Of("segformer-mlp", new SegformerDecoderOptions { HiddenSize = 32 }),
            new ModelPart("resize")), new ShapesOptions { Count = 200, Size = 48, Seed = 5 }),
        ("fpn", Small(ModelPart.Of("fpn", new FpnDecoderOptions { PyramidChannels = 16, SegmentationChannels = 32 }),
            new ModelPart("fpn-conv")), new ShapesOptions { Count = 200, Size = 48, Seed = 6 }),
    };

    /// <summary>A U-Net encoder of 8 base channels and depth 3 under another decoder and head.</summary>
    private static ModelDescription Small(ModelPart decoder, ModelPart head) => new()
    {
        Encoder = ModelPart.Of("unet", new UNetEncoderOptions { BaseChannels = 8, Depth = 3 }), Decoder = decoder,
        Head = head, Classes = 4, Seed = 3,
    };

    public static IEnumerable<object[]> Names() => Cases.Select(c => new object[] { c.Name });

    private static string Fixtures()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Segmentation.sln"))) dir = dir.Parent;
        return Path.Combine(dir?.FullName ?? throw new InvalidOperationException("The tests run outside the "
            + "repository."), "tests", "fixtures", Folder);
    }

    /// <summary>What a build predicted for one image: the class map, and for instance models the objects.</summary>
    private sealed record Expected(byte[] Labels, int[]? Objects);

    private static Expected Predict(Predictor predictor, ImageBuffer image)
    {
        var p = predictor.Predict(image);
        return new Expected(p.Labels, p.Instances?.Objects);
    }

    private static PredictorOptions Options => new()
    {
        Device = "cpu", Tta = Segmentation.Inference.TestTimeAugmentation.None, Threads = 1,
    };

    [WriterFact]
    public void Write_the_fixtures()
    {
        var root = Environment.GetEnvironmentVariable("SEGMENTATION_WRITE_FIXTURES")!;
        Directory.CreateDirectory(Path.Combine(root, "images"));
        foreach (var (name, model, data) in Cases)
        {
            using var run = new TempDir();
            var (train, val) = SegmentationDataset.Shapes(data).Split(0.75, seed: 0);
            using (var net = new SegmentationModel(model))
            using (var trainer = new Trainer(net, new TrainerOptions
            {
                Epochs = 20, BatchSize = 8, Seed = 1, Workers = 1, Device = "cpu", Threads = 1,
                ManageProcessMemory = false, Optimizer = new() { LearningRate = 3e-3 },
                Checkpoints = new() { Directory = run["run"] },
            }))
                trainer.Fit(train, val);
            // the weights and what they need, without the optimiser's moments and the resume state (the size)
            var best = Checkpoint.Load(run["run/best.ckpt"]);
            new Checkpoint
            {
                Model = best.Model, Dataset = best.Dataset, Preprocessing = best.Preprocessing,
                TrainerSettings = best.TrainerSettings, State = best.State, Metrics = best.Metrics,
                Weights = best.Weights,
            }.Save(Path.Combine(root, name + ".ckpt"));
            using var predictor = new Predictor(Checkpoint.Load(Path.Combine(root, name + ".ckpt")), Options);
            var expected = new Dictionary<string, Expected>();
            for (int i = 0; i < 2; i++)
            {
                var path = Path.Combine(root, "images", $"{name}-p{i + 1}.png");
                MaskWriter.SaveImage(path, val.Load(i).Image);
                expected[$"p{i + 1}"] = Predict(predictor, new ImageReader().ReadImage(path, 3));
            }
            File.WriteAllText(Path.Combine(root, name + ".json"), JsonSerializer.Serialize(expected));
        }
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void A_former_builds_checkpoint_predicts_what_it_predicted_then_in_TorchSharp_and_ONNX(string name)
    {
        var checkpointPath = Path.Combine(Fixtures(), name + ".ckpt");
        var expected = JsonSerializer.Deserialize<Dictionary<string, Expected>>(
            File.ReadAllText(Path.Combine(Fixtures(), name + ".json")))!;
        var checkpoint = Checkpoint.Load(checkpointPath);
        using var predictor = new Predictor(checkpoint, Options);
        using var d = new TempDir();
        OnnxExport.Write(checkpoint, d["m.onnx"]);
        using var onnx = new OnnxPredictor(d["m.onnx"], new OnnxPredictorOptions { Threads = 1 });
        foreach (var (image, then) in expected)
        {
            var path = Path.Combine(Fixtures(), "images", $"{name}-{image}.png");
            var now = Predict(predictor, new ImageReader().ReadImage(path, 3));
            Assert.Equal(then.Labels, now.Labels);
            Assert.True(then.Labels.Distinct().Count() >= 2, $"{name} {image}: one class only; the check says little");
            Assert.Equal(then.Objects, now.Objects);
            var pixels = onnx.Read(path);
            if (then.Objects is null)
                Assert.True(Agreement(then.Labels, onnx.Predict(pixels)) >= 0.99,
                    $"{name} {image}: ONNX Runtime's class map differs");
            else
            {
                var objects = onnx.PredictInstances(pixels);
                Assert.Equal(then.Objects.Max(), objects.Count);
                Assert.True(Agreement(then.Objects, objects.Objects) >= 0.99, $"{name} {image}: ONNX objects differ");
            }
        }
    }

    private static double Agreement<T>(T[] a, T[] b) where T : IEquatable<T> =>
        a.Length != b.Length ? 0 : a.Where((v, i) => v.Equals(b[i])).Count() / (double)a.Length;
}

/// <summary>Writes fixtures: skipped unless SEGMENTATION_WRITE_FIXTURES names the folder.</summary>
public sealed class WriterFactAttribute : FactAttribute
{
    public WriterFactAttribute()
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("SEGMENTATION_WRITE_FIXTURES")))
            Skip = "writes fixtures: set SEGMENTATION_WRITE_FIXTURES=DIR to run it";
    }
}
