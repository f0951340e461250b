extern alias onnx;

using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using Segmentation.Training;

namespace Segmentation.Tests.Checkpoints;

/// <summary>The hand-off file: it carries the preprocessing a predictor needs, and knows no trainer.</summary>
public class CheckpointTests
{
    private static Checkpoint Make(SegmentationModel model, Preprocessing preprocessing, TrainerOptions trainer) => new()
    {
        Model = model.Description,
        Dataset = new DatasetDescription { Classes = 2, ClassNames = new[] { "a", "b" }, ClassColors = new[] { new Rgb(0, 0, 0), new Rgb(255, 0, 0) } },
        Preprocessing = preprocessing, TrainerSettings = trainer.ToJson(), State = new TrainingState(),
        Weights = Checkpoint.SerializeWeights(model),
    };

    [Fact]
    public void The_resize_is_stored_with_the_normalisation_and_the_predictor_uses_it()
    {
        using var dir = new TempDir();
        using var model = new SegmentationModel(ModelDescription.UNet(inChannels: 3, classes: 2, baseChannels: 4, depth: 2, seed: 1));
        var normalization = new Normalization(new[] { 0.1f, 0.2f, 0.3f }, new[] { 0.5f, 0.6f, 0.7f });
        Make(model, new Preprocessing(normalization, new Size2(24, 32)), new TrainerOptions()).Save(dir["a.ckpt"]);

        var loaded = Checkpoint.Load(dir["a.ckpt"]);
        Assert.Equal(new Size2(24, 32), loaded.Preprocessing.Size);
        Assert.Equal(normalization.Mean, loaded.Preprocessing.Normalization.Mean);
        Assert.Equal(normalization.Std, loaded.Preprocessing.Normalization.Std);
        using var predictor = new Predictor(loaded, new PredictorOptions { Device = "cpu" });
        Assert.Equal(new Size2(24, 32), predictor.Options.Size);
    }

    [Fact]
    public void A_checkpoint_from_before_the_resize_key_takes_the_size_from_the_trainers_options()
    {
        using var dir = new TempDir();
        using var model = new SegmentationModel(ModelDescription.UNet(inChannels: 3, classes: 2, baseChannels: 4, depth: 2, seed: 1));
        // What 0.2 wrote: the size only inside the trainer's options.
        Make(model, new Preprocessing(Normalization.ImageNet), new TrainerOptions { Size = new Size2(40, 48) }).Save(dir["old.ckpt"]);

        var loaded = Checkpoint.Load(dir["old.ckpt"]);
        Assert.Equal(new Size2(40, 48), loaded.Preprocessing.Size);
        Assert.Equal(new Size2(40, 48), TrainerOptions.FromCheckpoint(loaded).Size);
    }

    [Fact]
    public void Model_options_written_with_the_old_Normalization_name_read_as_Norm()
    {
        // What files before 0.3 held as the model: the U-Net's options, the norm under its old name.
        var old = System.Text.Json.Nodes.JsonNode.Parse(
            "{\"InChannels\":3,\"Classes\":2,\"BaseChannels\":8,\"Depth\":2,\"Upsampling\":\"Bilinear\",\"Normalization\":\"Group\",\"Seed\":0,\"Encoder\":\"UNet\"}");
        Assert.True(LegacyUNetOptions.IsLegacy(old));
        var read = LegacyUNetOptions.Read(old!).ToDescription();
        Assert.Equal(NormLayer.Group, read.Encoder.OptionsAs<UNetEncoderOptions>().Norm);
        Assert.Equal(NormLayer.Group, read.Decoder!.OptionsAs<UNetDecoderOptions>().Norm);
        Assert.Equal(UpsamplingMode.Bilinear, read.Decoder!.OptionsAs<UNetDecoderOptions>().Upsampling);
        var json = System.Text.Json.JsonSerializer.Serialize(read.Resolve(), Checkpoint.Json);
        Assert.DoesNotContain("Normalization", json); // new files say Norm only
        Assert.False(LegacyUNetOptions.IsLegacy(System.Text.Json.Nodes.JsonNode.Parse(json)));
    }
}

