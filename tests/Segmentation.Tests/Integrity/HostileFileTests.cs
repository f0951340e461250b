extern alias onnx;

using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using Google.Protobuf;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Inference;
using Segmentation.Models;
using onnx::Segmentation.Onnx;
using Segmentation.Training;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace Segmentation.Tests.Integrity;

/// <summary>Small files that are damaged or hostile: refused by what they are, before they cost memory or time, or
/// load silently wrong.</summary>
public class HostileFileTests
{
    [DllImport("libc", SetLastError = true)]
    private static extern int mkfifo(string path, uint mode);

    private static ModelDescription B0(int classes) => new() { Architecture = "segformer", Encoder = new ModelPart("mit-b0"), Classes = classes, Seed = 1 };

    private static void SaveSafetensors(string path, Dictionary<string, Tensor> weights)
    {
        using var stream = File.Create(path);
        TorchSharp.PyBridge.Safetensors.SaveStateDict(stream, weights);
    }

    [Fact]
    public void Imported_weights_with_NaN_or_infinity_are_refused_by_name_unless_allowed_loudly()
    {
        using var d = new TempDir();
        using var scope = NewDisposeScope();
        using var model = new SegmentationModel(B0(3));
        var weights = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        weights["decode_head.classifier.weight"][0, 0] = float.NaN;
        weights["segformer.encoder.layer_norm.0.weight"][1] = float.PositiveInfinity;
        SaveSafetensors(d["sf.safetensors"], weights);

        var e = Assert.Throws<SegmentationException>(() => PyTorchInterop.Import(d["sf.safetensors"], PyTorchLayout.Segformer));
        Assert.Contains("decode_head.classifier.weight (1 of", e.Message);
        Assert.Contains("segformer.encoder.layer_norm.0.weight (1 of 32 values)", e.Message);
        Assert.Contains("--allow-nonfinite", e.Message);

        var warnings = new List<string>();
        var allowed = PyTorchInterop.Import(d["sf.safetensors"], PyTorchLayout.Segformer, allowNonFinite: true, new SynchronousProgress<string>(warnings.Add));
        Assert.Equal(3, allowed.Model.Classes);
        Assert.Contains(warnings, w => w.Contains("NaN or infinite") && w.Contains("loaded anyway"));
    }

    /// <summary>A safetensors file whose header says what the test wants: tensors a and b, F32 [2] each, at these byte offsets of 16 bytes of data.</summary>
    private static void WriteRawSafetensors(string path, (long, long) a, (long, long) b, int dataBytes = 16)
    {
        var header = Encoding.UTF8.GetBytes($"{{\"a\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[{a.Item1},{a.Item2}]}},"
            + $"\"b\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[{b.Item1},{b.Item2}]}}}}");
        using var f = File.Create(path);
        f.Write(BitConverter.GetBytes((ulong)header.Length));
        f.Write(header);
        f.Write(new byte[dataBytes]);
    }

    [Theory]
    [InlineData(0, 8, 0, 8, 16, "another tensor's bytes")] // b reads a's bytes
    [InlineData(0, 8, 8, 24, 16, "outside the 16 bytes")]
    [InlineData(0, 8, 12, 20, 24, "no tensor ends")] // a gap
    [InlineData(0, 8, 8, 16, 24, "the tensors cover 16 of the 24 bytes")] // bytes no tensor owns
    [InlineData(0, 8, 8, 12, 16, "its shape and F32 need 8")]
    public void Safetensors_offsets_must_tile_the_data_as_the_format_requires(long a0, long a1, long b0, long b1, int data, string expected)
    {
        using var d = new TempDir();
        WriteRawSafetensors(d["w.safetensors"], (a0, a1), (b0, b1), data);
        var e = Assert.Throws<SegmentationException>(() => StateDicts.ReadFile(d["w.safetensors"]));
        Assert.Contains("w.safetensors", e.Message);
        Assert.Contains(expected, e.Message);
        WriteRawSafetensors(d["ok.safetensors"], (0, 8), (8, 16));
        Assert.Equal(2, StateDicts.ReadFile(d["ok.safetensors"]).Count); // the same file, tiled right, reads
    }

