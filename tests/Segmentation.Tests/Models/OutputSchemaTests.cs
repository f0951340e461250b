extern alias onnx;

using onnx::Segmentation.Onnx;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using Segmentation.Training;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace Segmentation.Tests.Models;

/// <summary>A head that gives what its name says (the cases of <see cref="OutputSchemaTests"/>).</summary>
public sealed class SchemaTestHead : Head
{
    private readonly Convolution regress;
    private readonly string mode;

    public SchemaTestHead(long inChannels, string mode) : base(nameof(SchemaTestHead))
    {
        this.mode = mode;
        regress = new Convolution(inChannels, 2, 1);
        RegisterComponents();
    }

    /// <summary>Declares one per-pixel regression, <c>offsets</c> (no class logits).</summary>
    public override IReadOnlyList<ModelOutput> Outputs { get; } = new[]
    {
        new ModelOutput("offsets", 4, OutputKind.PixelRegression, "two offsets per pixel"),
    };

    public override ModelOutputs forward(HeadInput x)
    {
        var y = regress.forward(x.Decoded);
        return mode switch
        {
            "undeclared" => new(new Dictionary<string, Tensor> { ["offsets"] = y, ["extra"] = y }, Outputs),
            "wrong rank" => new(new Dictionary<string, Tensor> { ["offsets"] = y.flatten(2) }, Outputs),
            _ => new(new Dictionary<string, Tensor> { ["offsets"] = y }, Outputs),
        };
    }
}

/// <summary>
/// Heads declare their outputs (name, rank, meaning) and no output is mandatory: a model without class logits builds,
/// runs and exports (its outputs listed in the ONNX metadata, at their rank); the tasks and the predictors that read
/// class logits refuse it by saying what it gives; a head that gives an undeclared output or one of another rank is
/// stopped by the model, naming the head and the output.
/// </summary>
public class OutputSchemaTests
{
    private static readonly bool Registered = Register();

    private static bool Register()
    {
        foreach (var mode in new[] { "offsets", "undeclared", "wrong rank" })
            ModelRegistry.AddHead<ToyHeadOptions>($"test-schema-{mode.Replace(' ', '-')}",
                (c, _) => new SchemaTestHead(c.InChannels, mode), "a test's head without class logits");
        return true;
    }

    private static ModelDescription With(string head) =>
        ModelDescription.UNet(classes: 4, baseChannels: 4, depth: 2, seed: 1) with { Head = new ModelPart(head) };

    [Fact]
    public void A_model_without_class_logits_runs_and_exports_and_what_needs_them_says_what_it_gives()
    {
        Assert.True(Registered);
        using var model = new SegmentationModel(With("test-schema-offsets"));
        using (NewDisposeScope())
        using (no_grad())
        {
            var outputs = model.forward(randn(1, 3, 32, 32));
            Assert.Equal(new long[] { 1, 2, 32, 32 }, outputs.Of(OutputKind.PixelRegression).shape);
            Assert.Null(outputs.Find(OutputKind.PixelClassLogits));
            Assert.Contains("offsets (pixel-regression, rank 4)",
                Assert.Throws<KeyNotFoundException>(() => outputs.Logits).Message);
        }

        // training a semantic model on it is refused before the first step
        var data = SegmentationDataset.Shapes(new ShapesOptions { Count = 4, Size = 32, Seed = 1 });
        using (var trainer = new Trainer(model, new TrainerOptions { Epochs = 1, BatchSize = 2, Device = "cpu",
            ManageProcessMemory = false }))
        {
            var e = Assert.Throws<OptionsException>(() => trainer.Fit(data, data));
            Assert.Contains("semantic task reads the model's pixel-class-logits output", e.Message);
            Assert.Contains("offsets (pixel-regression, rank 4)", e.Message);
        }

        // the export declares the output at its rank and lists it; ONNX Runtime's predictor refuses it by name
        using var d = new TempDir();
        var checkpoint = new Checkpoint
        {
            Model = model.Description, Weights = Checkpoint.SerializeWeights(model),
            Preprocessing = new Preprocessing(Normalization.ImageNet), Dataset = new DatasetDescription
            {
                Classes = 4, ClassNames = new[] { "a", "b", "c", "d" }, ClassColors = DatasetDescription.Defaults(4).Colors,
            },
            TrainerSettings = new TrainerOptions().ToJson(), State = new TrainingState(),
        };
        Assert.Contains("pixel-class-logits", Assert.Throws<OptionsException>(() =>
            new Predictor(checkpoint, new PredictorOptions { Device = "cpu" })).Message);
        var exported = OnnxExport.Build(checkpoint);
        var output = Assert.Single(exported.Graph.Output);
        Assert.Equal(("offsets", 4), (output.Name, output.Type.TensorType.Shape.Dim.Count));
        Assert.Contains("\"kind\":\"pixel-regression\"",
            exported.MetadataProps.Single(p => p.Key == "outputs").Value);
        OnnxExport.Write(checkpoint, d["m.onnx"]);
        var refused = Assert.Throws<InvalidDataException>(() => new OnnxPredictor(d["m.onnx"]));
        Assert.Contains("no class logits per pixel", refused.Message);
        Assert.Contains("offsets (pixel-regression)", refused.Message);
    }

    [Theory]
    [InlineData("test-schema-undeclared", "gave extra without declaring it")]
    [InlineData("test-schema-wrong-rank", "declares 'offsets' of rank 4 and gave one of shape [1, 2, 1024]")]
    public void A_head_that_breaks_its_declaration_is_stopped_by_name(string head, string message)
    {
        Assert.True(Registered);
        using var model = new SegmentationModel(With(head));
        using var scope = NewDisposeScope();
        using var grad = no_grad();
        var e = Assert.Throws<InvalidOperationException>(() => model.forward(randn(1, 3, 32, 32)));
        Assert.Contains(message, e.Message);
        Assert.Contains($"'{head}'", e.Message);
    }
}
