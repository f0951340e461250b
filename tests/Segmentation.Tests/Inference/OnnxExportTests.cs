using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Google.Protobuf;
using Onnx;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using Segmentation.Training;
using static TorchSharp.torch;

namespace Segmentation.Tests.Inference;

/// <summary>Our ONNX export, run by ONNX Runtime, gives TorchSharp's logits.</summary>
public class OnnxExportTests
{
    private static Checkpoint CheckpointOf(SegmentationModel model) => new()
    {
        Model = model.Description,
        Dataset = new DatasetDescription { Classes = model.Description.Classes, ClassNames = Enumerable.Range(0, model.Description.Classes).Select(i => $"c{i}").ToArray(), ClassColors = DatasetDescription.Defaults(model.Description.Classes).Colors },
        Preprocessing = new Preprocessing(Normalization.ImageNet, new Size2(64, 96)), TrainerSettings = new TrainerOptions().ToJson(), State = new TrainingState(),
        Weights = Checkpoint.SerializeWeights(model),
    };

    /// <summary>Random weights, and batch-norm statistics that are not the identity, so that every part of the graph shows.</summary>
    private static SegmentationModel Model(ModelDescription options)
    {
        var model = new SegmentationModel(options);
        var g = new TorchSharp.torch.Generator(11);
        using (no_grad())
            foreach (var (name, t) in model.state_dict())
            {
                if (name.EndsWith("running_mean")) t.copy_(randn(t.shape, generator: g) * 0.1);
                else if (name.EndsWith("running_var")) t.copy_(rand(t.shape, generator: g) + 0.5);
                else if (name.EndsWith(".bias") || name.EndsWith("norm1.weight") || name.EndsWith("norm2.weight")) t.copy_(randn(t.shape, generator: g) * 0.1 + (name.EndsWith("weight") ? 1 : 0));
            }
        model.eval();
        return model;
    }

    public static IEnumerable<object[]> Cases()
    {
        var sizes = new[] { (64, 64), (253, 317), (512, 512) };
        var models = new (string Name, ModelDescription Options)[]
        {
            ("plain transposed", ModelDescription.UNet(inChannels: 3, classes: 3, baseChannels: 8, depth: 4, seed: 1)),
            ("plain bilinear, group norm", ModelDescription.UNet(inChannels: 1, classes: 2, baseChannels: 8, depth: 3, upsampling: UpsamplingMode.Bilinear, norm: NormLayer.Group, seed: 2)),
            ("resnet18", ModelDescription.For("resnet18", classes: 4, inChannels: 3) with { Seed = 3 }),
            ("resnet18, full-resolution skip", FullResolutionSkip()),
        };
        foreach (var (name, _) in models)
            foreach (var (h, w) in sizes)
                yield return new object[] { name, h, w };
    }

    private static ModelDescription OptionsNamed(string name) => name switch
    {
        "plain transposed" => ModelDescription.UNet(inChannels: 3, classes: 3, baseChannels: 8, depth: 4, seed: 1),
        "plain bilinear, group norm" => ModelDescription.UNet(inChannels: 1, classes: 2, baseChannels: 8, depth: 3, upsampling: UpsamplingMode.Bilinear, norm: NormLayer.Group, seed: 2),
        "resnet18, full-resolution skip" => FullResolutionSkip(),
        _ => ModelDescription.For("resnet18", classes: 4, inChannels: 3) with { Seed = 3 },
    };

    private static ModelDescription FullResolutionSkip() => ModelDescription.For("resnet18", classes: 2, inChannels: 1)
        with { Decoder = ModelPart.Of("smp-unet", new SmpUNetDecoderOptions { FullResolutionChannels = 8 }), Seed = 6 };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Onnx_Runtime_gives_TorchSharps_logits(string model, int height, int width)
    {
        using var scope = NewDisposeScope();
        using var unet = Model(OptionsNamed(model));
        var onnx = OnnxExport.Build(CheckpointOf(unet));
        int c = unet.Description.InChannels;
        var x = randn(new long[] { 2, c, height, width }, generator: new TorchSharp.torch.Generator(5));
        TorchSharp.torch.Tensor expected;
        using (no_grad()) expected = unet.Logits(x);

        using var session = new InferenceSession(onnx.ToByteArray());
        var input = new DenseTensor<float>(x.data<float>().ToArray(), new[] { 2, c, height, width });
        using var results = session.Run(new[] { NamedOnnxValue.CreateFromTensor(OnnxExport.Input, input) });
        var output = results.Single(r => r.Name == OnnxExport.Output).AsTensor<float>();
        Assert.Equal(expected.shape, output.Dimensions.ToArray().Select(d => (long)d).ToArray());
        var actual = tensor(output.ToArray(), expected.shape);
        double error = (actual - expected).abs().max().item<float>();
        Assert.True(error <= 1e-4, $"{model} at {height}x{width}: max |ONNX Runtime - TorchSharp| = {error:E2} (logits up to {expected.abs().max().item<float>():F2})");
    }

    [Fact]
    public void The_model_carries_what_a_predictor_needs()
    {
        using var unet = Model(OptionsNamed("plain transposed"));
        var onnx = OnnxExport.Build(CheckpointOf(unet));
        var meta = onnx.MetadataProps.ToDictionary(p => p.Key, p => p.Value);
        Assert.Equal("3", meta["classes"]);
        Assert.Equal("[\"c0\",\"c1\",\"c2\"]", meta["class_names"]);
        Assert.Equal("64x96", meta["resize"]);
        Assert.Equal("255", meta["ignore_index"]);
        Assert.Contains("0.485", meta["normalization_mean"]);
        Assert.Equal(OnnxExport.Opset, onnx.OpsetImport.Single().Version);
        // Weights are initializers named by their state-dict keys.
        Assert.Contains(onnx.Graph.Initializer, t => t.Name == "encoder.stem.block.conv1.weight");
    }
}
