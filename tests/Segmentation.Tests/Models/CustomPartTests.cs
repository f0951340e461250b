using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Heads;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Segmentation.Training;
using static TorchSharp.torch;
using Sequential = TorchSharp.Modules.Sequential;
using Tensor = TorchSharp.torch.Tensor;

namespace Segmentation.Tests.Models;

/// <summary>Options of the toy encoder below (what a user's part would have).</summary>
public sealed record ToyEncoderOptions : IPartOptions
{
    /// <summary>Channels of the first stage.</summary>
    public int Width { get; init; } = 8;

    /// <inheritdoc />
    public void Validate()
    {
        if (Width < 2 || Width % 2 != 0) throw new OptionsException($"Toy encoder Width is {Width}; it must be an even number of at least 2.");
    }
}

/// <summary>
/// A user's encoder, written against the public API only: two stride-2 stages, each a strided convolution, batch norm,
/// GELU and a dilated depthwise convolution added back (grouped and dilated convolutions, an activation and a residual).
/// </summary>
public sealed class ToyEncoder : Encoder
{
    private readonly Sequential down1, down2;
    private readonly Convolution mix1, mix2;
    private readonly EncoderStage[] stages;
    private readonly int inChannels;

    public ToyEncoder(int inChannels, ToyEncoderOptions o) : base(nameof(ToyEncoder))
    {
        this.inChannels = inChannels;
        int w = o.Width;
        down1 = nn.Sequential(("conv", new Convolution(inChannels, w, 3, stride: 2, padding: 1, bias: false)), ("norm", new BatchNorm(w)),
            ("act", new Activation(ActivationKind.Gelu)));
        down2 = nn.Sequential(("conv", new Convolution(w, 2 * w, 3, stride: 2, padding: 1, bias: false)), ("norm", new BatchNorm(2 * w)),
            ("act", new Activation(ActivationKind.Gelu)));
        mix1 = new Convolution(w, w, 3, padding: 2, groups: w, dilation: 2);
        mix2 = new Convolution(2 * w, 2 * w, 3, padding: 2, groups: 2 * w, dilation: 2);
        stages = new[] { new EncoderStage(w, 2), new EncoderStage(2 * w, 4) };
        RegisterComponents();
    }

    public override IReadOnlyList<EncoderStage> Stages => stages;
    public override int InChannels => inChannels;

    public override Tensor[] forward(Tensor input)
    {
        var f1 = down1.forward(input);
        f1 = LayerOps.Add(f1, mix1.forward(f1));
        var f2 = down2.forward(f1);
        f2 = LayerOps.Add(f2, mix2.forward(f2));
        return new[] { input, f1, f2 };
    }
}

/// <summary>Options of the toy decoder.</summary>
public sealed record ToyDecoderOptions
{
    /// <summary>Attention heads.</summary>
    public int Heads { get; init; } = 2;
}

/// <summary>
/// A user's decoder with a transformer block on the deepest map (layer norm, linear q/k/v, scaled dot-product
/// attention, output projection), then a bilinear resize to the shallow map and a fusing convolution: its output is at
/// stride 2 (the head resizes). It keeps another library's key names: <c>decode_head.*</c>.
/// </summary>
public sealed class ToyDecoder : Decoder
{
    private readonly LayerNorm norm;
    private readonly Linear query, key, value, project;
    private readonly Attention attention = new();
    private readonly Convolution fuse;
    private readonly int heads;
    private readonly long outChannels;

    public ToyDecoder(IReadOnlyList<EncoderStage> stages, ToyDecoderOptions o) : base(nameof(ToyDecoder))
    {
        long deep = stages[^1].Channels, shallow = stages[0].Channels;
        heads = o.Heads;
        norm = new LayerNorm(deep);
        query = new Linear(deep, deep);
        key = new Linear(deep, deep);
        value = new Linear(deep, deep);
        project = new Linear(deep, deep);
        outChannels = 16;
        fuse = new Convolution(deep + shallow, outChannels, 3, padding: 1);
        RegisterComponents();
    }

    public override long OutChannels => outChannels;

    public override Tensor forward(Tensor[] features)
    {
        var (input, shallow, deep) = (features[0], features[1], features[2]);
        var tokens = norm.forward(LayerOps.ToTokens(deep));
        var attended = attention.forward(LayerOps.SplitHeads(query.forward(tokens), heads), LayerOps.SplitHeads(key.forward(tokens), heads),
            LayerOps.SplitHeads(value.forward(tokens), heads));
        var mixed = LayerOps.ToMap(project.forward(LayerOps.MergeHeads(attended)), deep);
        return fuse.forward(LayerOps.Concat(LayerOps.ResizeLike(LayerOps.Add(mixed, deep), shallow), shallow));
    }

    public override IEnumerable<(string Name, nn.Module Module)> StateDictModules() => new[] { ("decode_head", (nn.Module)this) };
}

/// <summary>Options of the toy head (none).</summary>
public sealed record ToyHeadOptions;

