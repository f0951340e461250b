using System.Collections;
using Segmentation.Checkpoints;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using Segmentation.Training;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Segmentation.Tests.Models;

/// <summary>The encoder seam: ResNet stages, torchvision's names, pretrained weights, channel adaptation, 0.1 checkpoints.</summary>
public class EncoderTests
{
    private static ModelDescription ResNet(string kind, int inChannels = 3, int classes = 3) => ModelDescription.For(kind, classes, inChannels) with { Seed = 1 };

    /// <summary>torchvision's <c>resnet{18,34,50}().state_dict()</c> keys and shapes, written from its layout (fc included).</summary>
    internal static List<(string Key, long[] Shape)> TorchvisionLayout(string kind)
    {
        var (blocks, bottleneck) = ResNetEncoder.Layout(kind);
        var keys = new List<(string, long[])>();
        void Bn(string p, long c)
        {
            foreach (var n in new[] { "weight", "bias", "running_mean", "running_var" }) keys.Add(($"{p}.{n}", new[] { c }));
            keys.Add(($"{p}.num_batches_tracked", Array.Empty<long>()));
        }
        keys.Add(("conv1.weight", new long[] { 64, 3, 7, 7 }));
        Bn("bn1", 64);
        long inplanes = 64;
        int expansion = bottleneck ? 4 : 1;
        for (int layer = 0; layer < 4; layer++)
        {
            long planes = 64L << layer;
            for (int b = 0; b < blocks[layer]; b++)
            {
                string p = $"layer{layer + 1}.{b}";
                if (bottleneck)
                {
                    keys.Add(($"{p}.conv1.weight", new[] { planes, inplanes, 1, 1 })); Bn($"{p}.bn1", planes);
                    keys.Add(($"{p}.conv2.weight", new[] { planes, planes, 3, 3 })); Bn($"{p}.bn2", planes);
                    keys.Add(($"{p}.conv3.weight", new[] { planes * 4, planes, 1, 1 })); Bn($"{p}.bn3", planes * 4);
                }
                else
                {
                    keys.Add(($"{p}.conv1.weight", new[] { planes, inplanes, 3, 3 })); Bn($"{p}.bn1", planes);
                    keys.Add(($"{p}.conv2.weight", new[] { planes, planes, 3, 3 })); Bn($"{p}.bn2", planes);
                }
                if (b == 0 && (layer > 0 || inplanes != planes * expansion))
                {
                    keys.Add(($"{p}.downsample.0.weight", new[] { planes * expansion, inplanes, 1, 1 }));
                    Bn($"{p}.downsample.1", planes * expansion);
                }
                inplanes = planes * expansion;
            }
        }
        keys.Add(("fc.weight", new[] { 1000, inplanes }));
        keys.Add(("fc.bias", new long[] { 1000 }));
        return keys;
    }

    [Theory]
    [InlineData("resnet18", 65, 97)]
    [InlineData("resnet34", 64, 64)]
    [InlineData("resnet50", 33, 47)]
    public void ResNet_stages_have_the_channels_and_strides_of_torchvision_and_logits_the_input_size(string kind, int h, int w)
    {
        using var scope = NewDisposeScope();
        using var model = new SegmentationModel(ResNet(kind));
        model.eval();
        int e = kind == "resnet50" ? 4 : 1;
        Assert.Equal(new[] { 64, 64 * e, 128 * e, 256 * e, 512 * e }, model.Encoder.Stages.Select(s => s.Channels));
        Assert.Equal(new[] { 2, 4, 8, 16, 32 }, model.Encoder.Stages.Select(s => s.Stride));
        using var grad = no_grad();
        var x = randn(2, 3, h, w);
        var features = model.Encoder.forward(x);
        Assert.Same(x, features[0]);
        long H = h, W = w;
        for (int i = 1; i < features.Length; i++)
        {
            H = (H + 1) / 2; W = (W + 1) / 2; // each stride-2 step (7x7 conv, 3x3 max-pool, 3x3 conv, all padded) rounds up
            Assert.Equal(new long[] { 2, model.Encoder.Stages[i - 1].Channels, H, W }, features[i].shape);
        }
        Assert.Equal(new long[] { 2, 3, h, w }, model.Logits(x).shape);
    }

