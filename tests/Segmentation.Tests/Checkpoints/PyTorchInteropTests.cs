using System.IO.Compression;
using Segmentation.Checkpoints;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Segmentation.Tests.Checkpoints;

/// <summary>PyTorch weights in and out: milesial/Pytorch-UNet's and smp's key names, written here as Python names them.</summary>
public class PyTorchInteropTests
{
    /// <summary>milesial's <c>UNet(n_channels, n_classes, bilinear=False)</c> state dict: its keys and shapes, from its module layout.</summary>
    internal static Dictionary<string, Tensor> MilesialStateDict(int inChannels, int classes, int baseChannels, int depth, int seed)
    {
        var g = new TorchSharp.torch.Generator((ulong)seed);
        var dict = new Dictionary<string, Tensor>();
        void DoubleConv(string p, long cin, long cout)
        {
            dict[$"{p}.double_conv.0.weight"] = randn(new[] { cout, cin, 3, 3 }, generator: g) * 0.1;
            dict[$"{p}.double_conv.3.weight"] = randn(new[] { cout, cout, 3, 3 }, generator: g) * 0.1;
            foreach (var bn in new[] { 1, 4 })
            {
                dict[$"{p}.double_conv.{bn}.weight"] = rand(cout, generator: g) + 0.5;
                dict[$"{p}.double_conv.{bn}.bias"] = randn(cout, generator: g) * 0.1;
                dict[$"{p}.double_conv.{bn}.running_mean"] = randn(cout, generator: g) * 0.1;
                dict[$"{p}.double_conv.{bn}.running_var"] = rand(cout, generator: g) + 0.5;
                dict[$"{p}.double_conv.{bn}.num_batches_tracked"] = tensor(7L);
            }
        }
        long C(int level) => (long)baseChannels << level;
        DoubleConv("inc", inChannels, C(0));
        for (int i = 1; i <= depth; i++) DoubleConv($"down{i}.maxpool_conv.1", C(i - 1), C(i));
        for (int i = 1; i <= depth; i++)
        {
            long cin = C(depth - i + 1), cout = C(depth - i);
            dict[$"up{i}.up.weight"] = randn(new[] { cin, cin / 2, 2, 2 }, generator: g) * 0.1;
            dict[$"up{i}.up.bias"] = randn(cin / 2, generator: g) * 0.1;
            DoubleConv($"up{i}.conv", cin, cout);
        }
        dict["outc.conv.weight"] = randn(new[] { (long)classes, C(0), 1, 1 }, generator: g) * 0.1;
        dict["outc.conv.bias"] = randn(classes, generator: g) * 0.1;
        return dict;
    }

    [Fact]
    public void A_milesial_state_dict_loads_by_name_with_its_preprocessing()
    {
        using var dir = new TempDir();
        var source = MilesialStateDict(inChannels: 3, classes: 2, baseChannels: 8, depth: 3, seed: 1);
        PyTorchPickler.PickleStateDict(dir["milesial.pth"], source);

        var checkpoint = PyTorchInterop.Import(dir["milesial.pth"], PyTorchLayout.Milesial);
        Assert.Equal(ModelDescription.UNet(inChannels: 3, classes: 2, baseChannels: 8, depth: 3, seed: null).Resolve(), checkpoint.Model with { Seed = null });
        Assert.All(checkpoint.Preprocessing.Normalization.Mean, m => Assert.Equal(0f, m)); // milesial: pixel / 255
        Assert.All(checkpoint.Preprocessing.Normalization.Std, s => Assert.Equal(1f, s));
        using var model = checkpoint.CreateModel();
        var ours = model.state_dict();
        foreach (var (python, here) in new[]
        {
            ("inc.double_conv.0.weight", "encoder.stem.block.conv1.weight"),
            ("down2.maxpool_conv.1.double_conv.4.running_var", "encoder.blocks.1.conv.block.norm2.running_var"),
            ("up1.up.weight", "decoder.blocks.0.up.weight"),
            ("up3.conv.double_conv.1.bias", "decoder.blocks.2.conv.block.norm1.bias"),
            ("outc.conv.bias", "head.bias"),
        })
            Assert.True(ours[here].eq(source[python]).all().item<bool>(), $"{python} -> {here}");
    }

