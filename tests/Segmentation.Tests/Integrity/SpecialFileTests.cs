using System.Runtime.InteropServices;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Models.Layers;
using Segmentation.Training;

namespace Segmentation.Tests.Integrity;

/// <summary>
/// Every file the library reads whole is refused when it is a FIFO (which would wait for a writer forever) or over its
/// size limit (issue 33, class 6): records, configs, palettes, plans, checkpoints, the report's inputs and the
/// kernel-check cache, each walked here.
/// </summary>
public class SpecialFileTests
{
    [DllImport("libc", SetLastError = true)]
    private static extern int mkfifo(string path, uint mode);

    /// <summary>Runs <paramref name="read"/> against a FIFO at <paramref name="path"/>; it must come back (refused, or
    /// for the cache, ignored) within seconds instead of waiting for a writer.</summary>
    private static Exception? Within(string path, Action read)
    {
        Assert.Equal(0, mkfifo(path, 0x1B6));
        Exception? caught = null;
        var task = Task.Run(() => { try { read(); } catch (Exception e) { caught = e; } });
        bool done = task.Wait(TimeSpan.FromSeconds(20));
        if (!done) using (File.OpenWrite(path)) { } // release the reader before failing
        Assert.True(done, $"{path}: reading a FIFO hung");
        return caught;
    }

    [Fact]
    public void Every_whole_file_reader_refuses_a_fifo_without_waiting()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var d = new TempDir();
        var cases = new (string Name, Action<string> Read, Type Expected)[]
        {
            ("run.json", p => RunConfig.Load(p), typeof(SegmentationException)),
            ("palette.csv", p => ClassPalette.Load(p), typeof(DataException)),
            ("model.ckpt", p => Checkpoint.Load(p), typeof(CheckpointException)),
            ("plan.json", p => TrainingPlan.Load(p), typeof(OptionsException)),
        };
        foreach (var (name, read, expected) in cases)
        {
            var e = Within(d[name], () => read(d[name]));
            Assert.NotNull(e);
            Assert.IsAssignableFrom(expected, e);
            Assert.Contains("FIFO", e!.Message);
            Assert.Contains(name, e.Message);
        }
        // a model folder whose config.json is a FIFO
        Directory.CreateDirectory(d["hf"]);
        var hf = Within(d["hf/config.json"], () => HuggingFaceSegformer.Import(d["hf"]));
        Assert.Contains("FIFO", Assert.IsAssignableFrom<SegmentationException>(hf).Message);
        // the report of a run folder whose run.json is a FIFO
        Directory.CreateDirectory(d["run"]);
        File.WriteAllText(d["run/summary.json"], "{}");
        Segmentation.Tests.Cli.CliResult? report = null;
        Assert.Null(Within(d["run/run.json"], () => report = Segmentation.Tests.Cli.CliResult.Run("report",
            d["run"])));
        Assert.Equal(1, report!.Code);
        Assert.Contains("FIFO", report.Err);
    }

    [Fact]
    public void A_kernel_check_cache_that_is_a_fifo_or_contradicts_itself_is_measured_again()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var d = new TempDir();
        var read = typeof(KernelVerdicts).GetMethod("Read", System.Reflection.BindingFlags.NonPublic
            | System.Reflection.BindingFlags.Static)!;
        object? store = "not read";
        Assert.Null(Within(d["cache.json"], () => store = read.Invoke(null, new object[] { d["cache.json"] })));
        Assert.Null(store); // no cache: measured again

        // an entry edited to pass with an error of 1e9 (its tolerance raised to 1e10) is dropped
        var machine = KernelVerdicts.Machine();
        File.WriteAllText(d["edited.json"], "{\"Machine\":" + System.Text.Json.JsonSerializer.Serialize(machine)
            + ",\"Convolutions\":[{\"Shape\":{},\"Route\":\"Direct\",\"Threads\":2,\"Result\":{\"Route\":\"Direct\","
            + "\"OutputError\":1e9,\"InputGradientError\":0,\"WeightGradientError\":0,\"Finite\":true,"
            + "\"Tolerance\":1e10}}],\"Layers\":{\"a\":1e-7,\"b\":\"NaN\",\"c\":-1}}");
        var edited = read.Invoke(null, new object[] { d["edited.json"] });
        Assert.NotNull(edited);
        var convolutions = (System.Collections.ICollection)edited!.GetType().GetProperty("Convolutions")!
            .GetValue(edited)!;
        Assert.Empty(convolutions);
        var layers = (IDictionary<string, double>)edited.GetType().GetProperty("Layers")!.GetValue(edited)!;
        Assert.Equal(new[] { "a" }, layers.Keys);
    }
}
