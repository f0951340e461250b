using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace Segmentation.Cli;

/// <summary>
/// Every numeric flag of every command checked against what it means, at parse time, before any work starts: a value
/// outside its range is a usage error (exit 2) that names the flag, the value and what fits. The ranges sit here, one
/// table for the whole tool; <see cref="Attach"/> refuses to build a command tree with a numeric flag the table does
/// not know, so a new flag cannot skip the check (a test walks them all).
/// </summary>
internal static class NumericFlags
{
    /// <summary>What a numeric flag may be: [Min, Max], either end open when said, and what the value is.</summary>
    internal sealed record Range(double Min, double Max, string Meaning, bool MinOpen = false, bool MaxOpen = false)
    {
        public bool Holds(double v) => (MinOpen ? v > Min : v >= Min) && (MaxOpen ? v < Max : v <= Max);

        /// <summary>"1 to 256", "above 0 and at most 10", "0 up to (not including) 1".</summary>
        public string Describe()
        {
            string F(double x) => x.ToString("G", CultureInfo.InvariantCulture);
            string low = MinOpen ? $"above {F(Min)}" : F(Min), high = MaxOpen ? $"below {F(Max)}" : F(Max);
            return MinOpen || MaxOpen ? $"{(MinOpen ? low : $"at least {low}")} and {(MaxOpen ? high
                : $"at most {high}")}" : $"{low} to {high}";
        }
    }

    private const double Many = 1e9;

    /// <summary>The ranges by flag name; <c>"command --flag"</c> where one name means two things.</summary>
    internal static readonly IReadOnlyDictionary<string, Range> Ranges = new Dictionary<string, Range>
    {
        ["--accumulate"] = new(1, 4096, "batches per optimiser step"),
        ["--base-channels"] = new(1, 4096, "channels of the first level"),
        ["--full-res-skip"] = new(0, 1024, "channels of the full-resolution skip (0: none)"),
        ["--batch-size"] = new(1, 65536, "images per step"),
        ["--binary-threshold"] = new(1, 255, "the gray level from which a pixel is foreground"),
        ["--boundary-weight"] = new(0, 1000, "the loss weight of the boundary class", MinOpen: true),
        ["--boundary-width"] = new(1, 16, "pixels"),
        ["--cache-mb"] = new(0, 1 << 24, "MiB of decoded samples kept in memory"),
        ["--classes"] = new(1, 256, "classes (masks are 8-bit)"),
        ["--clip"] = new(0, Many, "the largest gradient norm", MinOpen: true),
        ["--depth"] = new(1, 8, "down-samplings"),
        ["--dist-timeout"] = new(1, 7 * 86400, "seconds"),
        ["--dropout"] = new(0, 1, "a probability", MaxOpen: true),
        ["--ema"] = new(0, 1, "a decay", MinOpen: true, MaxOpen: true),
        ["--encoder-lr-scale"] = new(0, 1000, "a share of --lr"),
        ["--epochs"] = new(1, Many, "epochs"),
        ["--eval-every"] = new(1, Many, "epochs between evaluations"),
        ["--focal-gamma"] = new(0, 100, "the focal loss's exponent"),
        ["--freeze-encoder-epochs"] = new(0, Many, "epochs"),
        ["--ignore-index"] = new(0, 255, "a mask value"),
        ["--images"] = new(1, 1e7, "images"),
        ["--in-channels"] = new(1, 64, "image channels"),
        ["--label-smoothing"] = new(0, 1, "a share of the target", MaxOpen: true),
        ["--lr"] = new(0, 100, "a learning rate", MinOpen: true),
        ["--max-pixels"] = new(1, 1e12, "pixels"),
        ["--min-object-size"] = new(1, Many, "pixels"),
        ["--nproc"] = new(1, 4096, "processes (and at most this machine's cores)"),
        ["--objects"] = new(1, 1e6, "objects"),
        ["--patience"] = new(1, Many, "evaluations"),
        ["--poly-power"] = new(0, 100, "the poly schedule's exponent", MinOpen: true),
        ["--rounds"] = new(1, 1e6, "rounds"),
        ["--seed"] = new(0, int.MaxValue, "a seed"),
        ["--split-seed"] = new(0, int.MaxValue, "a seed"),
        ["--seed-threshold"] = new(0, 1, "a probability", MinOpen: true, MaxOpen: true),
        ["--size"] = new(16, 1 << 15, "pixels a side"),
        ["--steps"] = new(1, 1e7, "steps"),
        ["--threads"] = new(1, 4096, "threads"),
        ["--val-batch-size"] = new(1, 65536, "images per validation batch"),
        ["--val-split"] = new(0, 1, "a share of the data", MaxOpen: true),
        ["--warmup"] = new(0, 1, "a share of all steps", MaxOpen: true),
        ["bench train --warmup"] = new(0, 1e6, "untimed steps"),
        ["--weight-decay"] = new(0, 100, "a weight decay"),
        ["--workers"] = new(0, 1024, "loader threads (0: one per core)"),
        ["--worst"] = new(0, 1e4, "images"),
    };

    private static readonly Type[] Numeric = [typeof(int), typeof(int?), typeof(long), typeof(long?),
        typeof(double), typeof(double?), typeof(float), typeof(float?)];

    /// <summary>Adds the range check to every numeric option under <paramref name="root"/>; an option without a range
    /// here is a bug (<see cref="InvalidOperationException"/>).</summary>
    public static void Attach(Command root)
    {
        var seen = new HashSet<Option>();
        foreach (var (path, option) in NumericOptions(root))
        {
            if (!seen.Add(option)) continue;
            var range = RangeOf(path, option.Name) ?? throw new InvalidOperationException(
                $"'{path} {option.Name}' is a numeric flag without a range in NumericFlags.Ranges.");
            option.Validators.Add(result => Check(result, option.Name, range));
        }
    }

    /// <summary>The range of <paramref name="name"/> under the command <paramref name="path"/> ("bench
    /// train").</summary>
    internal static Range? RangeOf(string path, string name) =>
        Ranges.GetValueOrDefault($"{path} {name}") ?? Ranges.GetValueOrDefault(name);

    /// <summary>Every numeric option, with the path of the command it is on ("train", "bench train").</summary>
    internal static IEnumerable<(string Path, Option Option)> NumericOptions(Command command, string path = "")
    {
        foreach (var o in command.Options)
            if (Numeric.Contains(o.ValueType)) yield return (path, o);
        foreach (var sub in command.Subcommands)
            foreach (var x in NumericOptions(sub, path.Length == 0 ? sub.Name : $"{path} {sub.Name}")) yield return x;
    }

    private static void Check(OptionResult result, string name, Range range)
    {
        if (result.Tokens.Count == 0) return; // the default
        var text = result.Tokens[^1].Value;
        // a value that is not a number is the parser's own error
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v)) return;
        if (!range.Holds(v))
            result.AddError($"{name} {text}: expected {range.Describe()} ({range.Meaning}).");
    }
}
