using System.CommandLine;
using Segmentation.Cli;
using Segmentation.Tests.Cli;

namespace Segmentation.Tests.Integrity;

/// <summary>
/// Every command that writes a path the user gives refuses a file the user has, unless --overwrite (issue 33, class
/// 1): the test walks the whole command tree, so a command that gains an --out-like option without a case here fails.
/// </summary>
public class OutputPathTests
{
    /// <summary>Options that name where a command writes.</summary>
    private static bool Writes(Option o) => o.Name is "--out" or "--output" or "--out-dir" or "--save";

    private static IEnumerable<(string Command, Option Option)> Writers(Command c, string prefix = "")
    {
        var name = (prefix + " " + c.Name).Trim();
        foreach (var o in c.Options.Where(Writes)) yield return (name, o);
        foreach (var sub in c.Subcommands)
            foreach (var w in Writers(sub, c is RootCommand ? "" : name)) yield return w;
    }

    private static string Fixture(string name)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Segmentation.sln"))) dir = dir.Parent;
        return Path.Combine(dir!.FullName, "tests", "fixtures", "checkpoints-0.3", name);
    }

    /// <summary>For each writing command: its arguments with --out pointing at what the user has (a file, or a folder
    /// holding a file the command would write), and that file.</summary>
    private static Dictionary<string, Func<TempDir, (string[] Args, string UserFile)>> Cases() => new()
    {
        ["train"] = d => (new[] { "train", "--data", "builtin:shapes?count=8&size=32", "--epochs", "1",
            "--base-channels", "4", "--depth", "2", "--out", d["mine.txt"] }, d["mine.txt"]),
        ["plan"] = d => (new[] { "plan", "--data", d.Path, "--out", d["mine.txt"] }, d["mine.txt"]),
        ["predict"] = d => (new[] { "predict", "--checkpoint", Fixture("unet-batch-transposed.ckpt"), "--input",
            Fixture("images/p1.png"), "--out", d["mine.txt"] }, d["mine.txt"]),
        ["export"] = d => (new[] { "export", "--checkpoint", Fixture("unet-batch-transposed.ckpt"), "--format", "onnx",
            "--out", d["mine.txt"] }, d["mine.txt"]),
        ["import"] = d => (new[] { "import", "--pytorch", d["weights.pth"], "--from", "milesial", "--out",
            d["mine.txt"] }, d["mine.txt"]),
        ["report"] = d => (new[] { "report", d.Path, "--out", d["mine.txt"] }, d["mine.txt"]),
        ["bench instances"] = d => (new[] { "bench", "instances", "--size", "32", "--objects", "3", "--rounds", "1",
            "--out", d.Path }, d["truth.png"]),
    };

    [Fact]
    public void Every_command_that_writes_a_path_refuses_a_file_the_user_has()
    {
        var (root, _) = Segmentation.Cli.Cli.Commands(new CommandContext(TextWriter.Null, TextWriter.Null, false,
            false));
        var writers = Writers(root).ToList();
        var cases = Cases();
        Assert.True(writers.Count >= cases.Count, string.Join(", ", writers.Select(w => w.Command)));
        foreach (var (command, option) in writers)
        {
            Assert.True(cases.ContainsKey(command), $"'segment {command} {option.Name}' writes a path: add its case");
            using var d = new TempDir();
            var (args, userFile) = cases[command](d);
            File.WriteAllText(userFile, "the user's own file");
            var r = CliResult.Run(args);
            Assert.True(r.Code == 2, $"segment {command}: exit {r.Code}: {r.Err}");
            Assert.Contains(Path.GetFileName(userFile), r.Err);
            Assert.Equal("the user's own file", File.ReadAllText(userFile));
        }
    }

    [Fact]
    public void Report_replaces_its_own_page_but_not_a_checkpoint_unless_asked()
    {
        using var d = new TempDir();
        var train = CliResult.Run("train", "--data", "builtin:shapes?count=8&size=32", "--epochs", "1",
            "--base-channels", "4", "--depth", "2", "--workers", "1", "--device", "cpu", "--out", d["run"],
            "--no-tensorboard");
        Assert.True(train.Code == 0, train.Err);
        var checkpoint = File.ReadAllBytes(d["run/best.ckpt"]);
        var refused = CliResult.Run("report", d["run"], "--out", d["run/best.ckpt"]);
        Assert.Equal(2, refused.Code);
        Assert.Equal(checkpoint, File.ReadAllBytes(d["run/best.ckpt"]));
        Assert.Equal(0, CliResult.Run("report", d["run"]).Code);
        Assert.Equal(0, CliResult.Run("report", d["run"]).Code); // its own report.html again
        Assert.Equal(0, CliResult.Run("report", d["run"], "--out", d["run/best.ckpt"], "--overwrite").Code);
    }
    [Fact]
    public void A_stride_longer_than_the_window_is_refused_before_any_work()
    {
        using var d = new TempDir();
        var r = CliResult.Run("predict", "--checkpoint", Fixture("unet-batch-transposed.ckpt"), "--input",
            Fixture("images/p1.png"), "--out", d["out"], "--slide", "32x32", "--stride", "48x32");
        Assert.Equal(2, r.Code);
        Assert.Contains("longer than the window 32x32", r.Err);
        Assert.False(Directory.Exists(d["out"]) && Directory.EnumerateFileSystemEntries(d["out"]).Any());
        var checkpoint = Segmentation.Checkpoints.Checkpoint.Load(Fixture("unet-batch-transposed.ckpt"));
        Assert.Throws<OptionsException>(() => new Segmentation.Inference.Predictor(checkpoint,
            new Segmentation.Inference.PredictorOptions { Device = "cpu", Window = new Segmentation.Data.Size2(32, 32),
                Stride = new Segmentation.Data.Size2(16, 40) }));
    }

    [Fact]
    public void Nproc_beyond_the_cores_and_a_batch_that_does_not_divide_are_refused_before_any_process_starts()
    {
        using var d = new TempDir();
        var many = CliResult.Run("train", "--data", "builtin:shapes?count=8&size=32", "--nproc", "1000", "--out",
            d["run"]);
        Assert.Equal(2, many.Code);
        Assert.Contains($"give 1 to {Environment.ProcessorCount}", many.Err);
        if (Environment.ProcessorCount < 2) return;
        var odd = CliResult.Run("train", "--data", "builtin:shapes?count=8&size=32", "--nproc", "2", "--batch-size",
            "3", "--out", d["run"]);
        Assert.Equal(2, odd.Code);
        Assert.Contains("use a multiple of 2", odd.Err);
        Assert.False(Directory.Exists(d["run"]));
    }
    [Fact]
    public void A_refused_start_leaves_the_users_folder_as_it_was()
    {
        using var d = new TempDir();
        Directory.CreateDirectory(d["mine"]);
        File.WriteAllText(Path.Combine(d["mine"], "notes.txt"), "mine");
        var r = CliResult.Run("train", "--data", d["no-such-data"], "--out", d["mine"], "--base-channels", "4");
        Assert.Equal(1, r.Code);
        Assert.Equal(new[] { "notes.txt" }, Directory.EnumerateFileSystemEntries(d["mine"]).Select(Path.GetFileName));
    }
}