    [Theory]
    [InlineData("unet", "milesial.pth", PyTorchLayout.Milesial)]
    [InlineData("unet", "milesial.safetensors", PyTorchLayout.Milesial)]
    [InlineData("resnet34", "smp.pth", PyTorchLayout.Smp)]
    [InlineData("resnet18", "smp.safetensors", PyTorchLayout.Smp)]
    public void Export_then_import_round_trips_bit_exact(string encoder, string file, PyTorchLayout layout)
    {
        using var dir = new TempDir();
        var options = encoder == "unet"
            ? ModelDescription.UNet(inChannels: 1, classes: 3, seed: 4) // milesial's class: base 64, depth 4
            : ModelDescription.For(encoder, classes: 5, inChannels: 3) with { Seed = 4 };
        var source = PyTorchInterop.Import(Save(dir, options), layout == PyTorchLayout.Milesial ? PyTorchLayout.Milesial : PyTorchLayout.Smp);
        PyTorchInterop.Export(source, dir[file], layout);
        var back = PyTorchInterop.Import(dir[file], layout);
        using var a = source.CreateModel();
        using var b = back.CreateModel();
        var sa = a.state_dict(); var sb = b.state_dict();
        Assert.Equal(sa.Keys.OrderBy(k => k), sb.Keys.OrderBy(k => k));
        foreach (var (k, t) in sa) Assert.True(t.shape.SequenceEqual(sb[k].shape) && t.eq(sb[k]).all().item<bool>(), k);
        Assert.Equal(System.Text.Json.JsonSerializer.Serialize(source.Model, Checkpoint.Json), System.Text.Json.JsonSerializer.Serialize(back.Model, Checkpoint.Json));

        string Save(TempDir d, ModelDescription o)
        {
            // A PyTorch file to start from, written with the source's names.
            using var m = new SegmentationModel(o);
            var dict = m.state_dict().ToDictionary(kv => layout == PyTorchLayout.Milesial ? PyTorchInterop.ToMilesial(kv.Key)! : kv.Key, kv => kv.Value);
            PyTorchPickler.PickleStateDict(d["start.pth"], dict);
            return d["start.pth"];
        }
    }

    [Fact]
    public void Unknown_keys_wrong_shapes_and_non_tensors_are_clear_errors()
    {
        using var dir = new TempDir();
        var source = MilesialStateDict(3, 2, 8, 2, 1);
        source["extra.weight"] = zeros(3);
        PyTorchPickler.PickleStateDict(dir["extra.pth"], source);
        var unknown = Assert.Throws<SegmentationException>(() => PyTorchInterop.Import(dir["extra.pth"], PyTorchLayout.Milesial));
        Assert.Contains("extra.weight", unknown.Message);

        source = MilesialStateDict(3, 2, 8, 2, 1);
        source["up1.up.bias"] = zeros(5);
        PyTorchPickler.PickleStateDict(dir["shape.pth"], source);
        var shape = Assert.Throws<SegmentationException>(() => PyTorchInterop.Import(dir["shape.pth"], PyTorchLayout.Milesial));
        Assert.Contains("decoder.blocks.0.up.bias [5]", shape.Message);

        // torch.save({"a": "hello"}): a zip whose data.pkl holds a dict with a string, not a tensor.
        using (var zip = ZipFile.Open(dir["text.pth"], ZipArchiveMode.Create))
        {
            using var s = zip.CreateEntry("archive/data.pkl").Open();
            s.Write(new byte[] { 0x80, 2, (byte)'}', 0x8c, 1, (byte)'a', 0x8c, 5, (byte)'h', (byte)'e', (byte)'l', (byte)'l', (byte)'o', (byte)'s', (byte)'.' });
        }
        var text = Assert.Throws<SegmentationException>(() => PyTorchInterop.Import(dir["text.pth"], PyTorchLayout.Milesial));
        Assert.Contains("text.pth", text.Message);
        Assert.Contains("not a tensor", text.Message);
    }

    [Fact]
    public void A_bilinear_milesial_model_is_refused_with_the_reason()
    {
        using var dir = new TempDir();
        var source = MilesialStateDict(3, 2, 8, 2, 1);
        foreach (var k in source.Keys.Where(k => k.Contains(".up.")).ToList()) source.Remove(k);
        PyTorchPickler.PickleStateDict(dir["bilinear.pth"], source);
        var e = Assert.Throws<SegmentationException>(() => PyTorchInterop.Import(dir["bilinear.pth"], PyTorchLayout.Milesial));
        Assert.Contains("bilinear=True", e.Message);
    }
}
