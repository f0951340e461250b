using Segmentation.Data;
using Segmentation.Models;
using static TorchSharp.torch;

namespace Segmentation.Tests.Models;

/// <summary>torchvision's ConvNeXt-T, registered as one encoder file: torchvision's keys, shapes and counts, its
/// weights
/// load by name (an RGB stem fitted to one channel), its maps at strides 4 to 32.</summary>
public class ConvNeXtTests
{
    [Fact]
    public void Features_have_torchvisions_keys_shapes_and_parameter_count()
    {
        using var model = new SegmentationModel(new ModelDescription
        {
            Encoder = new ModelPart("convnext-tiny"), Classes = 2, Seed = 1,
        });
        Assert.Equal(KeyFixtures.Read("torchvision-convnext_tiny-features.txt"),
            KeyFixtures.Lines(model.state_dict(), "encoder.features."));
        Assert.Equal(27_818_592, model.Encoder.parameters().Sum(p => p.numel())); // torchvision's features
        Assert.Equal(new[] { (96, 4), (192, 8), (384, 16), (768, 32) },
            model.Encoder.Stages.Select(s => (s.Channels, s.Stride)));
    }

    [Fact]
    public void A_torchvision_state_dict_loads_by_name_with_the_stem_fitted_to_one_channel()
    {
        using var d = new TempDir();
        using var source = new SegmentationModel(new ModelDescription
        {
            Encoder = new ModelPart("convnext-tiny"), Classes = 2, Seed = 1,
        });
        // torchvision's layout: features.* at the top, and the classifier this encoder leaves out
        var weights = source.state_dict().Where(kv => kv.Key.StartsWith("encoder.", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key["encoder.".Length..], kv => kv.Value.detach().clone());
        weights["classifier.2.weight"] = zeros(1000, 768);
        var file = d["convnext_tiny.safetensors"];
        using (var stream = File.Create(file)) TorchSharp.PyBridge.Safetensors.SaveStateDict(stream, weights);

        using var gray = new SegmentationModel(new ModelDescription
        {
            Encoder = new ModelPart("convnext-tiny"), Classes = 2, InChannels = 1, Seed = 2,
        });
        int loaded = gray.LoadEncoderWeights(file, Normalization.DefaultFor(1));
        Assert.Equal(weights.Count - 1, loaded);
        var state = gray.state_dict();
        Assert.True(state["encoder.features.1.0.layer_scale"].equal(weights["features.1.0.layer_scale"]).all()
            .item<bool>());
        Assert.True(state["encoder.features.7.2.block.5.weight"].equal(weights["features.7.2.block.5.weight"])
            .all().item<bool>());
        // a gray image is R = G = B: the fitted stem is the sum of the RGB filters
        Assert.True(state["encoder.features.0.0.weight"].allclose(weights["features.0.0.weight"].sum(1,
            keepdim: true)));
    }
}
