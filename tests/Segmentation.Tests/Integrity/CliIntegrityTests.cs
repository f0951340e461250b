using System.Text.Json.Nodes;
using SixLabors.ImageSharp.PixelFormats;
using Segmentation.Checkpoints;

namespace Segmentation.Tests.Integrity;

/// <summary>The fragile and unclear cases of the integrity issue, as a user meets them through <c>segment</c>.</summary>
public class CliIntegrityTests
{
    private static Segmentation.Tests.Cli.CliResult Run(params string[] args) => Segmentation.Tests.Cli.CliResult.Run(args);

    private const string TinyShapes = "builtin:shapes?count=24&size=32&seed=2";
    private static readonly string[] TinyModel = { "--base-channels", "8", "--depth", "2", "--batch-size", "4", "--workers", "1", "--device", "cpu" };

    private static string[] Train(params string[] extra) => new[] { "train" }.Concat(extra).Concat(TinyModel).ToArray();

    /// <summary>A folder data set of 3-class index masks; <paramref name="size"/> gives each image its size.</summary>
    private static void Folder(string dir, int count, Func<int, int>? size = null)
    {
        for (int i = 0; i < count; i++)
        {
            int s = size?.Invoke(i) ?? 32;
            TempDir.SaveRgb(Path.Combine(dir, $"images/p{i:00}.png"), s, s, (x, y) => new Rgb24((byte)(x * 7), (byte)(y * 7), (byte)(i * 20)));
            TempDir.SaveGray(Path.Combine(dir, $"masks/p{i:00}.png"), s, s, (x, y) => (byte)((x / 8 + y / 8 + i) % 3));
        }
    }

    [Fact]
    public void Resume_refuses_flags_that_would_change_the_run_and_names_the_ones_it_accepts()
    {
        using var d = new TempDir();
        Assert.Equal(0, Run(Train("--data", TinyShapes, "--epochs", "1", "--out", d["run"])).Code);
        var r = Run("train", "--out", d["run"], "--resume", "--epochs", "2", "--base-channels", "16", "--depth", "3",
            "--batch-size", "4");
        Assert.Equal(2, r.Code); // --base-channels and --depth would change the run; --batch-size 4 is as it was
        Assert.Contains("--base-channels, --depth cannot change under it", r.Err);
        Assert.Contains("A resume may change: --epochs, --time-limit", r.Err);
        // the command repeated as it was started (a script's) changes nothing, so it resumes
        var ok = Run(Train("--data", TinyShapes, "--out", d["run"], "--resume", "--epochs", "2"));
        Assert.True(ok.Code == 0, ok.Err);
        Assert.Equal(2, Segmentation.Checkpoints.Checkpoint.Load(d["run/last.ckpt"]).State.Epoch);
    }

    [Fact]
    public void Run_json_stores_the_data_folder_absolute_and_relative_to_the_run()
    {
        using var d = new TempDir();
        Folder(d["data"], 6);
        Assert.Equal(0, Run(Train("--data", d["data"], "--epochs", "1", "--out", d["run"])).Code);
        var run = JsonNode.Parse(File.ReadAllText(d["run/run.json"]))!;
        Assert.Equal(Path.GetFullPath(d["data"]), run["Data"]!.GetValue<string>());
        Assert.Equal(Path.Combine("..", "data"), run["DataRelative"]!.GetValue<string>());

        // The project moves as a whole: the resume finds the data where it sits relative to the run folder.
        Directory.Move(d.Path + "/data", d.Path + "/moved-data");
        Directory.CreateDirectory(d["project"]);
        Directory.Move(d["moved-data"], d["project/data"]);
        Directory.Move(d["run"], d["project/run"]);
        var r = Run("train", "--out", d["project/run"], "--resume", "--epochs", "2");
        Assert.Equal(0, r.Code);
        Assert.Contains("using " + Path.GetFullPath(d["project/data"]), r.Out);
    }

