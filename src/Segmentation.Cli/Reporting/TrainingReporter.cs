using System.CommandLine;
using System.Globalization;
using Segmentation.Checkpoints;
using Segmentation.Data;
using Segmentation.Models;
using Segmentation.Models.Layers;
using Segmentation.Training;

namespace Segmentation.Cli;

/// <summary>Presents training progress: a live status line on a terminal, and one line per epoch always (the trainer
/// writes the run's files).</summary>
internal sealed class TrainingReporter : IProgress<TrainingProgress>
{
    private readonly CommandContext ctx;
    private readonly TextWriter log;
    private bool headerShown;

    /// <summary>Instance data: the epoch lines show AP and PQ where semantic runs show pixel accuracy.</summary>
    public bool Instances { get; init; }

    private readonly System.Diagnostics.Stopwatch sincePlain = System.Diagnostics.Stopwatch.StartNew();

    /// <summary>Without a terminal (CI, tee, nohup) a plain progress line is printed this often, so a slow epoch never
    /// looks like a hang.</summary>
    public TimeSpan PlainInterval { get; init; } = TimeSpan.FromSeconds(30);

    public TrainingReporter(CommandContext ctx, TextWriter log)
    {
        this.ctx = ctx; this.log = log;
    }

    public void Report(TrainingProgress p)
    {
        switch (p.Kind)
        {
            case ProgressKind.Step:
                int width = 20, filled = (int)Math.Round(width * (double)p.Step / Math.Max(1, p.StepsPerEpoch));
                string step = string.Create(CultureInfo.InvariantCulture,
                    $"{p.Step}/{p.StepsPerEpoch} loss {p.Loss:F4} lr {p.LearningRate:0.0e+0} {p.ImagesPerSecond:F1} "
                        + $"img/s ETA {Format(p.Eta)}");
                ctx.Status(log,
                    $"epoch {p.Epoch}/{p.Epochs} [{new string('#', filled)}{new string('-', width - filled)}] {step}");
                Plain($"epoch {p.Epoch}/{p.Epochs} step {step}");
                break;
            case ProgressKind.DataCheck:
                ctx.Status(log, $"{p.Message} {p.Step}/{p.StepsPerEpoch}");
                Plain($"{p.Message} {p.Step}/{p.StepsPerEpoch}");
                break;
            case ProgressKind.ValidationStep:
                ctx.Status(log, $"epoch {p.Epoch}/{p.Epochs} validating {p.Step}/{p.StepsPerEpoch}");
                Plain($"epoch {p.Epoch}/{p.Epochs} validating {p.Step}/{p.StepsPerEpoch}");
                break;
            case ProgressKind.Epoch:
                var r = p.Record!;
                ctx.FinishLine(log);
                if (!headerShown)
                {
                    log.WriteLine(Instances
                        ? "epoch  train loss  val loss  mean IoU        AP       PQ  lr        seconds  img/s  RSS MiB"
                        : "epoch  train loss  val loss  mean IoU  pixel acc  lr        seconds  img/s  RSS MiB");
                    headerShown = true;
                }
                string scores = Instances
                    ? $"{F(r.MeanIoU),8}  {F(r.Ap),8}  {F(r.Pq),7}"
                    : $"{F(r.MeanIoU),8}  {F(r.PixelAccuracy),9}";
                log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{r.Epoch,5}  {r.TrainLoss,10:F4}  {F(r.ValLoss),8}  {scores}  "
                        + $"{r.LearningRate,-8:0.0e+0}  {r.Seconds,7:F1}  {r.ImagesPerSecond,5:F1}  "
                        + $"{r.ResidentMemoryMB,7:F0}"));
                break;
            case ProgressKind.Message:
            case ProgressKind.Convolutions:
                ctx.FinishLine(log);
                log.WriteLine(p.Message);
                break;
        }
    }

    /// <summary>A plain line at most every <see cref="PlainInterval"/>, when no terminal shows the status
    /// line.</summary>
    private void Plain(string line)
    {
        if (ctx.IsTerminal(log) || sincePlain.Elapsed < PlainInterval) return;
        log.WriteLine(line);
        sincePlain.Restart();
    }

    private static string F(double v) => double.IsNaN(v) ? "-" : v.ToString("F4", CultureInfo.InvariantCulture);

    private static string Format(TimeSpan? t) => t is { } v
        ? (v.TotalHours >= 1 ? v.ToString(@"h\:mm\:ss", CultureInfo.InvariantCulture)
        : v.ToString(@"mm\:ss", CultureInfo.InvariantCulture)) : "--:--";
}
