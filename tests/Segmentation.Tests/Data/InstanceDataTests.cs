using Segmentation.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Tests.Data;

/// <summary>Instance data: object numbers read from 16-bit masks and from the Data Science Bowl layout, refused when
/// ambiguous, moved with the image by every transform, and turned into interior / boundary targets.</summary>
public class InstanceDataTests
{
    private static readonly DatasetOptions Instances = new() { Task = SegmentationTaskKind.Instance };

    /// <summary>Writes the built-in instance shapes twice: as images/ + masks/ of 16-bit object numbers, and in the
    /// Data Science Bowl layout (one binary PNG per object, named in object order).</summary>
    private static List<Sample> WriteBothLayouts(TempDir d, int count)
    {
        var shapes = SegmentationDataset.Shapes(new ShapesOptions { Count = count, Size = 48, Instances = true,
            Seed = 3 });
        var samples = Enumerable.Range(0, count).Select(shapes.Load).ToList();
        foreach (var s in samples)
        {
            SaveRgb(s.Image, d[$"ids/images/{s.Name}.png"]);
            using (var ids = Image.LoadPixelData(s.Instances!.Select(v => new L16(v)).ToArray(), s.Width, s.Height))
                ids.Save(d[$"ids/masks/{s.Name}.png"]);
            SaveRgb(s.Image, d[$"dsb/{s.Name}/images/{s.Name}.png"]);
            Directory.CreateDirectory(d[$"dsb/{s.Name}/masks"]);
            for (int id = 1; id <= s.Instances!.Max(); id++)
            {
                if (!s.Instances.Contains((ushort)id)) continue; // covered by later objects
                using var one = Image.LoadPixelData(s.Instances!.Select(v => new L8(v == id ? (byte)255 : (byte)0))
                    .ToArray(), s.Width, s.Height);
                one.Save(d[$"dsb/{s.Name}/masks/object-{id:D3}.png"]);
            }
        }
        return samples;
    }

    private static void SaveRgb(ImageBuffer image, string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var img = Image.LoadPixelData<Rgb24>(image.Pixels, image.Width, image.Height);
        img.Save(path);
    }

    private static ushort[] Renumbered(ushort[] ids)
    {
        var map = new Dictionary<ushort, ushort> { [0] = 0 };
        foreach (var v in ids.Distinct().Where(v => v != 0).Order()) map[v] = (ushort)map.Count;
        return Array.ConvertAll(ids, v => map[v]);
    }

    [Fact]
    public void The_Data_Science_Bowl_layout_and_16_bit_masks_read_the_same_data_set()
    {
        using var d = new TempDir();
        Directory.CreateDirectory(d["ids/masks"]);
        var written = WriteBothLayouts(d, 6);
        var fromIds = SegmentationDataset.FromFolder(d["ids"], Instances);
        var fromFiles = SegmentationDataset.FromFolder(d["dsb"], Instances);
        Assert.Contains("Data Science Bowl layout", fromFiles.DetectionReport);
        Assert.Equal(SegmentationTaskKind.Instance, fromIds.Description.Task);
        Assert.Equal(new[] { "background", "object", "boundary" }, fromIds.Description.ClassNames);
        Assert.Equal(6, fromFiles.Count);
        for (int i = 0; i < 6; i++)
        {
            var a = fromIds.Load(i);
            var b = fromFiles.Load(i);
            Assert.Equal(a.Name, b.Name);
            Assert.Equal(written[i].Instances, a.Instances);
            Assert.Equal(Renumbered(a.Instances!), b.Instances); // per-object files are numbered 1..N
            Assert.Equal(a.Image.Pixels, b.Image.Pixels);
            Assert.Equal(Array.ConvertAll(a.Instances!, v => v == 0 ? (byte)0 : (byte)1), a.Mask);
        }
        fromFiles.Validate();
    }

    [SharedDataFact("dsb2018/raw-sample")]
    public void The_shared_raw_sample_reads_as_the_shared_16_bit_masks()
    {
        var root = SharedDataFactAttribute.Find("dsb2018")!;
        var raw = SegmentationDataset.FromFolder(Path.Combine(root, "raw-sample"), Instances);
        var ids = SegmentationDataset.FromFolder(Path.Combine(root, "train"), Instances with { InChannels = 3 });
        Assert.Equal(5, raw.Count);
        var byName = Enumerable.Range(0, ids.Count).ToDictionary(ids.NameOf);
        for (int i = 0; i < raw.Count; i++)
        {
            var a = raw.Load(i);
            var b = ids.Load(byName[a.Name]);
            Assert.Equal(b.Instances, a.Instances);
            Assert.True(a.Instances!.Max() > 10);
        }
    }