    [Theory]
    [InlineData("--size", "20000x20000", "GiB for this model's activations alone")]
    [InlineData("--crop", "100000x100000", "over the limit of 65536 pixels a side")]
    [InlineData("--cache-mb", "-1", "--cache-mb -1: expected 0 to")]
    public void Sizes_and_cache_beyond_what_the_machine_can_do_are_refused_with_the_figure(string flag, string value, string expected)
    {
        using var d = new TempDir();
        var r = Run(Train("--data", TinyShapes, "--epochs", "1", "--out", d["run"], flag, value));
        Assert.Equal(2, r.Code);
        Assert.Contains(expected, r.Err);
    }

    [Fact]
    public void Parse_errors_say_what_was_expected_in_words_not_dotnet_type_names()
    {
        var r = Run("train", "--val-split", "half");
        Assert.Equal(2, r.Code);
        Assert.DoesNotContain("System.", r.Err);
        Assert.Contains("a number", r.Err);
    }

    [Fact]
    public void Images_of_different_sizes_with_a_crop_are_validated_one_at_a_time_instead_of_failing_after_an_epoch()
    {
        using var d = new TempDir();
        Folder(d["data"], 8, i => 32 + 4 * (i % 3));
        var r = Run(Train("--data", d["data"], "--epochs", "1", "--crop", "16x16", "--out", d["run"]));
        Assert.Equal(0, r.Code);
        Assert.Contains("validation images differ in size: validating one image at a time", r.Out);
    }

    [Fact]
    public void Colour_masks_read_as_index_masks_are_named_as_colour_images()
    {
        using var d = new TempDir();
        TempDir.SaveRgb(d["data/images/a.png"], 16, 16, (x, y) => new Rgb24(1, 2, 3));
        TempDir.SaveRgb(d["data/masks/a.png"], 16, 16, (x, y) => x < 8 ? new Rgb24(255, 0, 0) : new Rgb24(0, 0, 255));
        TempDir.SaveRgb(d["data/images/b.png"], 16, 16, (x, y) => new Rgb24(1, 2, 3));
        TempDir.SaveRgb(d["data/masks/b.png"], 16, 16, (x, y) => new Rgb24(255, 0, 0));
        var r = Run(Train("--data", d["data"], "--mask", "index", "--out", d["run"]));
        Assert.Equal(1, r.Code);
        Assert.Contains("the mask is a colour image", r.Err);
        Assert.Contains("--mask palette", r.Err);
        Assert.DoesNotContain("ignore index", r.Err);
    }

    [Fact]
    public void A_corrupt_mask_found_while_detecting_is_one_line_naming_it_not_an_aggregate_error()
    {
        using var d = new TempDir();
        Folder(d["data"], 4);
        File.WriteAllBytes(d["data/masks/p02.png"], File.ReadAllBytes(d["data/masks/p02.png"])[..40]);
        var r = Run(Train("--data", d["data"], "--out", d["run"]));
        Assert.Equal(1, r.Code);
        Assert.Contains("p02.png", r.Err);
        Assert.DoesNotContain("Aggregate", r.Err);
    }

    [Fact]
    public void A_short_checkpoint_is_called_truncated_and_a_broken_last_ckpt_points_at_best_ckpt()
    {
        using var d = new TempDir();
        File.WriteAllBytes(d["last.ckpt"], "SEGCKPT1"u8.ToArray().Concat(new byte[12]).ToArray());
        var r = Run("eval", "--checkpoint", d["last.ckpt"]);
        Assert.Equal(1, r.Code);
        Assert.Contains("truncated (20 bytes", r.Err);
        Assert.DoesNotContain("does not start with SEGCKPT1", r.Err);
        Assert.Contains("best.ckpt beside it", r.Err);
    }

    [Fact]
    public void Data_that_changed_under_a_resume_is_a_data_error_exit_1()
    {
        using var d = new TempDir();
        Folder(d["data"], 6);
        Assert.Equal(0, Run(Train("--data", d["data"], "--epochs", "1", "--out", d["run"])).Code);
        for (int i = 0; i < 6; i++) TempDir.SaveGray(d[$"data/masks/p{i:00}.png"], 32, 32, (x, y) => (byte)((x / 4 + y / 4) % 5)); // now 5 classes
        var r = Run("train", "--out", d["run"], "--resume", "--epochs", "2");
        Assert.Equal(1, r.Code);
        Assert.Contains("the data changed since the run started", r.Err);
    }
}