/// <summary>
/// A user's head: a 1x1 classifier, then logits resized to the model's input (its decoder stops at stride 2); and,
/// from the encoder's deepest map, which a head receives beside the decoder's, a second classifier whose logits stay at
/// that stride: an auxiliary output (deep supervision), declared with its rank and meaning.
/// </summary>
public sealed class ToyHead : Head
{
    private readonly Convolution classifier, aux;

    public ToyHead(long inChannels, int classes, FeatureMap deepest) : base(nameof(ToyHead))
    {
        classifier = new Convolution(inChannels, classes, 1);
        aux = new Convolution(deepest.Channels, classes, 1);
        RegisterComponents();
    }

    public override IReadOnlyList<ModelOutput> Outputs { get; } = new[]
    {
        ModelOutput.PixelLogits, new ModelOutput("aux", 4, OutputKind.Auxiliary, "class logits at the encoder's deepest stride"),
    };

    public override ModelOutputs forward(HeadInput x) => new(new Dictionary<string, Tensor>
    {
        [ModelOutputs.LogitsName] = LayerOps.ResizeLike(classifier.forward(x.Decoded), x.Input),
        ["aux"] = aux.forward(x.Encoder[x.Encoder.Count - 1]),
    }, Outputs);
}

/// <summary>
/// The seam, from outside the library: a test registers its own encoder and decoder, and the library trains, saves,
/// reloads, checks, summarises, predicts with and exports them with no change of its own.
/// </summary>
public class CustomPartTests
{
    private static readonly bool Registered = Register();

    private static bool Register()
    {
        ModelRegistry.AddEncoder<ToyEncoderOptions>("test-toy", (c, o) => new ToyEncoder(c.InChannels, o), "a test's encoder");
        ModelRegistry.AddDecoder<ToyDecoderOptions>("test-toy-attention", (c, o) => new ToyDecoder(c.Encoder.Stages, o), "a test's decoder");
        ModelRegistry.AddHead<ToyHeadOptions>("test-toy-head", (c, _) => new ToyHead(c.InChannels, c.Classes, c.EncoderMaps[^1]), "a test's head");
        return true;
    }

    private static ModelDescription Toy(int classes = 4) => new()
    {
        Classes = classes, Seed = 7,
        Encoder = ModelPart.Of("test-toy", new ToyEncoderOptions { Width = 8 }),
        Decoder = ModelPart.Of("test-toy-attention", new ToyDecoderOptions { Heads = 2 }),
        Head = new ModelPart("test-toy-head"),
    };

    [Fact]
    public void A_registered_encoder_and_decoder_train_save_reload_summarise_predict_and_export()
    {
        Assert.True(Registered);
        using var dir = new TempDir();
        var data = SegmentationDataset.Shapes(new ShapesOptions { Count = 8, Size = 32, Seed = 2 });
        using var model = new SegmentationModel(Toy());
        Assert.Empty(model.NonLeafModules()); // every parameter sits in a leaf layer
        var options = new TrainerOptions
        {
            Epochs = 8, BatchSize = 4, Augment = false, Seed = 1, Device = "cpu",
            ManageProcessMemory = false,
            Optimizer = new() { LearningRate = 3e-3 },
            Checkpoints = new() { Directory = dir["run"] },
        };
        TrainingResult result;
        using (var trainer = new Trainer(model, options)) result = trainer.Fit(data, data);

        // It learns: on eight images seen eight times, the training loss falls well below where it started.
        Assert.True(result.History[^1].TrainLoss < 0.7 * result.History[0].TrainLoss,
            $"training loss {result.History[0].TrainLoss:F3} -> {result.History[^1].TrainLoss:F3}");

        // The checkpoint names the parts and rebuilds the same model.
        var checkpoint = Checkpoint.Load(result.LastCheckpoint!);
        Assert.Equal("test-toy", checkpoint.Model.Encoder.Name);
        Assert.Equal(8, checkpoint.Model.Encoder.OptionsAs<ToyEncoderOptions>().Width);
        using var loaded = checkpoint.CreateModel();
        model.eval();
        loaded.eval();
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var x = randn(new long[] { 2, 3, 32, 32 }, generator: new Generator(3));
            Assert.True(model.Logits(x).allclose(loaded.Logits(x), rtol: 1e-5, atol: 1e-6));
        }

        // Its leaves were checked against float64: the grouped, dilated convolutions and the transformer's layers.
        var report = loaded.CheckLayers(new long[] { 2, 3, 32, 32 }, training: true)!;
        Assert.Contains(report.Layers, l => l.Shapes[0].Groups == 8 && l.Shapes[0].Dilation == 2);
        foreach (var kind in new[] { "LayerNorm", "Linear", "Attention", "BatchNorm" })
            Assert.Contains(report.OtherLayers, l => l.Kind == kind);
        Assert.All(report.OtherLayers, l => Assert.True(l.Errors[^1] <= l.Tolerance, $"{l.Layer}: {l.Errors[^1]:E2}"));