    [Fact]
    public void Ambiguous_instance_masks_are_refused_with_what_to_do()
    {
        using var d = new TempDir();
        var image = new ImageBuffer(8, 8, 3);
        SaveRgb(image, d["a/images/x.png"]);
        Directory.CreateDirectory(d["a/masks"]);
        using (var m = new Image<L8>(8, 8)) { m[1, 1] = new L8(255); m[2, 2] = new L8(7); m.Save(d["a/masks/x.png"]); }
        var e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d["a"], Instances).Load(0));
        Assert.Contains("x.png", e.Message);
        Assert.Contains("255", e.Message);
        Assert.Contains("16-bit", e.Message);

        // 16-bit: 255 is an object number like any other
        using (var m = new Image<L16>(8, 8)) { m[1, 1] = new L16(255); m[2, 2] = new L16(300); m.Save(d["a/masks/x.png"]); }
        Assert.Equal(new ushort[] { 0, 255, 300 }, SegmentationDataset.FromFolder(d["a"], Instances).Load(0).Instances!
            .Distinct().Order());

        using (var m = new Image<Rgb24>(8, 8)) { m[1, 1] = new Rgb24(200, 10, 10); m.Save(d["a/masks/x.png"]); }
        e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d["a"], Instances).Load(0));
        Assert.Contains("colour mask", e.Message);

        // per-object files that claim the same pixels
        SaveRgb(image, d["dsb/x/images/x.png"]);
        Directory.CreateDirectory(d["dsb/x/masks"]);
        foreach (var (name, x0) in new[] { ("a.png", 0), ("b.png", 3) })
        {
            using var m = new Image<L8>(8, 8);
            for (int y = 0; y < 4; y++) for (int x = x0; x < x0 + 4; x++) m[x, y] = new L8(255);
            m.Save(d[$"dsb/x/masks/{name}"]);
        }
        e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d["dsb"], Instances).Load(0));
        Assert.Contains("overlap on 4 pixel(s)", e.Message);
        Assert.Contains("a.png and b.png", e.Message);
    }

    [Fact]
    public void Panoptic_folders_read_class_masks_beside_object_numbers_and_find_the_thing_classes()
    {
        using var d = new TempDir();
        var shapes = SegmentationDataset.Shapes(new ShapesOptions { Count = 4, Size = 48, Panoptic = true, Seed = 5 });
        foreach (var sub in new[] { "images", "masks", "classes" }) Directory.CreateDirectory(d["p/" + sub]);
        for (int i = 0; i < shapes.Count; i++)
        {
            var s = shapes.Load(i);
            SaveRgb(s.Image, d[$"p/images/{s.Name}.png"]);
            using (var ids = Image.LoadPixelData(s.Instances!.Select(v => new L16(v)).ToArray(), s.Width, s.Height))
                ids.Save(d[$"p/masks/{s.Name}.png"]);
            var classes = (byte[])s.Mask.Clone();
            if (i == 0) classes[0] = 1; // a round pixel of no object: void
            using (var c = Image.LoadPixelData(classes.Select(v => new L8(v)).ToArray(), s.Width, s.Height))
                c.Save(d[$"p/classes/{s.Name}.png"]);
        }
        var data = SegmentationDataset.FromFolder(d["p"], new DatasetOptions { Task = SegmentationTaskKind.Panoptic });
        Assert.Equal(SegmentationTaskKind.Panoptic, data.Description.Task);
        Assert.Equal(new[] { false, true, true }, data.Description.Instances!.Things);
        Assert.Equal(4, data.Description.Classes); // the class masks' three, and the boundary
        Assert.Contains("things class 1, class 2", data.DetectionReport);
        var first = data.Load(0);
        Assert.Equal(Labels.Ignore, first.Mask[0]);
        Assert.Equal(shapes.Load(1).Mask, data.Load(1).Mask);
        Assert.Equal(shapes.Load(1).Instances, data.Load(1).Instances);

        // an object on a stuff class is refused, naming both files
        var s1 = shapes.Load(1);
        var bad = (byte[])s1.Mask.Clone();
        int onObject = Array.FindIndex(s1.Instances!, v => v != 0);
        bad[onObject] = 0;
        using (var c = Image.LoadPixelData(bad.Select(v => new L8(v)).ToArray(), s1.Width, s1.Height))
            c.Save(d[$"p/classes/{s1.Name}.png"]);
        var e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d["p"], new DatasetOptions
            { Task = SegmentationTaskKind.Panoptic, ThingClasses = new[] { 1, 2 } }).Load(1));
        Assert.Contains("stuff class", e.Message);
        Assert.Contains(s1.Name, e.Message);
    }

    /// <summary>Issue 33, class 7: one stray object on the background class made it a thing class, turning every
    /// background pixel void, silently. One object in one image is refused; more, with most of the class's pixels
    /// voided, is a loud warning.</summary>
    [Fact]
    public void A_thing_class_found_from_one_stray_object_is_refused_and_a_mostly_voided_one_is_warned_of()
    {
        using var d = new TempDir();
        var shapes = SegmentationDataset.Shapes(new ShapesOptions { Count = 4, Size = 48, Panoptic = true, Seed = 5 });
        foreach (var sub in new[] { "images", "masks", "classes" }) Directory.CreateDirectory(d["p/" + sub]);
        void Write(int strays)
        {
            for (int i = 0; i < shapes.Count; i++)
            {
                var s = shapes.Load(i);
                SaveRgb(s.Image, d[$"p/images/{s.Name}.png"]);
                using (var ids = Image.LoadPixelData(s.Instances!.Select(v => new L16(v)).ToArray(), s.Width,
                    s.Height)) ids.Save(d[$"p/masks/{s.Name}.png"]);
                var classes = (byte[])s.Mask.Clone();
                // a stray object: the class masks put one object of this image on class 0, the background
                if (i < strays)
                {
                    int id = s.Instances!.First(v => v != 0);
                    for (int k = 0; k < classes.Length; k++) if (s.Instances![k] == id) classes[k] = 0;
                }
                using var c = Image.LoadPixelData(classes.Select(v => new L8(v)).ToArray(), s.Width, s.Height);
                c.Save(d[$"p/classes/{s.Name}.png"]);
            }
        }
        Write(strays: 1);
        var e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d["p"], new DatasetOptions
            { Task = SegmentationTaskKind.Panoptic }));
        Assert.Contains("class 0", e.Message);
        Assert.Contains("one object", e.Message);
        Assert.Contains(shapes.Load(0).Name, e.Message);
        Assert.Contains("--things", e.Message);
        // said outright, the thing classes are taken as given
        var given = SegmentationDataset.FromFolder(d["p"], new DatasetOptions { Task = SegmentationTaskKind.Panoptic,
            ThingClasses = new[] { 1, 2 } });
        Assert.False(given.Description.Instances!.Things[0]);

        Write(strays: 2);
        var warned = SegmentationDataset.FromFolder(d["p"], new DatasetOptions { Task = SegmentationTaskKind.Panoptic });
        Assert.True(warned.Description.Instances!.Things[0]);
        Assert.Contains(warned.Warnings, w => w.Contains("class 0") && w.Contains("become void"));
    }

    [Fact]
    public void Transforms_move_object_numbers_with_the_mask()
    {
        var shapes = SegmentationDataset.Shapes(new ShapesOptions { Count = 8, Size = 64, Instances = true });
        var pipeline = Compose.TrainPreset(48, 48, 0.5, 2.0, 0.75, verticalFlip: true);
        var extra = new Compose(new RandomRotate90(), new RandomRotation(20, 1), new ElasticDeformation(34, 4, 1),
            new ColorJitter(0.2, 0.2, 0.2, 0.02, probability: 1));
        for (int i = 0; i < 8; i++)
        {
            var s = extra.Apply(pipeline.Apply(shapes.Load(i), new Random(i), Labels.Ignore), new Random(i + 50),
                Labels.Ignore);
            Assert.NotNull(s.Instances);
            for (int p = 0; p < s.Mask.Length; p++)
                Assert.True(s.Mask[p] == Labels.Ignore ? s.Instances![p] == 0 : s.Mask[p] == (s.Instances![p] == 0 ? 0
                    : 1), $"sample {i} pixel {p}: mask {s.Mask[p]}, object {s.Instances![p]}");
        }
        var flipped = new HorizontalFlip(1).Apply(shapes.Load(0), new Random(0), Labels.Ignore);
        var original = shapes.Load(0);
        Assert.Equal(original.Instances![5 * 64 + 3], flipped.Instances![5 * 64 + 60]);
    }

    [Fact]
    public void The_boundary_target_marks_object_pixels_near_another_object_or_the_background()
    {
        // one row: object 1 of five pixels, a gap, object 2 running off the image's edge
        var ids = new ushort[] { 0, 1, 1, 1, 1, 1, 0, 2, 2, 2 };
        var mask = Array.ConvertAll(ids, v => v == 0 ? (byte)0 : (byte)1);
        Assert.Equal(new byte[] { 0, 2, 1, 1, 1, 2, 0, 2, 1, 1 }, InstanceTargets.Make(mask, ids, 1, 1, 10, 1, 2));
        Assert.Equal(new byte[] { 0, 2, 2, 1, 2, 2, 0, 2, 2, 1 }, InstanceTargets.Make(mask, ids, 1, 1, 10, 2, 2));
        // touching objects: both sides of the contact are boundary; ignored pixels stay ignored
        var touching = new ushort[] { 1, 1, 1, 2, 2, 2 };
        var ignored = new byte[] { 1, 1, 1, 1, 1, Labels.Ignore };
        Assert.Equal(new byte[] { 1, 1, 2, 2, 1, Labels.Ignore }, InstanceTargets.Make(ignored, touching, 1, 1, 6, 1,
            2));
    }

    [Fact]
    public void Class_statistics_of_instance_data_count_the_boundary_class_so_no_class_weight_is_zero()
    {
        var shapes = SegmentationDataset.Shapes(new ShapesOptions { Count = 12, Size = 48, Instances = true });
        var stats = shapes.ComputeClassStatistics();
        Assert.All(stats.ClassPixels, p => Assert.True(p > 0));
        long boundary = 0;
        for (int i = 0; i < shapes.Count; i++)
        {
            var s = shapes.Load(i);
            boundary += InstanceTargets.Make(s.Mask, s.Instances!, 1, 48, 48, 2, 2).Count(v => v == 2);
        }
        Assert.Equal(boundary, stats.ClassPixels[2]);
        Assert.All(Segmentation.Training.ClassWeights.MedianFrequency(stats.ClassPixels, stats.PixelsOfImagesWithClass),
            w => Assert.True(w > 0));
    }

    [Fact]
    public void Instance_shapes_have_touching_objects_and_reopen_from_their_origin()
    {
        var shapes = SegmentationDataset.Shapes(new ShapesOptions { Count = 40, Size = 64, Instances = true });
        int touching = 0;
        for (int i = 0; i < shapes.Count; i++)
        {
            var ids = shapes.Load(i).Instances!;
            for (int p = 0; p + 1 < ids.Length; p++)
                if (ids[p] != 0 && ids[p + 1] != 0 && ids[p] != ids[p + 1]) { touching++; break; }
        }
        Assert.True(touching >= 10, $"{touching} of 40 images have touching objects");
        var again = SegmentationDataset.FromOrigin(shapes.Origin);
        Assert.Equal(shapes.Load(3).Instances, again.Load(3).Instances);
        Assert.Equal(SegmentationTaskKind.Instance, again.Description.Task);
    }
}

/// <summary>A test that needs a data set from the shared folder (<c>../shared/datasets</c> beside the repository);
/// skipped when it is absent.</summary>
public sealed class SharedDataFactAttribute : FactAttribute
{
    public SharedDataFactAttribute(string dataset)
    {
        if (Find(dataset) is null) Skip = $"../shared/datasets/{dataset} is not on this machine";
    }

    /// <summary>The shared data set's folder, found from the test's folder upwards; null when absent.</summary>
    public static string? Find(string dataset)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "datasets", dataset);
            if (Directory.Exists(candidate)) return candidate;
        }
        return null;
    }
}
