namespace Segmentation.Tests.Cli;

/// <summary>An unexpected error in training leaves crash.log in the run folder, and the run resumes.</summary>
public class CrashTests
{
    private static readonly string[] Tiny = { "--data", "builtin:shapes?count=24&size=32&seed=2", "--epochs", "3",
        "--base-channels", "8", "--depth", "2", "--batch-size", "4", "--workers", "1", "--device", "cpu",
        "--no-tensorboard" };

    [Fact]
    public void An_injected_failure_mid_epoch_leaves_crash_log_and_resume_continues()
    {
        using var d = new TempDir();
        var crashed = CliResult.Run(new[] { "train", "--out", d["run"], "--fail-at", "2:3" }.Concat(Tiny).ToArray());
        Assert.Equal(1, crashed.Code);
        Assert.Contains("crash.log", crashed.Err);
        Assert.Contains($"segment train --out {d["run"]} --resume", crashed.Err);
        var log = File.ReadAllText(d["run/crash.log"]);
        Assert.Contains("injected failure at step 3 of epoch 2", log);
        Assert.Contains("where: step 3 of epoch 2", log);
        Assert.Contains("   at ", log); // the stack trace
        Assert.Contains("threads: libtorch", log);
        Assert.Contains("cpu: ", log);

        var resumed = CliResult.Run("train", "--out", d["run"], "--resume", "--no-tensorboard");
        Assert.True(resumed.Code == 0, resumed.Err);
        Assert.Contains("epoch 1 of 3 done", resumed.Out);
        Assert.Contains("completed after 3 epoch(s)", resumed.Out);
    }

    [Fact]
    public void A_crash_in_the_first_epoch_keeps_crash_log_but_nothing_that_blocks_a_new_start()
    {
        using var d = new TempDir();
        var crashed = CliResult.Run(new[] { "train", "--out", d["run"], "--fail-at", "1:2" }.Concat(Tiny).ToArray());
        Assert.Equal(1, crashed.Code);
        Assert.True(File.Exists(d["run/crash.log"]));
        Assert.False(File.Exists(d["run/run.json"]));
        var again = CliResult.Run(new[] { "train", "--out", d["run"] }.Concat(Tiny).ToArray());
        Assert.True(again.Code == 0, again.Err);
    }
}
