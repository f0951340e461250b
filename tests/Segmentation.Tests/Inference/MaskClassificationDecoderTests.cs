using System.Text.Json;

namespace Segmentation.Tests.Inference;

/// <summary>Mask2Former's instance and panoptic decoding against transformers' post-processing on random logits
/// (<c>tools/fixtures/make_mask2former_decoding.py</c>): the same maps, pixel for pixel, and the same segments.</summary>
public class MaskClassificationDecoderTests
{
    private static IEnumerable<JsonElement> Cases()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Segmentation.sln"))) dir = dir.Parent;
        var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir!.FullName, "tests", "fixtures", "mask2former",
            "decoding.json")));
        return json.RootElement.GetProperty("cases").EnumerateArray().ToList();
    }

    private static float[] Floats(JsonElement c, string name) =>
        c.GetProperty(name).EnumerateArray().Select(v => v.GetSingle()).ToArray();

    private static void Same(JsonElement c, string prefix, MaskClassificationDecoder.Decoded decoded, int index)
    {
        Assert.Equal(c.GetProperty(prefix + "_map").EnumerateArray().Select(v => v.GetInt32()), decoded.Map);
        var expected = c.GetProperty(prefix + "_segments").EnumerateArray().ToList();
        Assert.Equal(expected.Count, decoded.Segments.Count);
        for (int i = 0; i < expected.Count; i++)
        {
            var s = decoded.Segments[i];
            Assert.Equal(expected[i].GetProperty("id").GetInt32(), s.Id);
            Assert.Equal(expected[i].GetProperty("label_id").GetInt32(), s.LabelId);
            Assert.Equal(expected[i].GetProperty("was_fused").GetBoolean(), s.WasFused);
            Assert.True(Math.Abs(expected[i].GetProperty("score").GetSingle() - s.Score) < 2e-5f,
                $"case {index} {prefix} segment {i}: score {s.Score}");
        }
    }

    [Fact]
    public void Instances_and_panoptic_segments_equal_transformers_post_processing()
    {
        int index = 0, instances = 0, segments = 0;
        foreach (var c in Cases())
        {
            int q = c.GetProperty("queries").GetInt32(), h = c.GetProperty("h").GetInt32(),
                w = c.GetProperty("w").GetInt32(), height = c.GetProperty("height").GetInt32(),
                width = c.GetProperty("width").GetInt32();
            var classes = Floats(c, "class_logits");
            var masks = Floats(c, "mask_logits");
            var decodedInstances = MaskClassificationDecoder.Instances(classes, masks, q, h, w, height, width, 0.3f);
            Same(c, "instance", decodedInstances, index);
            var fuse = c.GetProperty("fuse").EnumerateArray().Select(v => v.GetInt32()).ToHashSet();
            var decodedPanoptic = MaskClassificationDecoder.Panoptic(classes, masks, q, h, w, height, width, 0.4f,
                fuse: fuse);
            Same(c, "panoptic", decodedPanoptic, index);
            instances += decodedInstances.Segments.Count;
            segments += decodedPanoptic.Segments.Count;
            index++;
        }
        Assert.Equal(6, index);
        Assert.True(instances > 30 && segments > 8, $"{instances} instances and {segments} panoptic segments");
    }

    [Fact]
    public void Logits_of_the_wrong_size_are_refused_with_the_sizes()
    {
        var e = Assert.Throws<ArgumentException>(() => MaskClassificationDecoder.Panoptic(new float[8], new float[10],
            2, 2, 2, 4, 4));
        Assert.Contains("10 values are not 2 x 2 x 2", e.Message);
    }
}
