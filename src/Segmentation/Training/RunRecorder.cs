using Segmentation.Checkpoints;

namespace Segmentation.Training;

/// <summary>
/// The run recorder: the files of one training run, and the only writer of its folder (the trainer's checkpoints,
/// metrics and summary; the tool's run.json, plan.json, pictures, overlays, report, TensorBoard events and crash log),
/// in the order that keeps it consistent. The one place that spells the files' names; everyone else reads them.
/// </summary>
/// <remarks>
/// What a record claims is never ahead of the files it names. When an epoch improves on the best mean IoU the trainer
/// (1) keeps the current best.ckpt as .best.previous.ckpt (a hard link: no copy, and best.ckpt stays in place), (2)
/// writes the new best.ckpt, (3) writes last.ckpt, which records the new best epoch, and (4) deletes
/// .best.previous.ckpt; otherwise it writes last.ckpt alone. Each write is atomic (a temporary file, flushed, renamed).
/// So at every point the files are at or ahead of what last.ckpt records, never behind it, and <see cref="Repair"/>
/// brings them back to exactly what it records.
/// </remarks>
internal sealed class RunRecorder
{
    /// <summary>The run's folder.</summary>
    public string Directory { get; }

    /// <summary>Opens (does not create) the run folder at <paramref name="directory"/>.</summary>
    public RunRecorder(string directory) => Directory = Path.GetFullPath(directory);

    /// <summary>The checkpoint of the latest epoch (resume from it).</summary>
    public string Last => Path.Combine(Directory, "last.ckpt");
    /// <summary>The checkpoint of the best validation epoch.</summary>
    public string Best => Path.Combine(Directory, "best.ckpt");
    /// <summary>The previous best.ckpt while a new one is being written.</summary>
    public string PreviousBest => Path.Combine(Directory, ".best.previous.ckpt");
    /// <summary>What the run was asked to do (the CLI's settings).</summary>
    public string RunJson => Path.Combine(Directory, "run.json");
    /// <summary>One JSON object per epoch.</summary>
    public string Metrics => Path.Combine(Directory, "metrics.jsonl");
    /// <summary>The outcome, written when the run stops.</summary>
    public string Summary => Path.Combine(Directory, "summary.json");
    /// <summary>Training and validation curves.</summary>
    public string Curves => Path.Combine(Directory, "curves.png");
    /// <summary>Prediction overlays of a few validation images.</summary>
    public string Overlays => Path.Combine(Directory, "overlays");
    /// <summary>The best epoch's confusion matrix, rows normalised, as a picture.</summary>
    public string Confusion => Path.Combine(Directory, "confusion.png");
    /// <summary>The run's report page (<c>segment report</c>).</summary>
    public string Report => Path.Combine(Directory, "report.html");
    /// <summary>TensorBoard event files (<c>tensorboard --logdir</c> this, or the folder above several runs).</summary>
    public string TensorBoard => Path.Combine(Directory, "tensorboard");
    /// <summary>Fingerprints of the data sets that were validated in full (a resume skips validating them
    /// again).</summary>
    public string Validated => Path.Combine(Directory, ".validated");

    /// <summary>The training plan the run followed when <c>segment train</c> made one (<c>segment plan</c>'s
    /// form).</summary>
    public string Plan => Path.Combine(Directory, "plan.json");

    /// <summary>What an unexpected error in training left for its report (the stack trace, the step, the
    /// machine).</summary>
    public string CrashLog => Path.Combine(Directory, "crash.log");

    /// <summary>Files that make a folder a run (any of them).</summary>
    public IEnumerable<string> RunFiles => new[] { Last, Best, PreviousBest, RunJson, Metrics, Summary, Validated };

    /// <summary>Every file and folder a run writes, for <c>--overwrite</c> and for a start that never finished an
    /// epoch.</summary>
    public IEnumerable<string> AllOutputs
        => RunFiles.Concat(new[] { Curves, Confusion, Report, Overlays, TensorBoard, Plan, CrashLog });

    /// <summary>True when the folder holds any file of a run.</summary>
    public bool HoldsRun => RunFiles.Any(File.Exists);

    /// <summary>True when a run finished at least one epoch here (a checkpoint exists): a run to protect. A folder
    /// with only the record of a start (run.json, an empty metrics.jsonl) is not.</summary>
    public bool HoldsFinishedEpoch => new[] { Last, Best, PreviousBest }.Any(File.Exists);

