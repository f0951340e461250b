using Segmentation.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Tests.Data;

public class DatasetTests
{
    private static Rgb24 Gray(int v) => new((byte)v, (byte)v, (byte)v);

    private static void Pair(TempDir d, string stem, Func<int, int, byte> mask, int w = 8, int h = 6, string imgExt = ".png")
    {
        TempDir.SaveRgb(d[$"images/{stem}{imgExt}"], w, h, (x, y) => new Rgb24((byte)(x * 20), (byte)(y * 30), 77));
        TempDir.SaveGray(d[$"masks/{stem}.png"], w, h, mask);
    }

    [Fact]
    public void Pairs_by_stem_whatever_the_extension_case()
    {
        using var d = new TempDir();
        Pair(d, "a", (x, y) => 0, imgExt: ".PNG");
        Pair(d, "b", (x, y) => 1, imgExt: ".jpg");
        var ds = SegmentationDataset.FromFolder(d.Path);
        Assert.Equal(2, ds.Count);
        Assert.Equal(new[] { "a", "b" }, new[] { ds.NameOf(0), ds.NameOf(1) });
    }

    [Fact]
    public void Unpaired_files_are_an_error_that_lists_them_or_are_skipped_with_a_warning()
    {
        using var d = new TempDir();
        Pair(d, "a", (x, y) => 0);
        TempDir.SaveRgb(d["images/lonely.png"], 4, 4, (x, y) => Gray(1));
        TempDir.SaveGray(d["masks/orphan.png"], 4, 4, (x, y) => 0);
        var e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d.Path));
        Assert.Contains("lonely.png", e.Message);
        Assert.Contains("orphan.png", e.Message);
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { SkipUnpaired = true });
        Assert.Equal(1, ds.Count);
        Assert.Equal(2, ds.Warnings.Count);
    }

    [Fact]
    public void Binary_0_255_masks_are_detected_and_read_as_0_1()
    {
        using var d = new TempDir();
        Pair(d, "a", (x, y) => x < 4 ? (byte)0 : (byte)255);
        var ds = SegmentationDataset.FromFolder(d.Path);
        Assert.Equal(MaskEncoding.Binary, ds.Description.Encoding);
        Assert.Equal(2, ds.Description.Classes);
        Assert.Contains("binary 0/255", ds.DetectionReport);
        var m = ds.Load(0).Mask;
        Assert.Equal(0, m[0]);
        Assert.Equal(1, m[7]);
    }

    [Fact]
    public void Binary_masks_with_other_values_are_an_error_naming_the_value()
    {
        using var d = new TempDir();
        Pair(d, "a", (x, y) => x == 0 && y == 0 ? (byte)128 : (byte)255);
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Encoding = MaskEncoding.Binary, IgnoreIndex = 254 });
        var e = Assert.Throws<DataException>(() => ds.Load(0));
        Assert.Contains("label 128 at 1 pixels", e.Message);
        Assert.Contains("a.png", e.Message);
    }

    [Fact]
    public void CamVid_like_index_masks_with_a_void_label()
    {
        using var d = new TempDir();
        Pair(d, "a", (x, y) => (byte)(x == 7 ? 11 : x % 11));
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { IgnoreIndex = 11 });
        Assert.Equal(MaskEncoding.Index, ds.Description.Encoding);
        Assert.Equal(7, ds.Description.Classes); // labels 0..6 seen, 11 is void
        var ds11 = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { IgnoreIndex = 11, Classes = 11 });
        var m = ds11.Load(0).Mask;
        Assert.Equal(Labels.Ignore, m[7]); // void becomes the internal ignore label
        Assert.Equal(3, m[3]);
    }

    [Fact]
    public void A_label_outside_the_classes_names_the_file_value_and_pixel_count()
    {
        using var d = new TempDir();
        Pair(d, "0007", (x, y) => (byte)(y == 0 && x < 3 ? 37 : 1));
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Encoding = MaskEncoding.Index, Classes = 12 });
        var e = Assert.Throws<DataException>(() => ds.Load(0));
        Assert.Contains("0007.png: label 37 at 3 pixels", e.Message);
        Assert.Contains("12 classes (0-11) and ignore index 255", e.Message);
    }

    [Fact]
    public void Rgb_palette_masks_map_colours_to_classes_and_void_to_ignore()
    {
        using var d = new TempDir();
        File.WriteAllText(d["classes.csv"], "index,name,r,g,b\n0,Sky,128,128,128\n1,Road,128,64,128\n2,Void,0,0,0\n");
        TempDir.SaveRgb(d["images/a.png"], 6, 2, (x, y) => Gray(x * 10));
        TempDir.SaveRgb(d["masks/a.png"], 6, 2, (x, y) => x < 2 ? Gray(128) : x < 4 ? new Rgb24(128, 64, 128) : new Rgb24(0, 0, 0));
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { PaletteFile = d["classes.csv"], IgnoreIndex = 2 });
        Assert.Equal(MaskEncoding.Palette, ds.Description.Encoding);
        Assert.Equal(new[] { "Sky", "Road" }, ds.Description.ClassNames);
        Assert.Equal(new byte[] { 0, 0, 1, 1, 255, 255 }, ds.Load(0).Mask[..6]);
    }

    [Fact]
    public void A_csv_palette_is_read_as_RFC_4180_quoted_names_with_commas_and_quotes()
    {
        using var d = new TempDir();
        File.WriteAllText(d["classes.csv"], "index,name,r,g,b\n# a comment line\n0,\"Sky, clear\",128,128,128\n1,\"Road \"\"A\"\"\",128,64,128\n");
        TempDir.SaveRgb(d["images/a.png"], 4, 2, (x, y) => Gray(x * 10));
        TempDir.SaveRgb(d["masks/a.png"], 4, 2, (x, y) => x < 2 ? Gray(128) : new Rgb24(128, 64, 128));
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { PaletteFile = d["classes.csv"] });
        Assert.Equal(new[] { "Sky, clear", "Road \"A\"" }, ds.Description.ClassNames);
        File.WriteAllText(d["bad.csv"], "index,name,r,g,b\n0,\"Sky,128,128,128\n");
        var e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d.Path, new DatasetOptions { PaletteFile = d["bad.csv"] }));
        Assert.Contains("bad.csv: line 2 is not valid CSV", e.Message);
    }

    [Fact]
    public void Label_detection_reads_every_mask_so_labels_that_alternate_by_file_are_all_found()
    {
        // 0/1 masks whose class 1 appears only in every other file: a sample of every other file (what 2,000 masks
        // got) saw class 0 alone.
        using var d = new TempDir();
        for (int i = 0; i < 2000; i++) Pair(d, $"{i:D4}", (x, y) => (byte)(i % 2 == 1 && x < 4 ? 1 : 0), w: 8, h: 2);
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Encoding = MaskEncoding.Index });
        Assert.Equal(2, ds.Description.Classes);
    }

    [Fact]
    public void Rgb_masks_without_a_palette_ask_for_one()
    {
        using var d = new TempDir();
        TempDir.SaveRgb(d["images/a.png"], 4, 4, (x, y) => Gray(1));
        TempDir.SaveRgb(d["masks/a.png"], 4, 4, (x, y) => x < 2 ? new Rgb24(200, 10, 10) : new Rgb24(0, 0, 0));
        var e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d.Path));
        Assert.Contains("--palette classes.csv", e.Message);
        Assert.Contains("Colours found: #000000, #c80a0a.", e.Message); // what the palette has to map
    }

    [Fact]
    public void A_mask_named_after_its_image_with_a_mask_suffix_pairs_with_it()
    {
        using var d = new TempDir();
        TempDir.SaveRgb(d["images/car1.jpg"], 4, 2, (x, y) => Gray(x * 10));
        TempDir.SaveGray(d["masks/car1_mask.png"], 4, 2, (x, y) => (byte)(x < 2 ? 0 : 1));
        TempDir.SaveRgb(d["images/car2.jpg"], 4, 2, (x, y) => Gray(x * 20));
        TempDir.SaveGray(d["masks/car2.png"], 4, 2, (x, y) => (byte)(x < 2 ? 1 : 0));
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Encoding = MaskEncoding.Index, Classes = 2 });
        Assert.Equal(2, ds.Count);
        Assert.Equal(new byte[] { 0, 0, 1, 1 }, ds.Load(0).Mask[..4]);

        File.Delete(d["masks/car2.png"]);
        var e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Encoding = MaskEncoding.Index, Classes = 2 }));
        Assert.Contains("--skip-unpaired", e.Message); // the flag, by name
        Assert.Contains("_mask", e.Message);
    }

    [Fact]
    public void Unknown_palette_colour_is_an_error_naming_it()
    {
        using var d = new TempDir();
        File.WriteAllText(d["p.json"], """[{"name":"bg","color":"#000000"},{"name":"fg","color":[255,0,0]}]""");
        TempDir.SaveRgb(d["images/a.png"], 4, 4, (x, y) => Gray(1));
        TempDir.SaveRgb(d["masks/a.png"], 4, 4, (x, y) => x == 0 ? new Rgb24(0, 255, 0) : new Rgb24(255, 0, 0));
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { PaletteFile = d["p.json"] });
        var e = Assert.Throws<DataException>(() => ds.Load(0));
        Assert.Contains("colour #00ff00 at 4 pixels", e.Message);
    }

    [Fact]
    public void Indexed_png_masks_are_read_as_their_palette_indices()
    {
        using var d = new TempDir();
        // Palette colours chosen so that colour order differs from index order.
        var palette = new[] { new Rgb24(250, 0, 0), new Rgb24(0, 0, 10), new Rgb24(0, 200, 0) };
        TempDir.SaveRgb(d["images/a.png"], 7, 3, (x, y) => Gray(x));
        TempDir.SaveIndexed(d["masks/a.png"], 7, 3, (x, y) => (byte)(x % 3), palette);
        var ds = SegmentationDataset.FromFolder(d.Path);
        Assert.Equal(MaskEncoding.IndexedPng, ds.Description.Encoding);
        Assert.Equal(3, ds.Description.Classes);
        var m = ds.Load(0).Mask;
        for (int x = 0; x < 7; x++) Assert.Equal(x % 3, m[2 * 7 + x]);
    }

    [Fact]
    public void Sixteen_bit_gray_and_rgba_images_are_converted_to_the_requested_channels()
    {
        using var d = new TempDir();
        Directory.CreateDirectory(d["images"]);
        using (var img = new Image<L16>(4, 4)) { img[1, 0] = new L16(65535); img.Save(d["images/g16.png"]); }
        using (var img = new Image<Rgba32>(4, 4)) { img[1, 0] = new Rgba32(10, 20, 30, 0); img.Save(d["images/rgba.png"]); }
        TempDir.SaveGray(d["masks/g16.png"], 4, 4, (x, y) => 0);
        TempDir.SaveGray(d["masks/rgba.png"], 4, 4, (x, y) => 1);
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { InChannels = 3 });
        var gray16 = ds.Load(0).Image; // g16 sorts first
        Assert.Equal(3, gray16.Channels);
        Assert.Equal(new ushort[] { 65535, 65535, 65535 }, gray16.Pixels16![3..6]); // replicated, at full depth
        var rgba = ds.Load(1).Image;
        Assert.Equal(new byte[] { 10, 20, 30 }, rgba.Pixels[3..6]); // alpha dropped
        var ds1 = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { InChannels = 1 });
        Assert.Equal(1, ds1.Load(0).Image.Channels);
    }

    [Fact]
    public void Size_mismatch_names_both_files_and_sizes()
    {
        using var d = new TempDir();
        TempDir.SaveRgb(d["images/a.png"], 8, 6, (x, y) => Gray(1));
        TempDir.SaveGray(d["masks/a.png"], 6, 8, (x, y) => 1);
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Classes = 2 });
        var e = Assert.Throws<DataException>(() => ds.Load(0));
        Assert.Contains("6x8", e.Message);
        Assert.Contains("8x6", e.Message);
        Assert.Contains("images", e.Message);
    }

    [Theory]
    [InlineData("empty")]
    [InlineData("truncated")]
    [InlineData("text")]
    public void Corrupt_truncated_empty_or_non_image_files_are_a_data_error_naming_the_file(string kind)
    {
        using var d = new TempDir();
        Pair(d, "ok", (x, y) => 1);
        Pair(d, "bad", (x, y) => 1);
        var bad = d["images/bad.png"];
        var bytes = File.ReadAllBytes(bad);
        File.WriteAllBytes(bad, kind switch
        {
            "empty" => Array.Empty<byte>(),
            "truncated" => bytes[..(bytes.Length / 2)],
            _ => "this is not an image"u8.ToArray(),
        });
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Classes = 2, InChannels = 3 });
        var e = Assert.Throws<DataException>(() => ds.Load(0)); // "bad" sorts first
        Assert.Contains("bad.png", e.Message);
    }

    [Fact]
    public void A_decompression_bomb_is_refused_from_its_header()
    {
        using var d = new TempDir();
        Pair(d, "a", (x, y) => 1);
        // A valid PNG header that declares 100000 x 100000 pixels, with almost no data behind it.
        var bomb = d["images/a.png"];
        var png = File.ReadAllBytes(bomb);
        png[16] = 0x00; png[17] = 0x01; png[18] = 0x86; png[19] = 0xA0;   // width 100000
        png[20] = 0x00; png[21] = 0x01; png[22] = 0x86; png[23] = 0xA0;   // height 100000
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(png.AsSpan(29), TempDir.Crc32(png.AsSpan(12, 17)));
        File.WriteAllBytes(bomb, png);
        var ds = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Classes = 2, InChannels = 3 });
        var before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<DataException>(() => ds.Load(0));
        Assert.Contains("100000x100000", e.Message);
        Assert.Contains("limit", e.Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 50_000_000, "the refusal allocated a pixel buffer");
    }

    [Fact]
    public void An_empty_folder_is_a_clear_error()
    {
        using var d = new TempDir();
        d.Sub("images"); d.Sub("masks");
        var e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d.Path));
        Assert.Contains("no image–mask pairs", e.Message);
    }

    [Fact]
    public void Split_is_seeded_and_disjoint()
    {
        var ds = SegmentationDataset.Shapes(new ShapesOptions { Count = 20, Size = 16 });
        var (a, b) = ds.Split(0.8, seed: 3);
        var (a2, _) = ds.Split(0.8, seed: 3);
        Assert.Equal(16, a.Count);
        Assert.Equal(4, b.Count);
        var names = Enumerable.Range(0, a.Count).Select(a.NameOf).ToList();
        Assert.Equal(names, Enumerable.Range(0, a2.Count).Select(a2.NameOf));
        Assert.Empty(names.Intersect(Enumerable.Range(0, b.Count).Select(b.NameOf)));
    }

    [Fact]
    public void Shapes_are_deterministic_for_a_seed_and_hold_every_class()
    {
        var a = SegmentationDataset.Shapes(new ShapesOptions { Count = 30, Size = 64, Seed = 5 });
        var b = SegmentationDataset.Shapes(new ShapesOptions { Count = 30, Size = 64, Seed = 5 });
        var c = SegmentationDataset.Shapes(new ShapesOptions { Count = 30, Size = 64, Seed = 6 });
        Assert.Equal(a.Load(3).Image.Pixels, b.Load(3).Image.Pixels);
        Assert.Equal(a.Load(3).Mask, b.Load(3).Mask);
        Assert.NotEqual(a.Load(3).Image.Pixels, c.Load(3).Image.Pixels);
        var stats = a.ComputeClassStatistics();
        Assert.All(stats.ClassPixels, p => Assert.True(p > 0));
    }

    [Fact]
    public void Split_folders_share_one_description()
    {
        using var d = new TempDir();
        TempDir.SaveRgb(d["train/images/a.png"], 4, 4, (x, y) => Gray(1));
        TempDir.SaveGray(d["train/masks/a.png"], 4, 4, (x, y) => (byte)(x % 2));
        TempDir.SaveRgb(d["val/images/b.png"], 4, 4, (x, y) => Gray(1));
        TempDir.SaveGray(d["val/masks/b.png"], 4, 4, (x, y) => 2);
        var (train, val) = SegmentationDataset.FromSplitFolders(d.Path);
        Assert.Equal(3, train.Description.Classes);
        Assert.Same(train.Description, val.Description);
    }
}
