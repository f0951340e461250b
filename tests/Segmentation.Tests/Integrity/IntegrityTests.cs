using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using Segmentation.Training;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.PixelFormats;

namespace Segmentation.Tests.Integrity;

/// <summary>Nothing the user gave is silently misread, and nothing the user had is lost (issue: integrity).</summary>
public class IntegrityTests
{
    private static readonly ModelDescription Tiny = ModelDescription.UNet(classes: 4, baseChannels: 8, depth: 2, seed: 4);

    private static (SegmentationDataset, SegmentationDataset) Shapes()
        => SegmentationDataset.Shapes(new ShapesOptions { Count = 16, Size = 16, Seed = 3, MaxShapes = 2 }).Split(0.75, seed: 0);

    private static TrainerOptions Options(string dir, int epochs) => new()
    {
        Epochs = epochs, BatchSize = 4, Seed = 1, Workers = 1, Device = "cpu", ManageProcessMemory = false,
        Optimizer = new() { LearningRate = 3e-3 }, Checkpoints = new() { Directory = dir },
    };

    /// <summary>Every (epoch, boundary) at which a kill can fall between checkpoint writes.</summary>
    public static IEnumerable<object[]> Boundaries()
    {
        foreach (int epoch in new[] { 1, 2, 3 })
            foreach (var b in new[] { "previous best set aside", "best written", "last written" })
                yield return new object[] { epoch, b };
    }

    [Theory]
    [MemberData(nameof(Boundaries))]
    public void An_interruption_at_any_checkpoint_write_leaves_a_run_that_resume_makes_consistent(int epoch, string boundary)
    {
        using var dir = new TempDir();
        var (train, val) = Shapes();
        using (var model = new SegmentationModel(Tiny))
        using (var t = new Trainer(model, Options(dir.Path, 4)))
        {
            // The kill: the write sequence stops dead at this boundary (an exception the trainer does not catch).
            int finished = 0;
            t.CheckpointBoundary = b =>
            {
                if (b == boundary && finished + 1 == epoch) throw new SimulatedKill();
                if (b == "last written") finished++;
            };
            bool killed = false;
            try { t.Fit(train, val); } catch (SimulatedKill) { killed = true; }
            if (!killed) return; // this epoch did not improve, so there was no best write to interrupt
        }
        var run = new RunRecorder(dir.Path);
        if (!File.Exists(run.Last)) return; // killed before the first last.ckpt: nothing to resume, nothing claimed

        // Before any repair, the files are never behind what last.ckpt records: best.ckpt holds its best epoch or a later one.
        var recorded = Checkpoint.Load(run.Last).State;
        if (recorded.BestEpoch > 0) Assert.True(Checkpoint.Load(run.Best).State.Epoch >= recorded.BestEpoch, "best.ckpt is older than the best epoch last.ckpt records");

        // Whatever the boundary, after Repair best.ckpt holds the epoch last.ckpt records as best.
        run.Repair();
        var last = Checkpoint.Load(run.Last);
        var best = Checkpoint.Load(run.Best);
        Assert.Equal(last.State.BestEpoch, best.State.Epoch);
        Assert.Equal(last.State.BestMeanIoU, best.Metrics!.MeanIoU);
        Assert.False(File.Exists(run.PreviousBest));
        Assert.Empty(Directory.EnumerateFiles(dir.Path, ".*.tmp"));

        // And the run resumes to the end, with best.ckpt equal to what the result reports.
        using var resumed = last.CreateModel();
        using var t2 = new Trainer(resumed, Options(dir.Path, 4));
        var r = t2.Fit(train, val, resumeFrom: last);
        Assert.Equal(4, r.Epochs);
        var finalBest = Checkpoint.Load(run.Best);
        Assert.Equal(r.BestEpoch, finalBest.State.Epoch);
        Assert.Equal(r.Metrics!.MeanIoU, finalBest.Metrics!.MeanIoU);
        Assert.Equal(r.BestEpoch, Checkpoint.Load(run.Last).State.BestEpoch);
    }

