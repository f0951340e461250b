using System.Globalization;
using Segmentation.Cli;
using Segmentation.Tests.Cli;

namespace Segmentation.Tests.Integrity;

/// <summary>Issue 33, class 2: every numeric flag of every command is checked against what it means, at parse time,
/// before any work starts, with a message that names the flag, the value and what fits.</summary>
public class NumericFlagTests
{
    private static List<(string Path, string Name, NumericFlags.Range Range, Type Type)> All()
    {
        var (root, _) = Segmentation.Cli.Cli.Commands(new CommandContext(TextWriter.Null, TextWriter.Null, false,
            false));
        return NumericFlags.NumericOptions(root).Select(x => (x.Path, x.Option.Name,
            NumericFlags.RangeOf(x.Path, x.Option.Name)!, Nullable.GetUnderlyingType(x.Option.ValueType)
            ?? x.Option.ValueType)).ToList();
    }

    [Fact]
    public void Every_numeric_flag_of_every_command_has_a_range()
    {
        var all = All();
        Assert.True(all.Count > 60, $"only {all.Count} numeric flags found");
        Assert.All(all, f => Assert.NotNull(f.Range));
    }

    /// <summary>Values just outside each flag's range, and NaN for the real-valued ones: each refused with exit 2
    /// and the flag's name, before the command runs (nothing is written: the output folders stay absent).</summary>
    [Fact]
    public void A_value_outside_its_range_is_refused_by_name_for_every_flag_of_every_command()
    {
        using var d = new TempDir();
        var inv = CultureInfo.InvariantCulture;
        int checkedCount = 0;
        foreach (var (path, name, range, type) in All())
        {
            bool integer = type == typeof(int) || type == typeof(long);
            var candidates = new List<double> { range.MinOpen ? range.Min : range.Min - 1,
                range.MaxOpen ? range.Max : range.Max + 1 };
            if (!integer) candidates.Add(double.NaN);
            foreach (var v in candidates)
            {
                // what the flag's type cannot hold is the parser's error, not the range's
                if (type == typeof(int) && !(v >= int.MinValue && v <= int.MaxValue)) continue;
                string value = v.ToString("R", inv);
                var args = path.Split(' ').Concat(new[] { name, value, "--out", d["never"] }).ToArray();
                var r = CliResult.Run(args);
                Assert.True(r.Code == 2, $"{path} {name} {value}: exit {r.Code}\n{r.Err}");
                Assert.Contains($"{name} {value}: expected", r.Err);
                Assert.False(Directory.Exists(d["never"]), $"{path} {name} {value} started work");
                checkedCount++;
            }
        }
        Assert.True(checkedCount > 100, $"{checkedCount} cases");
    }

    [Theory]
    [InlineData("train", "--epochs", "1")]
    [InlineData("train", "--val-split", "0")]
    [InlineData("train", "--lr", "0.003")]
    [InlineData("bench train", "--warmup", "2")]
    public void Values_in_range_pass_the_check(string path, string name, string value)
    {
        Assert.True(NumericFlags.RangeOf(path, name)!.Holds(double.Parse(value, CultureInfo.InvariantCulture)));
    }
}
