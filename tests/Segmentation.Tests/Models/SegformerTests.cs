using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Evaluation;
using Segmentation.Inference;
using Segmentation.Models;
using Segmentation.Training;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace Segmentation.Tests.Models;

/// <summary>SegFormer (Mix Transformer + all-MLP head) built from the registry, under Hugging Face's names.</summary>
public class SegformerTests
{
    private static ModelDescription Segformer(string encoder, int classes, int? seed = 0) =>
        new() { Architecture = "segformer", Encoder = new ModelPart(encoder), Classes = classes, Seed = seed };

    /// <summary>B0 and B2: transformers' SegformerForSemanticSegmentation (the figures); B1, B3, B4 and B5: the
    /// PyTorch reference written from the paper (tools/interop/segformer_reference.py counts), which gives
    /// transformers' B0 and B2 exactly.</summary>
    [Theory]
    [InlineData("mit-b0", 3_752_694)]
    [InlineData("mit-b1", 13_715_798)]
    [InlineData("mit-b2", 27_461_974)]
    [InlineData("mit-b3", 47_337_814)]
    [InlineData("mit-b4", 64_108_374)]
    [InlineData("mit-b5", 84_708_694)]
    public void Parameter_counts_at_150_classes_are_transformers(string encoder, long expected)
    {
        using var model = new SegmentationModel(Segformer(encoder, 150));
        Assert.Equal(expected, model.ParameterCount());
    }

    [Fact]
    public void State_dict_keys_are_hugging_faces()
    {
        using var model = new SegmentationModel(Segformer("mit-b0", 3));
        var keys = model.state_dict().Keys.ToHashSet();
        foreach (var key in new[]
        {
            "segformer.encoder.patch_embeddings.0.proj.weight", "segformer.encoder.patch_embeddings.3.layer_norm.bias",
            "segformer.encoder.block.0.0.layer_norm_1.weight", "segformer.encoder.block.0.0.attention.self.query.weight",
            "segformer.encoder.block.0.1.attention.self.sr.weight", "segformer.encoder.block.0.1.attention.self.layer_norm.bias",
            "segformer.encoder.block.3.1.attention.output.dense.weight", "segformer.encoder.block.2.0.mlp.dense1.weight",
            "segformer.encoder.block.2.0.mlp.dwconv.dwconv.weight", "segformer.encoder.block.2.0.mlp.dense2.bias",
            "segformer.encoder.layer_norm.3.weight", "decode_head.linear_c.3.proj.weight", "decode_head.linear_fuse.weight",
            "decode_head.batch_norm.running_var", "decode_head.classifier.bias",
        })
            Assert.Contains(key, keys);
        // The last stage reduces by 1: no sr there (transformers has none either).
        Assert.DoesNotContain("segformer.encoder.block.3.0.attention.self.sr.weight", keys);
        Assert.Empty(model.NonLeafModules());
    }

    [Theory]
    [InlineData(64, 64)]
    [InlineData(75, 101)]
    public void Logits_come_at_the_inputs_size_and_onnx_runtime_agrees(int height, int width)
    {
        using var model = new SegmentationModel(Segformer("mit-b0", 5, seed: 3));
        model.eval();
        using var scope = NewDisposeScope();
        var x = randn(new long[] { 1, 3, height, width }, generator: new Generator(4));
        Tensor expected;
        using (no_grad()) expected = model.Logits(x);
        Assert.Equal(new long[] { 1, 5, height, width }, expected.shape);

        var checkpoint = new Checkpoint
        {
            Model = model.Description, Preprocessing = new Preprocessing(Normalization.ImageNet), TrainerSettings = new TrainerOptions().ToJson(),
            Dataset = new DatasetDescription { Classes = 5, ClassNames = Enumerable.Range(0, 5).Select(i => $"c{i}").ToArray(),
                ClassColors = DatasetDescription.Defaults(5).Colors },
            State = new TrainingState(), Weights = Checkpoint.SerializeWeights(model),
        };
        using var session = new InferenceSession(OnnxExport.Build(checkpoint).ToByteArray());
        var input = new DenseTensor<float>(x.data<float>().ToArray(), new[] { 1, 3, height, width });
        using var results = session.Run(new[] { NamedOnnxValue.CreateFromTensor(OnnxExport.Input, input) });
        var actual = tensor(results.Single(r => r.Name == OnnxExport.Output).AsTensor<float>().ToArray(), expected.shape);
        double error = (actual - expected).abs().max().item<float>();
        Assert.True(error <= 1e-4, $"{height}x{width}: max |ONNX Runtime - TorchSharp| = {error:E2}");
    }

    [Fact]
    public void A_segformer_b0_learns_the_shapes()
    {
        var (train, val) = SegmentationDataset.Shapes(new ShapesOptions { Count = 48, Size = 64, Seed = 7, MaxShapes = 2 }).Split(0.75, seed: 0);
        using var model = new SegmentationModel(Segformer("mit-b0", 4, seed: 1));
        using var trainer = new Trainer(model, new TrainerOptions
        {
            Epochs = 6, BatchSize = 4, Seed = 2, Workers = 1, Device = "cpu", Augment = false,
            Optimizer = new() { LearningRate = 1e-3 },
        });
        var result = trainer.Fit(train, val);
        // From chance (a quarter of the pixels right, background aside) to most pixels: it learns, through every layer kind.
        Assert.True(result.History[^1].TrainLoss < 0.6 * result.History[0].TrainLoss,
            $"training loss {result.History[0].TrainLoss:F3} -> {result.History[^1].TrainLoss:F3}");
        Assert.True(result.Metrics!.PixelAccuracy > 0.8, $"pixel accuracy {result.Metrics.PixelAccuracy:F3}");
    }

    [Fact]
    public void The_benchmarks_straight_TorchSharp_segformer_has_the_same_layers()
    {
        using var ours = new SegmentationModel(Segformer("mit-b0", 11));
        using var straight = new StraightSegformer("mit-b0", 3, 11);
        Assert.Equal(ours.ParameterCount(), straight.parameters().Sum(p => p.numel()));
        using var scope = NewDisposeScope();
        using var grad = no_grad();
        straight.eval();
        Assert.Equal(new long[] { 1, 11, 75, 101 }, straight.forward(randn(1, 3, 75, 101)).shape);
    }
}