    [Fact]
    public void A_pth_whose_pickle_decompresses_past_the_limit_is_refused_before_it_is_read()
    {
        using var d = new TempDir();
        using (var zip = ZipFile.Open(d["bomb.pth"], ZipArchiveMode.Create))
        {
            using var s = zip.CreateEntry("archive/data.pkl", CompressionLevel.SmallestSize).Open();
            var zeros = new byte[1 << 20];
            for (int i = 0; i < 80; i++) s.Write(zeros); // 80 MiB of pickle in a file of about 80 KB
        }
        Assert.True(new FileInfo(d["bomb.pth"]).Length < 1 << 20);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var e = Assert.Throws<SegmentationException>(() => StateDicts.ReadFile(d["bomb.pth"]));
        Assert.Contains("decompresses to 83,886,080 bytes, over the limit", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");

        File.WriteAllBytes(d["empty.pth"], Array.Empty<byte>());
        Assert.Contains("the file is empty", Assert.Throws<SegmentationException>(() => StateDicts.ReadFile(d["empty.pth"])).Message);
        File.WriteAllBytes(d["random.pth"], Enumerable.Range(0, 999).Select(i => (byte)(i * 37)).ToArray());
        Assert.Contains("does not start like one", Assert.Throws<SegmentationException>(() => StateDicts.ReadFile(d["random.pth"])).Message);
    }

    [Fact]
    public async Task A_FIFO_or_a_link_to_a_device_is_refused_by_type_without_being_opened()
    {
        using var d = new TempDir();
        Assert.Equal(0, mkfifo(d["pipe.png"], 0x1B6));
        File.CreateSymbolicLink(d["zero.png"], "/dev/zero");
        var reader = new ImageReader();
        // Opening the FIFO would block for ever: run it on a task with a deadline.
        var read = Task.Run(() => Assert.Throws<DataException>(() => reader.ReadImage(d["pipe.png"], 3)));
        Assert.Same(read, await Task.WhenAny(read, Task.Delay(TimeSpan.FromSeconds(20))));
        Assert.Contains("a FIFO (named pipe)", (await read).Message);
        Assert.Contains("a character device", Assert.Throws<DataException>(() => reader.ReadImage(d["zero.png"], 3)).Message);
        Assert.Contains("a character device", Assert.Throws<SegmentationException>(() => StateDicts.ReadFile(d["zero.png"])).Message);
    }

    private static byte[] OnnxWith(params (string Key, string Value)[] changes)
    {
        using var model = new SegmentationModel(ModelDescription.UNet(classes: 5, baseChannels: 4, depth: 2, seed: 1));
        var checkpoint = new Checkpoint
        {
            Model = model.Description, Preprocessing = new Preprocessing(Normalization.ImageNet), TrainerSettings = new TrainerOptions().ToJson(),
            Dataset = new DatasetDescription { Classes = 5, ClassNames = Enumerable.Range(0, 5).Select(i => $"c{i}").ToArray(), ClassColors = DatasetDescription.Defaults(5).Colors },
            State = new TrainingState(), Weights = Checkpoint.SerializeWeights(model),
        };
        var proto = OnnxExport.Build(checkpoint);
        foreach (var (key, value) in changes)
        {
            var entry = proto.MetadataProps.FirstOrDefault(p => p.Key == key);
            if (entry is null) proto.MetadataProps.Add(new global::Onnx.StringStringEntryProto { Key = key, Value = value });
            else entry.Value = value;
        }
        return proto.ToByteArray();
    }

    [Theory]
    [InlineData("classes", "3", "metadata 'classes' = 3, but the graph's output has 5 channels")]
    [InlineData("classes", "-1", "metadata 'classes' = -1, but the graph's output has 5 channels")]
    [InlineData("normalization_std", "[0,0,0]", "each std must be a positive number")]
    [InlineData("resize", "8000x80000", "metadata 'resize' = 8000x80000")]
    [InlineData("class_names", "not json", "metadata 'class_names' = 'not json' cannot be read")]
    [InlineData("class_names", "[1,2,3,4,5]", "metadata 'class_names' = '[1,2,3,4,5]' cannot be read")]
    [InlineData("class_colors", "[\"#zz0000\",\"#000000\",\"#000000\",\"#000000\",\"#000000\"]", "holds '#zz0000'; colours are #rrggbb")]
    [InlineData("task", "tracking", "metadata 'task' = 'tracking'")]
    [InlineData("task", "instance", "an instance model without 'instance_decoding' metadata")]
    [InlineData("instance_decoding", "{\"things\":[false,true],\"minSize\":8,\"minSeedSize\":4}", "2 thing flags for 5 classes")]
    [InlineData("instance_decoding", "{\"things\":[false,true,false,true],\"minSize\":0,\"minSeedSize\":4}", "sizes at least 1")]
    [InlineData("instance_decoding", "{\"things\":[false,true,false,true],\"minSize\":8,\"minSeedSize\":4,\"target\":\"flows\"}", "target 'flows': expected boundary or distance")]
    [InlineData("instance_decoding", "{\"things\":[false,true,false,true],\"minSize\":8,\"minSeedSize\":4,\"target\":\"distance\"}", "the distance target's plane after them make 6 output planes, but the graph's output has 5 channels")]
    public void Onnx_metadata_that_disagrees_with_the_graph_or_is_out_of_range_is_refused(string key, string value, string expected)
    {
        using var d = new TempDir();
        File.WriteAllBytes(d["m.onnx"], key == "instance_decoding" ? OnnxWith(("task", "instance"), (key, value)) : OnnxWith((key, value)));
        var e = Assert.Throws<InvalidDataException>(() => new OnnxPredictor(d["m.onnx"]));
        Assert.Contains("m.onnx", e.Message);
        Assert.Contains(expected, e.Message);
        File.WriteAllBytes(d["ok.onnx"], OnnxWith());
        using var ok = new OnnxPredictor(d["ok.onnx"]); // the unedited export opens
        Assert.Equal(5, ok.Info.Classes);
    }

    [Fact]
    public void An_image_whose_prediction_would_not_fit_memory_is_refused_before_allocating_with_the_window_to_use()
    {
        var description = ModelDescription.UNet(classes: 3, baseChannels: 8, depth: 3, seed: 1);
        using var model = new SegmentationModel(description);
        var checkpoint = new Checkpoint
        {
            Model = description, Preprocessing = new Preprocessing(Normalization.ImageNet), TrainerSettings = new TrainerOptions().ToJson(),
            Dataset = new DatasetDescription { Classes = 3, ClassNames = new[] { "a", "b", "c" }, ClassColors = DatasetDescription.Defaults(3).Colors },
            State = new TrainingState(), Weights = Checkpoint.SerializeWeights(model),
        };
        using var whole = new Predictor(checkpoint, new PredictorOptions { Device = "cpu" });
        // The estimate grows with the pixels: 9000x9000 needs 81 times what 1000x1000 does, give or take the logits.
        double small = whole.BytesNeeded(1000, 1000), large = whole.BytesNeeded(9000, 9000);
        Assert.InRange(large / small, 80.0, 82.0);
        var e = Assert.Throws<OptionsException>(() => whole.CheckMemory(9000, 9000, available: (long)(large / 2)));
        Assert.Contains("Predicting a 9000x9000 image needs about", e.Message);
        Assert.Contains("--slide", e.Message);
        // In 512x512 windows only the window's activations and the image's logits are needed: it fits.
        using var windowed = new Predictor(checkpoint, new PredictorOptions { Device = "cpu", Window = new Size2(512, 512) });
        Assert.True(windowed.BytesNeeded(9000, 9000) < large / 4);
        windowed.CheckMemory(9000, 9000, available: (long)(large / 2));
    }

    [Fact]
    public void A_pickle_that_names_a_python_function_is_refused_in_pythons_words_without_running_anything()
    {
        using var d = new TempDir();
        // torch.save({"evil": os.system}) as protocol 2: a dict whose value is the global posix.system.
        var pickle = new byte[] { 0x80, 2, (byte)'}', (byte)'q', 0, (byte)'X', 4, 0, 0, 0 }
            .Concat(Encoding.ASCII.GetBytes("evil")).Concat(new byte[] { (byte)'q', 1 })
            .Concat(Encoding.ASCII.GetBytes("cposix\nsystem\nq\u0002s.")).ToArray();
        using (var zip = ZipFile.Open(d["evil.pth"], ZipArchiveMode.Create))
        {
            using (var s = zip.CreateEntry("archive/data.pkl").Open()) s.Write(pickle);
            using (var s = zip.CreateEntry("archive/version").Open()) s.Write(Encoding.ASCII.GetBytes("3\n"));
        }
        var e = Assert.Throws<SegmentationException>(() => StateDicts.ReadFile(d["evil.pth"]));
        Assert.Contains("entry 'evil' holds the Python object posix.system, not a tensor", e.Message);
        Assert.Contains("nothing in the file was run", e.Message);
        Assert.DoesNotContain("Constructor", e.Message); // no .NET type names
    }

    [Fact]
    public void Errors_name_the_users_file_not_a_hidden_temporary_one_nor_a_native_backtrace()
    {
        using var d = new TempDir();
        Directory.CreateDirectory(d["taken.png"]); // a folder where the file should go: the final rename fails
        var e = Assert.Throws<SegmentationException>(() => MaskWriter.SaveLabels(d["taken.png"], new byte[4], 2, 2)); // written atomically
        Assert.StartsWith(d["taken.png"] + ": cannot write it", e.Message);
        Assert.DoesNotContain(".tmp", e.Message);
        Assert.Empty(Directory.GetFiles(d.Path)); // and the temporary file is gone

        var libtorch = "shape '[3, 4]' is invalid for input of size 10\nException raised from infer_size_impl at "
            + "/pytorch/aten/src/ATen/InferSize.h:76 (most recent call first):\nframe #0: c10::Error::Error(...) + 0x90\nframe #1: ...";
        Assert.Equal("shape '[3, 4]' is invalid for input of size 10", Segmentation.Cli.Cli.WithoutBacktrace(libtorch));
    }

    [Fact]
    public void An_onnx_models_training_size_or_an_image_too_large_for_memory_is_refused_before_allocating()
    {
        using var d = new TempDir();
        File.WriteAllBytes(d["big.onnx"], OnnxWith(("resize", "8000x8000")));
        using var predictor = new OnnxPredictor(d["big.onnx"]);
        // A 32x32 image run at 8000x8000: 64 megapixels of activations, whatever the image.
        double needed = predictor.BytesNeeded(32, 32);
        Assert.True(needed > 64e6 * 256 * 4, $"{needed:E2} bytes");
        var e = Assert.Throws<InvalidDataException>(() => predictor.CheckMemory(32, 32, available: (long)(needed / 2)));
        Assert.Contains("Predicting a 32x32 image (run at the model's 8000x8000) needs at least", e.Message);
        Assert.Contains("--slide", e.Message);
        using var windowed = new OnnxPredictor(d["big.onnx"], new OnnxPredictorOptions { Window = (512, 512) });
        Assert.True(windowed.BytesNeeded(32, 32) < needed / 4); // in windows only the logits are at full size

        // An image over the pixel limit is refused from its header, before decoding (this PNG is tiny on disk).
        using (var img = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.L8>(12000, 9000))
            SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, d["huge.png"]);
        Assert.True(new FileInfo(d["huge.png"]).Length < 1 << 20);
        var huge = Assert.Throws<InvalidDataException>(() => predictor.ReadImage(d["huge.png"]));
        Assert.Contains("12000x9000 = 108,000,000 pixels, over the limit of 100,000,000", huge.Message);
    }
}
