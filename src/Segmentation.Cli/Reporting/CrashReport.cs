using System.Globalization;
using System.Text;
using Segmentation.Checkpoints;
using Segmentation.Models;
using Segmentation.Training;

namespace Segmentation.Cli;

/// <summary>
/// What an unexpected error in training leaves for its report: <c>crash.log</c> in the run folder, with the stack
/// trace, the epoch and step, the command line, the build, the CPU and the thread counts; the error the user sees
/// names the file and the command that resumes the run.
/// </summary>
internal static class CrashReport
{
    /// <summary>Errors the user can act on from their message alone; anything else is a crash.</summary>
    public static bool IsExpected(Exception e) => e is AggregateException aggregate
        ? aggregate.Flatten().InnerExceptions.Any(IsExpected)
        : e is SegmentationException or IOException or UnauthorizedAccessException or InvalidDataException
            or OperationCanceledException;

    /// <summary>Writes crash.log into <paramref name="run"/> (atomically) and returns the error to show.</summary>
    public static SegmentationException Write(RunRecorder run, Exception e, string step, TrainerOptions options)
    {
        var text = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        text.AppendLine(inv, $"time: {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC");
        text.AppendLine(inv, $"where: {step}");
        text.AppendLine(inv, $"command: {string.Join(' ', Environment.GetCommandLineArgs())}");
        text.AppendLine(inv,
            $"build: {string.Join(", ", RunConfig.CurrentVersions().Select(v => $"{v.Key} {v.Value}"))}");
        text.AppendLine(inv, $"cpu: {NativeRuntime.CpuModel()}, {Environment.ProcessorCount} core(s)");
        text.AppendLine(inv, $"threads: libtorch {TorchSharp.torch.get_num_threads()} (asked {options.Threads}), "
            + $"loader workers {options.Workers} (0: one per core), device {options.Device}, precision "
            + $"{options.Precision.Kind.ShortName()}");
        text.AppendLine();
        text.AppendLine(e.ToString());
        run.WriteCrashLog(text.ToString());
        return new SegmentationException($"{Cli.WithoutBacktrace(e.Message)} (unexpected, at {step}: {run.CrashLog} "
            + $"has the stack trace to report; continue with: segment train --out {run.Directory} --resume)", e);
    }
}