    [Theory]
    [InlineData("resnet18", 14_328_209)]
    [InlineData("resnet34", 24_436_369)]
    [InlineData("resnet50", 32_521_105)]
    public void ResNet_UNets_have_the_parameter_counts_of_segmentation_models_pytorch(string kind, long smpParameters)
    {
        // smp.Unet(encoder_name, classes=1).parameters(): torchvision encoder without fc, decoder 256-128-64-32-16, 3x3 head.
        using var model = new SegmentationModel(ResNet(kind, classes: 1));
        Assert.Equal(smpParameters, model.ParameterCount());
        Assert.Equal(smpParameters, ModelSummary.For(model.Description, 64, 64).Parameters);
        var keys = model.state_dict().Keys.ToList();
        Assert.Contains("decoder.blocks.0.conv1.0.weight", keys);
        Assert.Contains("decoder.blocks.4.conv2.1.running_var", keys);
        Assert.Contains("segmentation_head.0.weight", keys);
    }

    [Theory]
    [InlineData("resnet34")]
    [InlineData("resnet50")]
    public void The_benchmarks_straight_TorchSharp_model_has_the_same_layers(string kind)
    {
        using var ours = new SegmentationModel(ResNet(kind, classes: 2));
        using var straight = new Segmentation.Training.StraightResNetUNet(kind, 3, 2);
        Assert.Equal(ours.ParameterCount(), straight.parameters().Sum(p => p.numel()));
        using var scope = NewDisposeScope();
        using var grad = no_grad();
        straight.eval();
        Assert.Equal(new long[] { 1, 2, 64, 96 }, straight.forward(randn(1, 3, 64, 96)).shape);
    }

    [Theory]
    [InlineData("resnet18")]
    [InlineData("resnet34")]
    [InlineData("resnet50")]
    public void A_torchvision_state_dict_loads_by_name_with_nothing_missing_or_unexpected(string kind)
    {
        using var dir = new TempDir();
        var layout = TorchvisionLayout(kind);
        using var model = new SegmentationModel(ResNet(kind));
        // Our encoder's keys are torchvision's, less the classifier.
        Assert.Equal(layout.Where(k => !k.Key.StartsWith("fc.")).Select(k => k.Key).Order(), model.Encoder.state_dict().Keys.Order());

        using var scope = NewDisposeScope();
        var g = new Generator(3);
        var file = new Hashtable();
        foreach (var (key, shape) in layout)
            file[key] = key.EndsWith("num_batches_tracked") ? tensor(7L) : randn(shape, generator: g);
        PyTorchPickler.PickleStateDict(dir["resnet.pth"], file);

        int loaded = model.LoadEncoderWeights(dir["resnet.pth"]);
        Assert.Equal(layout.Count - 2, loaded);
        var sd = model.Encoder.state_dict();
        foreach (var (key, _) in layout.Where(k => !k.Key.StartsWith("fc.") && !k.Key.EndsWith("num_batches_tracked")))
            Assert.True(sd[key].eq((Tensor)file[key]!).all().item<bool>(), key);
    }

    [Fact]
    public void A_weights_file_that_does_not_fit_says_which_keys_and_shapes()
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var file = new Hashtable();
        foreach (var (key, shape) in TorchvisionLayout("resnet18")) file[key] = zeros(shape);
        PyTorchPickler.PickleStateDict(dir["r18.pth"], file);
        using var model = new SegmentationModel(ResNet("resnet34"));
        var e = Assert.Throws<SegmentationException>(() => model.LoadEncoderWeights(dir["r18.pth"]));
        Assert.Contains("r18.pth", e.Message);
        Assert.Contains("missing: layer1.2.conv1.weight", e.Message); // ResNet-34 has a third block in layer1