        // The summary is read off the leaves: every parameter is counted, and attention has its multiply-accumulates.
        var summary = ModelSummary.For(loaded, 32, 32);
        Assert.Equal(loaded.ParameterCount(), summary.Parameters);
        Assert.Contains(summary.Layers, l => l.Kind == "Attention" && l.MultiplyAccumulates == 2L * 2 * 64 * 64 * 8);
        Assert.Contains(summary.Layers, l => l.Name == "decode_head.query" && l.Kind == "Linear" && l.Parameters == 16 * 16 + 16);
        // The parts chose their keys: the decoder's another library's, the head its own.
        var keys = loaded.state_dict().Keys.ToList();
        Assert.Contains("decode_head.fuse.weight", keys);
        Assert.Contains("head.classifier.weight", keys);
        Assert.Contains("encoder.down1.conv.weight", keys);

        // The head declared its outputs; the model gives them by name and meaning, and the export names each.
        Assert.Equal(new[] { ("logits", OutputKind.PixelClassLogits), ("aux", OutputKind.Auxiliary) },
            loaded.Outputs.Select(o => (o.Name, o.Kind)));
        Assert.Contains("\"aux\"", OnnxExport.Build(checkpoint).MetadataProps.Single(p => p.Key == "outputs").Value);

        // The predictor takes it from the file alone.
        using var predictor = Predictor.FromFile(result.LastCheckpoint!, new PredictorOptions { Device = "cpu" });
        var image = data.Load(0).Image;
        Assert.Equal(32 * 32, predictor.Predict(image).Labels.Length);

        // ONNX Runtime runs the export, recorded from the forward pass, at the traced size and at others, odd ones too.
        var onnx = OnnxExport.Build(checkpoint);
        Assert.Contains(onnx.Graph.Initializer, t => t.Name == "decode_head.query.weight"); // initializers carry the keys
        using var session = new InferenceSession(onnx.ToByteArray());
        foreach (var (h, w) in new[] { (32, 32), (37, 45), (64, 48) })
        {
            using var scope = NewDisposeScope();
            var x = randn(new long[] { 1, 3, h, w }, generator: new Generator(5));
            Tensor expected;
            using (no_grad()) expected = loaded.Logits(x);
            var input = new DenseTensor<float>(x.data<float>().ToArray(), new[] { 1, 3, h, w });
            using var outputs = session.Run(new[] { NamedOnnxValue.CreateFromTensor(OnnxExport.Input, input) });
            var actual = tensor(outputs.Single(r => r.Name == OnnxExport.Output).AsTensor<float>().ToArray(), expected.shape);
            double error = (actual - expected).abs().max().item<float>();
            Assert.True(error <= 1e-4, $"{h}x{w}: max |ONNX Runtime - TorchSharp| = {error:E2}");
            // the auxiliary output too, at its own stride, under its declared name
            Tensor expectedAux;
            using (no_grad()) expectedAux = loaded.forward(x)["aux"];
            var aux = outputs.Single(r => r.Name == "aux").AsTensor<float>();
            Assert.Equal(expectedAux.shape, aux.Dimensions.ToArray().Select(d => (long)d).ToArray());
            Assert.True((tensor(aux.ToArray(), expectedAux.shape) - expectedAux).abs().max().item<float>() <= 1e-4);
        }
    }

    [Fact]
    public void A_part_that_is_not_registered_or_has_unknown_options_is_refused_by_name()
    {
        Assert.True(Registered);
        var unknown = Assert.Throws<OptionsException>(() => new SegmentationModel(ModelDescription.For("no-such-encoder")));
        Assert.Contains("'no-such-encoder'", unknown.Message);
        Assert.Contains("resnet34", unknown.Message); // the known ones are listed
        Assert.Contains("test-toy", unknown.Message);

        var typo = Toy() with { Encoder = new ModelPart("test-toy", new System.Text.Json.Nodes.JsonObject { ["Widht"] = 8 }) };
        var e = Assert.Throws<OptionsException>(() => typo.Resolve());
        Assert.Contains("Widht", e.Message);

        var bad = Toy() with { Encoder = ModelPart.Of("test-toy", new ToyEncoderOptions { Width = 3 }) };
        Assert.Contains("Width is 3", Assert.Throws<OptionsException>(() => bad.Resolve()).Message);

        var twice = Assert.Throws<OptionsException>(() =>
            ModelRegistry.AddEncoder<ToyEncoderOptions>("test-toy", (c, o) => new ToyEncoder(c.InChannels, o), "again"));
        Assert.Contains("registered already", twice.Message);
    }

    [Fact]
    public void The_registry_lists_each_part_with_its_options_and_pretrained_sources()
    {
        var encoders = ModelRegistry.Parts(PartKind.Encoder);
        var unet = encoders.Single(p => p.Name == "unet");
        Assert.Equal(64, (int)unet.Defaults["BaseChannels"]!);
        Assert.Equal("Batch", (string)unet.Defaults["Norm"]!);
        Assert.Contains(encoders.Single(p => p.Name == "mlnet-resnet18").Pretrained, s => s.Name == "builtin");
        Assert.Contains(ModelRegistry.Parts(PartKind.Decoder), p => p.Name == "smp-unet");
        Assert.Contains(ModelRegistry.Parts(PartKind.Head), p => p.Name == "smp-conv");
        Assert.Contains(ModelRegistry.ArchitectureNames(), a => a.Name == "unet");
    }
}
