using System.Text.RegularExpressions;

namespace Segmentation.Tests.Integrity;

/// <summary>The house rules that code review would otherwise have to catch: stages know only the stages before them; methods stay short.</summary>
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
        new object[] { "Data", new string[0] },
        new object[] { "Models", new[] { "Data" } },
        new object[] { "Evaluation", new[] { "Data" } },
        new object[] { "Checkpoints", new[] { "Data", "Models", "Evaluation" } },
        new object[] { "Training", new[] { "Data", "Models", "Evaluation", "Checkpoints" } },
        new object[] { "Inference", new[] { "Data", "Models", "Evaluation", "Checkpoints" } },
    };

    [Theory]
    [MemberData(nameof(Stages))]
    public void A_stage_names_only_the_stages_before_it(string stage, string[] allowed)
    {
        var folder = Path.Combine(RepoRoot(), "src", "Segmentation", stage);
        var stages = Stages().Select(s => (string)s[0]).ToList();
        var offences = new List<string>();
        foreach (var file in Directory.EnumerateFiles(folder, "*.cs", SearchOption.AllDirectories))
            foreach (Match m in Regex.Matches(File.ReadAllText(file), @"\bSegmentation\.(\w+)\b"))
            {
                var named = m.Groups[1].Value;
                if (stages.Contains(named) && named != stage && !allowed.Contains(named)) offences.Add($"{Path.GetRelativePath(folder, file)} names Segmentation.{named}");
            }
        Assert.True(offences.Count == 0, string.Join("; ", offences.Distinct()));
    }

    [Fact]
    public void No_method_in_src_is_over_60_lines()
    {
        var root = Path.Combine(RepoRoot(), "src");
        var signature = new Regex(@"^\s*(public|private|internal|protected|static|override)\b[^;=]*\)\s*(where[^{]*)?$");
        var offences = new List<string>();
        foreach (var file in Directory.EnumerateFiles(root, "*.cs", SearchOption.AllDirectories).Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}")))
        {
            var lines = File.ReadAllLines(file);
            for (int i = 0; i + 1 < lines.Length; i++)
            {
                if (!signature.IsMatch(lines[i]) || lines[i + 1].Trim() != "{" || Regex.IsMatch(lines[i], @"\b(class|record|struct|interface)\b")) continue;
                int depth = 0, j = i + 1;
                for (; j < lines.Length; j++)
                {
                    var code = Regex.Replace(Regex.Replace(lines[j], @"'(\\.|[^'\\])'", ""), @"""(\\.|[^""\\])*""", "\"\"");
                    depth += code.Count(c => c == '{') - code.Count(c => c == '}');
                    if (depth == 0) break;
                }
                if (j - i + 1 > 60) offences.Add($"{Path.GetRelativePath(root, file)}:{i + 1} ({j - i + 1} lines)");
            }
        }
        Assert.True(offences.Count == 0, "methods over 60 lines: " + string.Join(", ", offences));
    }
}