        File.WriteAllText(dir["junk.pth"], "not a pickle");
        var junk = Assert.Throws<SegmentationException>(() => model.LoadEncoderWeights(dir["junk.pth"]));
        Assert.Contains("junk.pth: not a PyTorch state dict", junk.Message);
    }

    [Fact]
    public void Four_channels_repeat_the_RGB_filters_and_scale_them_by_three_quarters()
    {
        using var scope = NewDisposeScope();
        var rgb = randn(64, 3, 7, 7);
        var four = ResNetEncoder.AdaptFirstConvolution(rgb, 4);
        Assert.Equal(new long[] { 64, 4, 7, 7 }, four.shape);
        for (int c = 0; c < 4; c++)
            Assert.True((four.select(1, c) - rgb.select(1, c % 3) * 0.75).abs().max().item<float>() < 1e-6, $"channel {c}");
        Assert.True((ResNetEncoder.AdaptFirstConvolution(rgb, 1) - rgb.sum(1, keepdim: true)).abs().max().item<float>() < 1e-5);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(6)]
    public void Pretrained_RGB_weights_fit_1_and_6_channel_inputs_so_equal_channels_give_the_RGB_features(int channels)
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        using var rgb = new SegmentationModel(ResNet("resnet18", inChannels: 3));
        var file = new Hashtable();
        foreach (var (key, value) in rgb.Encoder.state_dict()) file[key] = value.detach().clone();
        PyTorchPickler.PickleStateDict(dir["rgb.pth"], file);

        using var other = new SegmentationModel(ResNet("resnet18", inChannels: channels));
        other.LoadEncoderWeights(dir["rgb.pth"]);
        var w = other.Encoder.state_dict()["conv1.weight"];
        Assert.Equal(new long[] { 64, channels, 7, 7 }, w.shape);

        rgb.eval(); other.eval();
        using var grad = no_grad();
        var plane = rand(1, 1, 40, 40);
        var a = rgb.Encoder.forward(plane.expand(1, 3, 40, 40));
        var b = other.Encoder.forward(plane.expand(1, channels, 40, 40));
        for (int i = 1; i < a.Length; i++)
        {
            double err = (a[i] - b[i]).abs().max().item<float>() / a[i].abs().max().item<float>();
            Assert.True(err < 1e-4, $"stage {i}: {err:E2}");
        }
    }

    [Fact]
    public void A_checkpoint_with_0_1_keys_loads_into_todays_layout_and_predicts_the_same()
    {
        using var scope = NewDisposeScope();
        var o = ModelDescription.UNet(inChannels: 3, classes: 2, baseChannels: 4, depth: 2, seed: 9);
        using var model = new SegmentationModel(o);
        // 0.1 wrote stem.*, encoder.{i}.* and decoder.{i}.* at the top level.
        static string Old(string k) => k.StartsWith("encoder.stem.") ? k["encoder.".Length..]
            : k.StartsWith("encoder.blocks.") ? "encoder." + k["encoder.blocks.".Length..]
            : k.StartsWith("decoder.blocks.") ? "decoder." + k["decoder.blocks.".Length..] : k;
        var ms = new MemoryStream();
        using (var writer = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            var sd = model.state_dict();
            writer.Write((byte)sd.Count); // LEB128 of a count under 128
            foreach (var (key, value) in sd) { writer.Write(Old(key)); value.Save(writer); }
        }
        Assert.True(model.state_dict().Count < 128);
        var ckpt = new Checkpoint
        {
            Model = o, Dataset = new Segmentation.Data.DatasetDescription { Classes = 2, ClassNames = new[] { "a", "b" } }, Preprocessing = new Preprocessing(Segmentation.Data.Normalization.ImageNet),
            TrainerSettings = new TrainerOptions().ToJson(), State = new TrainingState(), Weights = ms.ToArray(),
        };
        using var loaded = ckpt.CreateModel();
        model.eval(); loaded.eval();
        using var grad = no_grad();
        var x = randn(1, 3, 16, 16);
        Assert.True(model.Logits(x).eq(loaded.Logits(x)).all().item<bool>());
    }

    [Fact]
    public void A_frozen_encoder_does_not_move_until_it_thaws_and_its_learning_rate_scales()
    {
        var (train, _) = Segmentation.Data.SegmentationDataset.Shapes(new Segmentation.Data.ShapesOptions { Count = 16, Size = 32, Seed = 2 }).Split(0.99, seed: 0);
        using var model = new SegmentationModel(ResNet("resnet18", classes: 4));
        float[] Weights(nn.Module m) => m.parameters().SelectMany(p => p.detach().data<float>().ToArray()).ToArray();
        var encoderBefore = Weights(model.Encoder);
        var decoderBefore = Weights(model) .Skip(encoderBefore.Length).ToArray();
        var options = new TrainerOptions { Epochs = 2, BatchSize = 4, Device = "cpu", Seed = 1, ManageProcessMemory = false, Augment = false, Optimizer = new() { FreezeEncoderEpochs = 1, EncoderLearningRateScale = 0.1 } };
        using var trainer = new Trainer(model, options);
        float[]? encoderAfterOne = null;
        trainer.Fit(train, progress: new SynchronousProgress<TrainingProgress>(p =>
        {
            if (p.Kind == ProgressKind.Epoch && p.Epoch == 1) encoderAfterOne = Weights(model.Encoder);
        }));
        Assert.Equal(encoderBefore, encoderAfterOne);
        Assert.NotEqual(encoderBefore, Weights(model.Encoder)); // thawed in epoch 2
        Assert.NotEqual(decoderBefore, Weights(model).Skip(encoderBefore.Length).ToArray());
    }
}
