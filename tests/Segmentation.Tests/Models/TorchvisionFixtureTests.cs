using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using static TorchSharp.torch;

namespace Segmentation.Tests.Models;

/// <summary>Runs only where tools/interop/torchvision_resnet_fixture.py has written its files (Python is not in CI).</summary>
public sealed class TorchvisionFixtureFactAttribute : TheoryAttribute
{
    public TorchvisionFixtureFactAttribute()
    {
        if (Environment.GetEnvironmentVariable(TorchvisionFixtureTests.Variable) is not { Length: > 0 })
            Skip = $"set {TorchvisionFixtureTests.Variable} to the folder tools/interop/torchvision_resnet_fixture.py wrote";
    }
}

/// <summary>Our ResNet encoders against torchvision's own, on torchvision's weights and outputs.</summary>
public class TorchvisionFixtureTests
{
    internal const string Variable = "SEGMENTATION_TORCHVISION_FIXTURES";

    [TorchvisionFixtureFact]
    [InlineData("resnet18", "resnet18")]
    [InlineData("resnet34", "resnet34")]
    [InlineData("resnet50", "resnet50")]
    public void Torchvision_weights_give_torchvisions_feature_maps(string file, string kind)
    {
        var folder = Environment.GetEnvironmentVariable(Variable)!;
        using var scope = NewDisposeScope();
        var io = StateDicts.ReadFile(Path.Combine(folder, file + "_io.pth"));
        using var model = new SegmentationModel(ModelDescription.For(kind, classes: 2, inChannels: 3));
        model.LoadEncoderWeights(Path.Combine(folder, file + ".pth"));
        model.eval();
        using var grad = no_grad();
        var features = model.Encoder.forward(io["input"]);
        for (int i = 1; i <= 5; i++)
        {
            var expected = io[$"stage{i}"];
            Assert.Equal(expected.shape, features[i].shape);
            double err = (features[i] - expected).abs().max().item<float>() / expected.abs().max().item<float>();
            Assert.True(err < 1e-4, $"{file} stage {i}: {err:E2} of the largest value");
        }
    }
}