    /// <summary>Takes the folder for this process until disposed (<see cref="RunLock"/>); refused, naming the holder,
    /// when another process trains in it.</summary>
    public IDisposable Lock() => RunLock.Acquire(Directory);

    /// <summary>Deletes every output of a run here (not the folder, not other files), but <paramref
    /// name="keep"/>.</summary>
    public void DeleteOutputs(params string[] keep)
    {
        foreach (var path in AllOutputs.Except(keep))
        {
            if (File.Exists(path)) File.Delete(path);
            else if (System.IO.Directory.Exists(path)) System.IO.Directory.Delete(path, recursive: true);
        }
    }

    /// <summary>
    /// Writes one epoch's checkpoint in the order that keeps the folder consistent at every point (see the remarks);
    /// <paramref name="boundary"/> is called between the steps (tests interrupt there).
    /// </summary>
    public void SaveEpoch(Checkpoint checkpoint, bool improved, Action<string>? boundary = null)
    {
        System.IO.Directory.CreateDirectory(Directory);
        if (improved)
        {
            if (File.Exists(Best)) KeepCopy(Best, PreviousBest);
            boundary?.Invoke("previous best set aside");
            checkpoint.Save(Best);
            boundary?.Invoke("best written");
        }
        checkpoint.Save(Last);
        boundary?.Invoke("last written");
        if (improved && File.Exists(PreviousBest)) File.Delete(PreviousBest);
    }

    /// <summary>
    /// Rewrites metrics.jsonl from <paramref name="history"/>, atomically: one JSON object per finished epoch, never
    /// ahead of last.ckpt (the trainer writes it after the checkpoints), and on a resume exactly what the checkpoint
    /// records.
    /// </summary>
    public void WriteMetrics(IEnumerable<EpochRecord> history)
    {
        System.IO.Directory.CreateDirectory(Directory);
        AtomicFile.WriteAllText(Metrics, string.Concat(history.Select(r => r.ToJson().ToJsonString() + "\n")));
    }

    /// <summary>Writes summary.json (the outcome of the run), atomically.</summary>
    public void WriteSummary(System.Text.Json.Nodes.JsonObject summary)
    {
        System.IO.Directory.CreateDirectory(Directory);
        AtomicFile.WriteAllText(Summary,
            summary.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>Writes run.json: what the run was asked to do, as resolved.</summary>
    public void WriteRunConfig(RunConfig config)
    {
        System.IO.Directory.CreateDirectory(Directory);
        config.Save(RunJson);
    }

    /// <summary>Writes plan.json: the plan <c>segment train</c> made for this run.</summary>
    public void WritePlan(string json)
    {
        System.IO.Directory.CreateDirectory(Directory);
        AtomicFile.WriteAllText(Plan, json);
    }

    /// <summary>Writes crash.log: what an unexpected error left for its report.</summary>
    public void WriteCrashLog(string text)
    {
        System.IO.Directory.CreateDirectory(Directory);
        AtomicFile.WriteAllText(CrashLog, text);
    }

    /// <summary>Writes curves.png (a PNG's bytes).</summary>
    public void WriteCurves(byte[] png) => WriteFile(Curves, png);

    /// <summary>Writes confusion.png (a PNG's bytes).</summary>
    public void WriteConfusion(byte[] png) => WriteFile(Confusion, png);

    /// <summary>Writes overlays/NAME.png (a PNG's bytes) for validation image <paramref name="name"/>.</summary>
    public void WriteOverlay(string name, byte[] png)
    {
        if (name.Length == 0 || name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || name is "." or "..")
            throw new ArgumentException($"'{name}' is not a file name for an overlay.", nameof(name));
        System.IO.Directory.CreateDirectory(Overlays);
        WriteFile(Path.Combine(Overlays, name + ".png"), png);
    }

    /// <summary>Writes the run's report page (report.html, or <paramref name="path"/> where the user named another
    /// file); returns the path written.</summary>
    public string WriteReport(string html, string? path = null)
    {
        path ??= Report;
        if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } folder) System.IO.Directory.CreateDirectory(folder);
        AtomicFile.WriteAllText(path, html);
        return path;
    }

    /// <summary>A TensorBoard writer of event files under the run's tensorboard folder.</summary>
    public TensorBoardLogger OpenTensorBoard() => new(TensorBoard);

