using System.Reflection;
using Segmentation.Checkpoints;
using Segmentation.Training;

namespace Segmentation.Tests.Integrity;

/// <summary>
/// The run recorder is the only writer of a run folder: no code of the library or the tool names one of the
/// folder's files (a <see cref="RunRecorder"/> path) and writes a file in the same method, read off the compiled IL
/// (lambdas and local functions included, which the compiler gives their own methods).
/// </summary>
public class RunRecorderTests
{
    /// <summary>What writes or deletes files: the atomic writer, File's and Directory's writing methods, a
    /// FileStream, and the savers of run.json, checkpoints, TensorBoard events and pictures.</summary>
    private static bool Writes(MemberInfo m)
    {
        var owner = m.DeclaringType;
        if (owner is null) return false;
        if (owner.Name == "AtomicFile" || owner == typeof(FileStream) && m is ConstructorInfo) return true;
        if (owner == typeof(TensorBoardLogger) && m is ConstructorInfo) return true;
        if ((owner == typeof(RunConfig) || owner == typeof(Checkpoint)) && m.Name == "Save") return true;
        if (owner == typeof(File))
            return m.Name.StartsWith("Write", StringComparison.Ordinal)
                || m.Name.StartsWith("Append", StringComparison.Ordinal)
                || m.Name is "Create" or "CreateText" or "Delete" or "Move" or "Copy" or "Replace";
        if (owner == typeof(Directory)) return m.Name is "CreateDirectory" or "Delete" or "Move";
        return m.Name.StartsWith("SaveAs", StringComparison.Ordinal);
    }

    /// <summary>A file or folder of the run: any <see cref="RunRecorder"/> member that gives a path.</summary>
    private static bool NamesRunFile(MemberInfo m) => m.DeclaringType == typeof(RunRecorder) && m is MethodInfo mi
        && (mi.ReturnType == typeof(string) || mi.ReturnType == typeof(IEnumerable<string>))
        && mi.Name.StartsWith("get_", StringComparison.Ordinal);

    private static IEnumerable<string> Offences(params Assembly[] assemblies)
    {
        foreach (var type in assemblies.SelectMany(a => a.GetTypes()))
        {
            var outer = type;
            while (outer.DeclaringType is { } o) outer = o;
            if (outer == typeof(RunRecorder) || outer.Name == "RunLock") continue;
            foreach (var method in CodeReferences.Methods(type))
            {
                var used = CodeReferences.MembersInBody(method).ToList();
                if (used.Any(NamesRunFile) && used.FirstOrDefault(Writes) is { } write)
                    yield return $"{type.FullName}.{method.Name} writes ({write.DeclaringType!.Name}.{write.Name}) "
                        + "beside a run folder's path";
            }
        }
    }

    [Fact]
    public void Only_the_run_recorder_writes_a_run_folder()
    {
        var offences = Offences(typeof(RunRecorder).Assembly, typeof(Segmentation.Cli.Cli).Assembly).ToList();
        Assert.True(offences.Count == 0, string.Join("; ", offences));
    }

    /// <summary>The rule above sees a writer: this test's own type, which writes beside a run's path, is found.</summary>
    [Fact]
    public void The_rule_finds_a_writer_beside_a_run_path()
    {
        Assert.Contains(Offences(typeof(RunRecorderTests).Assembly), o => o.Contains(nameof(Misbehaving)));
    }

    /// <summary>What the rule must catch (never called).</summary>
    private static void Misbehaving(RunRecorder run) => File.WriteAllText(run.Curves, "");

    [Fact]
    public void Every_write_lands_in_the_folder_and_an_overlay_name_stays_in_it()
    {
        using var dir = new TempDir();
        var run = new RunRecorder(Path.Combine(dir.Path, "run"));
        run.WritePlan("{}");
        run.WriteCrashLog("trace");
        run.WriteCurves(new byte[] { 1, 2 });
        run.WriteConfusion(new byte[] { 3 });
        run.WriteOverlay("img_001", new byte[] { 4 });
        run.RecordValidatedData(new[] { "a", "b" });
        run.RecordValidatedData(new[] { "b", "c" });
        Assert.Equal("written", File.ReadAllText(run.WriteReport("written")));
        foreach (var f in new[] { run.Plan, run.CrashLog, run.Curves, run.Confusion, run.Report,
            Path.Combine(run.Overlays, "img_001.png") })
            Assert.True(File.Exists(f), f);
        Assert.Equal(new[] { "a", "b", "c" }, run.ValidatedData().OrderBy(x => x));
        Assert.Throws<ArgumentException>(() => run.WriteOverlay("../escape", new byte[] { 5 }));
        Assert.Throws<ArgumentException>(() => run.WriteOverlay("..", new byte[] { 5 }));
        Assert.False(File.Exists(Path.Combine(dir.Path, "escape.png")));
        Assert.Empty(Directory.EnumerateFiles(run.Directory, ".*.tmp"));
    }
}
