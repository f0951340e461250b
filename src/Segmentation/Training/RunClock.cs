using System.Diagnostics;

namespace Segmentation.Training;

/// <summary>
/// The run's time: what passed before a resume and since, each epoch's training and evaluation times, and what they
/// say about the rest: the time to the end (the ETA) and the epochs that still fit a time limit.
/// </summary>
internal sealed class RunClock
{
    private readonly List<(int Epoch, double Train, double Eval)> timings = new();
    private readonly Stopwatch clock = new();
    private readonly double priorSeconds;

    /// <summary>A clock that starts from <paramref name="priorSeconds"/> (a resumed run's time so far).</summary>
    public RunClock(double priorSeconds) => this.priorSeconds = priorSeconds;

    /// <summary>Starts counting this call's time.</summary>
    public void Start() => clock.Start();

    /// <summary>The run's time so far, across resumes: --time-limit is the whole run's budget, so a run resumed after a
    /// crash goes on within what is left of it.</summary>
    public TimeSpan Elapsed => TimeSpan.FromSeconds(priorSeconds) + clock.Elapsed;

    /// <summary>Whether an evaluation has been timed.</summary>
    public bool HasEvaluation => timings.Any(x => x.Eval > 0);

    /// <summary>Records an epoch's training and evaluation seconds (0: not evaluated).</summary>
    public void Record(int epoch, double train, double eval) => timings.Add((epoch, train, eval));

    /// <summary>The median training epoch of this call (the first left out once there are others: it carries the
    /// layer check and a cold cache) and the median evaluation (0 before the first); medians, so that one slow
    /// epoch (another process's burst) does not move them.</summary>
    public (double Train, double Eval) EpochTimes()
    {
        var evals = timings.Where(x => x.Eval > 0).Select(x => x.Eval).ToList();
        return (TrainingBenchmark.Median((timings.Count > 1 ? timings.Skip(1) : timings).Select(x => x.Train)
            .ToList()), evals.Count == 0 ? 0 : TrainingBenchmark.Median(evals));
    }

    /// <summary>
    /// Time to the end of a run of <paramref name="epochs"/> from within <paramref name="epoch"/> (<paramref
    /// name="doneOfEpoch"/> of it done): the epochs left at the median training time of the finished ones, plus the
    /// evaluations left (<paramref name="evaluates"/>) at the median of those done (before the first, as long as a
    /// training epoch); within the first epoch, its own pace (<paramref name="firstEpochSeconds"/>). Never past
    /// <paramref name="limit"/>.
    /// </summary>
    public TimeSpan Eta(int epoch, int epochs, double doneOfEpoch, double firstEpochSeconds, Func<int, bool> evaluates,
        TimeSpan? limit)
    {
        double left = epochs - epoch + 1 - Math.Clamp(doneOfEpoch, 0, 1);
        var (train, eval) = EpochTimes();
        if (timings.Count == 0) train = firstEpochSeconds;
        int evaluations = Enumerable.Range(epoch, epochs - epoch + 1).Count(evaluates);
        double seconds = left * train + evaluations * (eval > 0 ? eval : train);
        if (limit is { } l) seconds = Math.Min(seconds, Math.Max(0, (l - Elapsed).TotalSeconds));
        return TimeSpan.FromSeconds(seconds);
    }

    /// <summary>
    /// The most epochs, from <paramref name="epoch"/> up to <paramref name="cap"/>, whose training and evaluations at
    /// their median times still end within <paramref name="limit"/>; <paramref name="evaluations"/> counts the
    /// evaluations of epochs epoch+1..e for an end at e (none without validation).
    /// </summary>
    public (int Epochs, double Train, double Eval, double Left) EpochsWithin(TimeSpan limit, int epoch, int cap,
        Func<int, int> evaluations)
    {
        var (train, eval) = EpochTimes();
        double left = (limit - Elapsed).TotalSeconds;
        int fitted = epoch;
        for (int e = epoch + 1; e <= cap; e++)
        {
            if ((e - epoch) * train + evaluations(e) * eval > left) break;
            fitted = e;
        }
        return (fitted, train, eval, left);
    }
}