    private sealed class SimulatedKill : Exception { }

    [Fact]
    public void Repair_restores_the_best_checkpoint_from_last_when_the_best_write_never_happened()
    {
        using var dir = new TempDir();
        var (train, val) = Shapes();
        using (var model = new SegmentationModel(Tiny))
        using (var t = new Trainer(model, Options(dir.Path, 1))) t.Fit(train, val);
        var run = new RunRecorder(dir.Path);
        File.Delete(run.Best); // a disk that filled up, or a copy that lost it
        var done = run.Repair();
        Assert.Contains(done, l => l.Contains("from last.ckpt"));
        Assert.Equal(1, Checkpoint.Load(run.Best).State.Epoch);
    }

    [Fact]
    public void Temporary_files_of_interrupted_saves_are_swept_when_the_run_folder_is_opened()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir[".last.ckpt.0123456789abcdef.tmp"], new byte[1000]);
        var (train, val) = Shapes();
        using var model = new SegmentationModel(Tiny);
        using var t = new Trainer(model, Options(dir.Path, 1));
        var messages = new List<string>();
        t.Fit(train, val, new SynchronousProgress<TrainingProgress>(p => { if (p.Kind == ProgressKind.Message) messages.Add(p.Message!); }));
        Assert.False(File.Exists(dir[".last.ckpt.0123456789abcdef.tmp"]));
        Assert.Contains(messages, m => m.Contains(".last.ckpt.0123456789abcdef.tmp"));
    }

    [Fact]
    public void Cancelling_stops_between_steps_and_the_files_hold_the_last_finished_epoch()
    {
        using var dir = new TempDir();
        var (train, val) = Shapes();
        using var model = new SegmentationModel(Tiny);
        using var t = new Trainer(model, Options(dir.Path, 5));
        using var cts = new CancellationTokenSource();
        var r = t.Fit(train, val, new SynchronousProgress<TrainingProgress>(p => { if (p.Kind == ProgressKind.Step && p.Epoch == 2 && p.Step == 1) cts.Cancel(); }), cancellation: cts.Token);
        Assert.Equal("interrupted", r.StopReason);
        Assert.Equal(1, r.Epochs);
        Assert.Equal(1, Checkpoint.Load(dir["last.ckpt"]).State.Epoch);
    }

    // ---- masks ----

    private static void Pair(TempDir d, string name, int size, Func<int, int, byte> mask)
    {
        TempDir.SaveRgb(d[$"images/{name}.png"], size, size, (x, y) => new Rgb24((byte)(x * 9), (byte)(y * 9), 40));
        TempDir.SaveGray(d[$"masks/{name}.png"], size, size, mask);
    }

    [Fact]
    public void Mixed_0_1_and_0_255_binary_masks_are_refused_naming_one_of_each()
    {
        using var d = new TempDir();
        Pair(d, "a", 16, (x, y) => x < 8 ? (byte)255 : (byte)0);
        Pair(d, "b", 16, (x, y) => y < 8 ? (byte)1 : (byte)0);
        var e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d.Path));
        Assert.Contains("a.png holds 0 and 255", e.Message);
        Assert.Contains("b.png holds 0 and 1", e.Message);
        Assert.Contains("--mask binary", e.Message);
        // Said explicitly, both are read with their foreground.
        var data = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Encoding = MaskEncoding.Binary });
        Assert.Equal(128, data.Load(0).Mask.Count(v => v == 1));
        Assert.Equal(128, data.Load(1).Mask.Count(v => v == 1));
    }

    [Fact]
    public void Index_masks_whose_void_is_255_are_still_read_as_index_with_ignore()
    {
        using var d = new TempDir();
        Pair(d, "a", 16, (x, y) => x < 4 ? (byte)255 : x < 10 ? (byte)1 : (byte)0);
        Pair(d, "b", 16, (x, y) => y < 8 ? (byte)1 : (byte)0);
        var data = SegmentationDataset.FromFolder(d.Path);
        Assert.Equal(MaskEncoding.Index, data.Description.Encoding);
        Assert.Equal(2, data.Description.Classes);
    }

    [Fact]
    public void One_stray_pixel_value_is_refused_naming_the_file_the_value_and_the_gap()
    {
        using var d = new TempDir();
        for (int i = 0; i < 6; i++) Pair(d, $"m{i}", 32, (x, y) => (byte)((x / 8 + y / 8 + i) % 4));
        Pair(d, "stray", 32, (x, y) => x == 5 && y == 7 ? (byte)7 : (byte)((x / 8) % 4));
        var e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d.Path));
        Assert.Contains("label 7 occurs at 1 pixel(s) in 1 mask(s)", e.Message);
        Assert.Contains("stray.png", e.Message);
        Assert.Contains("labels 4-6 never occur", e.Message);
        Assert.Contains("--classes", e.Message);
        // A class count given explicitly is the user's word: then 7 is simply out of range for 4 classes, named by file.
        var given = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Classes = 8 });
        Assert.Equal(8, given.Description.Classes);
    }

    [Fact]
    public void Binary_masks_saved_as_jpeg_are_refused_with_the_threshold_to_use_and_read_with_it()
    {
        using var d = new TempDir();
        for (int i = 0; i < 3; i++)
        {
            TempDir.SaveRgb(d[$"images/j{i}.png"], 48, 48, (x, y) => new Rgb24((byte)(x * 5), 80, (byte)(y * 5)));
            using var mask = new Image<L8>(48, 48);
            for (int y = 0; y < 48; y++) for (int x = 0; x < 48; x++) mask[x, y] = new L8((x - 24) * (x - 24) + (y - 24) * (y - 24) < 150 + i * 40 ? (byte)255 : (byte)0);
            Directory.CreateDirectory(d["masks"]);
            mask.SaveAsJpeg(d[$"masks/j{i}.jpg"], new JpegEncoder { Quality = 75 });
        }
        var e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d.Path));
        Assert.Contains("saved lossily", e.Message);
        Assert.Contains("--binary-threshold 128", e.Message);
        var data = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Encoding = MaskEncoding.Binary, BinaryThreshold = 128 });
        Assert.Equal(2, data.Description.Classes);
        int foreground = data.Load(0).Mask.Count(v => v == 1);
        Assert.InRange(foreground, 440, 510); // the disc of radius sqrt(150): pi * 150 = 471 pixels
    }

    [Fact]
    public void Exif_orientation_is_applied_so_images_line_up_with_masks_drawn_on_the_displayed_image()
    {
        using var d = new TempDir();
        // Stored 40 wide x 20 high with a bright block at the stored top-left; orientation 6 says "turn 90 degrees
        // clockwise to display", so viewers show it 20 wide x 40 high with the block at the top-right.
        using (var img = new Image<Rgb24>(40, 20, new Rgb24(0, 0, 90)))
        {
            for (int y = 0; y < 6; y++) for (int x = 0; x < 8; x++) img[x, y] = new Rgb24(255, 220, 60);
            img.Metadata.ExifProfile = new SixLabors.ImageSharp.Metadata.Profiles.Exif.ExifProfile();
            img.Metadata.ExifProfile.SetValue(SixLabors.ImageSharp.Metadata.Profiles.Exif.ExifTag.Orientation, (ushort)6);
            Directory.CreateDirectory(d["images"]);
            img.SaveAsJpeg(d["images/turned.jpg"], new JpegEncoder { Quality = 100 });
        }
        TempDir.SaveGray(d["masks/turned.png"], 20, 40, (x, y) => x >= 14 && y < 8 ? (byte)255 : (byte)0); // drawn on the displayed image
        var data = SegmentationDataset.FromFolder(d.Path);
        var sample = data.Load(0);
        Assert.Equal((20, 40), (sample.Image.Width, sample.Image.Height));
        byte Pixel(int x, int y) => sample.Image.Pixels[(y * 20 + x) * 3];
        Assert.True(Pixel(17, 3) > 200, $"the block is at the displayed top-right; corners TL {Pixel(2, 3)} TR {Pixel(17, 3)} BL {Pixel(2, 36)} BR {Pixel(17, 36)}");
        Assert.True(Pixel(2, 3) < 50, "and not at the stored top-left");
        Assert.Equal(1, sample.Mask[3 * 20 + 17]);
    }

    private static void Folder(TempDir d, int count)
    {
        for (int i = 0; i < count; i++)
            Pair(d, $"p{i:00}", 16, (x, y) => (byte)((x / 4 + y / 4 + i) % 3));
    }

    [Fact]
    public void Every_bad_pair_is_reported_before_the_first_step_even_those_a_short_run_would_never_load()
    {
        using var d = new TempDir();
        Folder(d, 10);
        TempDir.SaveGray(d["masks/p03.png"], 16, 12, (x, y) => 0);                       // wrong size
        File.WriteAllBytes(d["images/p07.png"], File.ReadAllBytes(d["images/p07.png"])[..60]); // truncated
        var data = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Classes = 3 });
        using var model = new SegmentationModel(Tiny with { Classes = 3 });
        using var t = new Trainer(model, Options(d["run"], 1) with { BatchSize = 8 });
        int steps = 0;
        var e = Assert.Throws<DataException>(() => t.Fit(data, null, new SynchronousProgress<TrainingProgress>(p => { if (p.Kind == ProgressKind.Step) steps++; })));
        Assert.Equal(0, steps);
        Assert.Contains("2 of 10 samples cannot be used", e.Message);
        Assert.Contains("p03.png: mask is 16x12", e.Message);
        Assert.Contains("p07.png", e.Message);
    }

    [Fact]
    public void A_resume_on_unchanged_data_does_not_check_it_again_and_changed_data_is_checked()
    {
        using var d = new TempDir();
        Folder(d, 8);
        var (train, val) = SegmentationDataset.FromFolder(d.Path, new DatasetOptions { Classes = 3 }).Split(0.75, seed: 1);
        List<string> Checks(int epochs, Checkpoint? from)
        {
            var lines = new List<string>();
            using var model = from?.CreateModel() ?? new SegmentationModel(Tiny with { Classes = 3 });
            using var t = new Trainer(model, Options(d["run"], epochs));
            t.Fit(train, val, new SynchronousProgress<TrainingProgress>(p => { if (p.Message?.StartsWith("checked all") == true) lines.Add(p.Message); }), from);
            return lines;
        }
        Assert.Equal(2, Checks(1, null).Count);                                      // training and validation data
        Assert.Empty(Checks(2, Checkpoint.Load(d["run/last.ckpt"])));               // resumed, nothing changed
        TempDir.SaveGray(d["masks/p00.png"], 16, 16, (x, y) => 1);                   // an edit under the run
        File.SetLastWriteTimeUtc(d["masks/p00.png"], DateTime.UtcNow.AddMinutes(1));
        Assert.Single(Checks(3, Checkpoint.Load(d["run/last.ckpt"])));              // the set holding p00 is checked again
    }

    [Fact]
    public void A_mask_that_cannot_be_read_during_detection_is_the_files_own_error_not_an_aggregate()
    {
        using var d = new TempDir();
        Folder(d, 6);
        File.WriteAllBytes(d["masks/p04.png"], new byte[] { 0x89, 0x50, 0x4E, 0x47, 1, 2, 3 });
        var e = Assert.Throws<DataException>(() => SegmentationDataset.FromFolder(d.Path));
        Assert.EndsWith("p04.png", e.FilePath);
        Assert.Contains("p04.png", e.Message);
    }
}
