using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace Segmentation.Tests.Integrity;

/// <summary>
/// The house rules that code review would otherwise have to catch, read off the compiler's syntax tree: stages know only
/// the stages before them; methods stay short and lines narrow; comments carry no machine's figures; a file named after
/// a type holds it.
/// </summary>
public class ArchitectureTests
{
    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Segmentation.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("The tests run outside the repository (no Segmentation.sln above them).");
    }

    /// <summary>Each stage of the library and the stages it may name (data flows one way; Inference never needs Training).</summary>
    public static IEnumerable<object[]> Stages() => new[]
    {
        new object[] { "Distributed", new string[0] }, // the processes of a run and their collectives: under everything
        new object[] { "Data", new[] { "Distributed" } },
        new object[] { "Models", new[] { "Data", "Distributed" } },
        new object[] { "Evaluation", new[] { "Data", "Distributed" } },
        new object[] { "Checkpoints", new[] { "Data", "Models", "Evaluation", "Distributed" } },
        new object[] { "Tasks", new[] { "Data", "Models", "Evaluation", "Distributed" } },
        new object[] { "Training", new[] { "Data", "Models", "Evaluation", "Checkpoints", "Tasks", "Distributed" } },
        new object[] { "Inference", new[] { "Data", "Models", "Evaluation", "Checkpoints", "Tasks", "Distributed" } },
    };

    /// <summary>
    /// What each stage's compiled code uses, read off the assembly rather than the text (a name imported by a
    /// <c>using</c> or written unqualified counts the same): base types, interfaces, fields, signatures, attributes and
    /// every type, method and field a method body refers to (<see cref="CodeReferences"/>), lambdas and iterators
    /// included, since the compiler nests them in the type that wrote them.
    /// </summary>
    [Theory]
    [MemberData(nameof(Stages))]
    public void A_stage_uses_only_the_stages_before_it(string stage, string[] allowed)
    {
        var stages = Stages().Select(s => (string)s[0]).ToHashSet();
        var offences = new SortedSet<string>();
        foreach (var type in typeof(Segmentation.Data.DatasetDescription).Assembly.GetTypes())
        {
            if (StageOf(type, stages) != stage) continue;
            foreach (var used in CodeReferences.Of(type))
                if (StageOf(used, stages) is { } other && other != stage && !allowed.Contains(other)
                    && !KnownEdges.Contains((Outermost(type).FullName!, Outermost(used).FullName!)))
                    offences.Add($"{Outermost(type).FullName} uses {Outermost(used).FullName}");
        }
        Assert.True(offences.Count == 0, $"{stage} uses what it may not ({offences.Count}): " + string.Join("; ", offences));
    }

    /// <summary>Edges against the stages still in the code, each named so that no other joins it. None: the predictor
    /// scores objects through the task, and the tasks are a stage of their own under Training and Inference.</summary>
    private static readonly HashSet<(string User, string Used)> KnownEdges = new();

    /// <summary>Every folder of src/Segmentation is its stage's namespace, so that the test above sees it.</summary>
    [Fact]
    public void A_stage_folder_declares_its_stage_namespace()
    {
        var offences = new List<string>();
        foreach (var stage in Stages().Select(s => (string)s[0]))
        {
            var folder = Path.Combine(RepoRoot(), "src", "Segmentation", stage);
            foreach (var file in Directory.EnumerateFiles(folder, "*.cs", SearchOption.AllDirectories))
            {
                var ns = Regex.Match(File.ReadAllText(file), @"^namespace\s+([\w.]+)", RegexOptions.Multiline).Groups[1].Value;
                if (ns != $"Segmentation.{stage}" && !ns.StartsWith($"Segmentation.{stage}.", StringComparison.Ordinal))
                    offences.Add($"{Path.GetRelativePath(folder, file)}: namespace '{ns}'");
            }
        }
        Assert.True(offences.Count == 0, string.Join("; ", offences));
    }

    private static Type Outermost(Type t)
    {
        while (t.DeclaringType is { } outer) t = outer;
        return t;
    }

    private static string? StageOf(Type t, ISet<string> stages)
    {
        var ns = Outermost(t).Namespace;
        if (ns is null || !ns.StartsWith("Segmentation.", StringComparison.Ordinal)) return null;
        var first = ns["Segmentation.".Length..].Split('.')[0];
        return stages.Contains(first) ? first : null;
    }

    /// <summary>Every C# file of src/ (not build output), parsed as the compiler parses it.</summary>
    private static IEnumerable<(string Path, SyntaxTree Tree)> Sources()
    {
        var root = Path.Combine(RepoRoot(), "src");
        var sep = Path.DirectorySeparatorChar;
        return Directory.EnumerateFiles(root, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{sep}obj{sep}") && !f.Contains($"{sep}bin{sep}"))
            .Select(f => (Path.GetRelativePath(root, f), CSharpSyntaxTree.ParseText(File.ReadAllText(f), path: f)));
    }

    [Fact]
    public void No_method_in_src_is_over_60_lines()
    {
        var offences = new List<string>();
        foreach (var (path, tree) in Sources())
            foreach (var node in tree.GetRoot().DescendantNodes())
            {
                if (node is not (BaseMethodDeclarationSyntax or AccessorDeclarationSyntax or LocalFunctionStatementSyntax)) continue;
                var span = node.GetLocation().GetLineSpan();
                int lines = span.EndLinePosition.Line - span.StartLinePosition.Line + 1;
                if (lines > 60) offences.Add($"{path}:{span.StartLinePosition.Line + 1} ({lines} lines)");
            }
        Assert.True(offences.Count == 0, "methods over 60 lines: " + string.Join(", ", offences));
    }

    [Fact]
    public void No_line_in_src_is_over_120_characters()
    {
        var offences = Sources().SelectMany(s => s.Tree.GetText().Lines
                .Where(l => l.Span.Length > 120).Select(l => $"{s.Path}:{l.LineNumber + 1} ({l.Span.Length})"))
            .ToList();
        Assert.True(offences.Count == 0, $"{offences.Count} lines over 120 characters (tools/wrap_long_lines.py breaks them): "
            + string.Join(", ", offences.Take(20)));
    }

    /// <summary>A machine's name, or a figure said to hold "here" or "on this machine": what a comment must not carry.</summary>
    private static readonly Regex MachineSpecific = new(
        @"\b(EPYC|Zen ?\d|Xeon|Ryzen|[HAV]100|H200|RTX ?\d{3,4}|Core i\d|build machine)\b|\d[^.;]*\b(here|on this machine)\b|\b(here|on this machine)\b[^.;]*\d",
        RegexOptions.IgnoreCase);

    [Fact]
    public void No_comment_in_src_holds_a_machine_specific_figure()
    {
        var offences = new List<string>();
        foreach (var (path, tree) in Sources())
            foreach (var trivia in tree.GetRoot().DescendantTrivia(descendIntoTrivia: true))
            {
                if (!trivia.IsKind(SyntaxKind.SingleLineCommentTrivia) && !trivia.IsKind(SyntaxKind.MultiLineCommentTrivia)
                    && !trivia.IsKind(SyntaxKind.SingleLineDocumentationCommentTrivia)) continue;
                foreach (var (line, i) in trivia.ToFullString().Split('\n').Select((l, i) => (l, i)))
                    if (MachineSpecific.Match(line) is { Success: true } m)
                        offences.Add($"{path}:{trivia.GetLocation().GetLineSpan().StartLinePosition.Line + 1 + i} '{m.Value}'");
            }
        Assert.True(offences.Count == 0, "comments with machine-specific figures (they belong in the README, with the command that "
            + "measured them): " + string.Join(", ", offences.Distinct()));
    }

    [Fact]
    public void A_file_named_after_a_type_holds_that_type()
    {
        // A file named X.cs where the code declares a type X must declare X itself (a collection file such as
        // Transforms.cs, named after no type, may hold several).
        static IEnumerable<string> TypesIn(SyntaxTree tree) => tree.GetRoot().DescendantNodes().OfType<BaseTypeDeclarationSyntax>()
            .Select(t => t.Identifier.Text).Concat(tree.GetRoot().DescendantNodes().OfType<DelegateDeclarationSyntax>().Select(d => d.Identifier.Text));
        var sources = Sources().ToList();
        var everyType = sources.SelectMany(s => TypesIn(s.Tree)).ToHashSet();
        var offences = sources
            .Where(s => everyType.Contains(Path.GetFileNameWithoutExtension(s.Path)) && !TypesIn(s.Tree).Contains(Path.GetFileNameWithoutExtension(s.Path)))
            .Select(s => $"{s.Path} holds {string.Join(", ", TypesIn(s.Tree).Distinct())}").ToList();
        Assert.True(offences.Count == 0, "files that do not hold the type they are named after: " + string.Join("; ", offences));
    }
}