/// <summary>
/// Checkpoints written before the model description (0.3's format, kept in tests/fixtures) load into today's model
/// and predict, pixel for pixel, the masks that build predicted from them (<c>segment predict</c>, saved beside them).
/// </summary>
public class FormerCheckpointTests
{
    private static string Fixtures()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Segmentation.sln"))) dir = dir.Parent;
        return Path.Combine(dir?.FullName ?? throw new InvalidOperationException("The tests run outside the repository."), "tests", "fixtures", "checkpoints-0.3");
    }

    [Theory]
    [InlineData("unet-batch-transposed", 2, UpsamplingMode.Transposed, NormLayer.Batch)]
    [InlineData("unet-group-bilinear", 3, UpsamplingMode.Bilinear, NormLayer.Group)]
    public void A_checkpoint_of_the_previous_format_predicts_the_masks_it_predicted_then(string name, int depth, UpsamplingMode up, NormLayer norm)
    {
        var checkpoint = Checkpoint.Load(Path.Combine(Fixtures(), name + ".ckpt"));
        var encoder = checkpoint.Model.Encoder.OptionsAs<UNetEncoderOptions>();
        Assert.Equal((4, depth, norm), (encoder.BaseChannels, encoder.Depth, encoder.Norm));
        Assert.Equal(up, checkpoint.Model.Decoder!.OptionsAs<UNetDecoderOptions>().Upsampling);
        using var predictor = new Predictor(checkpoint, new PredictorOptions { Device = "cpu" });
        // and through today's ONNX export, on ONNX Runtime
        using var d = new TempDir();
        OnnxExport.Write(checkpoint, d["m.onnx"]);
        using var onnx = new onnx::Segmentation.Onnx.OnnxPredictor(d["m.onnx"]);
        var reader = new ImageReader();
        int differing = 0, distinct = 0, onnxDiffering = 0, pixels = 0;
        foreach (var image in new[] { "p1", "p2" })
        {
            var path = Path.Combine(Fixtures(), "images", image + ".png");
            var input = reader.ReadImage(path, 3);
            var expected = reader.ReadImage(Path.Combine(Fixtures(), "masks", $"{name}-{image}.png"), 1).Pixels;
            var labels = predictor.Predict(input).Labels;
            Assert.Equal(expected.Length, labels.Length);
            differing += expected.Where((v, i) => v != labels[i]).Count();
            distinct = Math.Max(distinct, labels.Distinct().Count());
            var viaOnnx = onnx.Predict(onnx.Read(path));
            onnxDiffering += expected.Where((v, i) => v != viaOnnx[i]).Count();
            pixels += expected.Length;
        }
        Assert.Equal(0, differing);
        Assert.True(onnxDiffering <= pixels / 100, $"{onnxDiffering} of {pixels} pixels differ through ONNX Runtime");
        Assert.True(distinct >= 2, "the fixture's masks should hold more than one class, or the comparison says little");
    }

    /// <summary>A state dict in TorchSharp's format with every key renamed (what an older build wrote).</summary>
    private static byte[] WeightsNamed(SegmentationModel model, Func<string, string> rename)
    {
        var bytes = new MemoryStream();
        using (var w = new BinaryWriter(bytes, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            var dict = model.state_dict();
            ulong n = (ulong)dict.Count; // the entry count, LEB128, as TorchSharp writes it
            do { byte b = (byte)(n & 0x7f); n >>= 7; w.Write((byte)(n != 0 ? b | 0x80 : b)); } while (n != 0);
            foreach (var (key, tensor) in dict)
            {
                w.Write(rename(key));
                TorchSharp.TensorExtensionMethods.Save(tensor, w);
            }
        }
        return bytes.ToArray();
    }

    [Fact]
    public void A_checkpoint_with_0_1s_key_names_loads_into_todays_model()
    {
        using var model = new SegmentationModel(ModelDescription.UNet(classes: 3, baseChannels: 4, depth: 2, seed: 6));
        // 0.1 had stem.*, encoder.{i}.* and decoder.{i}.* at the top.
        static string Old(string key) => key.StartsWith("encoder.stem.") ? key["encoder.".Length..]
            : key.StartsWith("encoder.blocks.") ? "encoder." + key["encoder.blocks.".Length..]
            : key.StartsWith("decoder.blocks.") ? "decoder." + key["decoder.blocks.".Length..] : key;
        var old = WeightsNamed(model, Old);
        Assert.Contains("stem.block.conv1.weight", System.Text.Encoding.UTF8.GetString(old));
        using var dir = new TempDir();
        new Checkpoint
        {
            Model = model.Description, Weights = old, Preprocessing = new Preprocessing(Normalization.ImageNet),
            Dataset = new DatasetDescription { Classes = 3, ClassNames = new[] { "a", "b", "c" }, ClassColors = DatasetDescription.Defaults(3).Colors },
            TrainerSettings = new TrainerOptions().ToJson(), State = new TrainingState(),
        }.Save(dir["old.ckpt"]);
        using var loaded = Checkpoint.Load(dir["old.ckpt"]).CreateModel();
        model.eval();
        loaded.eval();
        using var scope = TorchSharp.torch.NewDisposeScope();
        using var grad = TorchSharp.torch.no_grad();
        var x = TorchSharp.torch.randn(new long[] { 1, 3, 20, 24 }, generator: new TorchSharp.torch.Generator(2));
        Assert.True(model.Logits(x).allclose(loaded.Logits(x), rtol: 0, atol: 0)); // the same weights, bit for bit
    }
}