    /// <summary>The fingerprints of the data sets validated in full for this run (empty when none).</summary>
    public IReadOnlySet<string> ValidatedData() => File.Exists(Validated)
        ? RegularFile.ReadAllText(Validated, Limits.ConfigFileBytes, "record of checked data")
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).ToHashSet()
        : new HashSet<string>();

    /// <summary>Records the fingerprints of data sets validated in full (with those recorded before).</summary>
    public void RecordValidatedData(IEnumerable<string> fingerprints)
    {
        var all = ValidatedData().Concat(fingerprints).Distinct().ToList();
        System.IO.Directory.CreateDirectory(Directory);
        AtomicFile.WriteAllText(Validated, string.Join("\n", all) + "\n");
    }

    private void WriteFile(string path, byte[] bytes)
    {
        System.IO.Directory.CreateDirectory(Directory);
        AtomicFile.Write(path, s => s.Write(bytes));
    }

    /// <summary>
    /// Brings best.ckpt back in line with what last.ckpt records after an interruption, and deletes temporary files
    /// that interrupted saves left behind. Returns what it did, one line each (empty when nothing was needed).
    /// </summary>
    public IReadOnlyList<string> Repair()
    {
        var done = new List<string>(SweepTemporaryFiles());
        if (!File.Exists(Last)) return done;
        var state = Checkpoint.Load(Last).State;
        int wanted = state.BestEpoch;
        int? bestEpoch = EpochOf(Best), previousEpoch = EpochOf(PreviousBest);
        if (wanted == 0)
        {
            if (previousEpoch is not null) { File.Delete(PreviousBest); done.Add("deleted .best.previous.ckpt (no "
                + "best epoch recorded)"); }
            return done;
        }
        if (bestEpoch == wanted)
        {
            if (File.Exists(PreviousBest)) { File.Delete(PreviousBest); done.Add($"deleted .best.previous.ckpt "
                + $"(best.ckpt already holds epoch {wanted})"); }
        }
        else if (previousEpoch == wanted)
        {
            File.Move(PreviousBest, Best, overwrite: true); // an atomic rename
            done.Add($"restored best.ckpt (epoch {wanted}) from .best.previous.ckpt; the interrupted write "
                + $"{(bestEpoch is { } e ? $"of epoch {e} " : "")}is dropped");
        }
        else if (state.Epoch == wanted)
        {
            File.Copy(Last, Best, overwrite: true);
            done.Add($"restored best.ckpt (epoch {wanted}) from last.ckpt");
        }
        else
            throw new CheckpointException($"{Best}: last.ckpt records epoch {wanted} as the best, but best.ckpt "
                + $"{(bestEpoch is { } b ? $"holds epoch {b}" : "is missing or damaged")} and no other file holds "
                + $"epoch {wanted}; the best weights of that epoch are lost. Evaluate last.ckpt instead, or start a "
                + $"new run.");
        return done;
    }

    /// <summary>Deletes the temporary files of interrupted saves (<c>.NAME.GUID.tmp</c>); returns what it did, one line
    /// each.</summary>
    public IReadOnlyList<string> SweepTemporaryFiles()
    {
        if (!System.IO.Directory.Exists(Directory)) return Array.Empty<string>();
        var swept = new List<string>();
        foreach (var f in System.IO.Directory.EnumerateFiles(Directory, ".*.tmp"))
        {
            try { File.Delete(f); swept.Add($"deleted {Path.GetFileName(f)}, left by an interrupted save"); }
            catch (IOException) { }
        }
        return swept;
    }

    /// <summary>A second name for <paramref name="source"/>'s content: a hard link where the file system allows, else a
    /// copy.</summary>
    private static void KeepCopy(string source, string target)
    {
        if (File.Exists(target)) File.Delete(target);
        bool linked = false;
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            try { linked = link(source, target) == 0; }
            catch (Exception e) when (e is DllNotFoundException || e is EntryPointNotFoundException) { }
        }
        if (!linked) File.Copy(source, target, overwrite: true);
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "link", SetLastError = true)]
    private static extern int link(string oldPath, string newPath);

    private static int? EpochOf(string path)
    {
        if (!File.Exists(path)) return null;
        try { return Checkpoint.Load(path).State.Epoch; }
        catch (CheckpointException) { return null; }
    }
}
