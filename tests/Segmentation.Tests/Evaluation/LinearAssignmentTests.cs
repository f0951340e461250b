using System.Text.Json;
using Segmentation.Evaluation;

namespace Segmentation.Tests.Evaluation;

/// <summary>The linear assignment against brute force on every small shape, and against SciPy's
/// <c>linear_sum_assignment</c> on fixtures (<c>tools/fixtures/make_assignment.py</c>).</summary>
public class LinearAssignmentTests
{
    private static double Total(double[,] cost, (int[] Rows, int[] Columns) a) =>
        a.Rows.Select((r, k) => cost[r, a.Columns[k]]).Sum();

    /// <summary>The least total over every assignment, by enumeration (rows &lt;= columns).</summary>
    private static double BruteForce(double[,] cost)
    {
        int n = cost.GetLength(0), m = cost.GetLength(1);
        if (n > m) return BruteForce(Transpose(cost));
        double best = double.PositiveInfinity;
        var used = new bool[m];
        void Walk(int row, double sum)
        {
            if (row == n) { best = Math.Min(best, sum); return; }
            for (int j = 0; j < m; j++)
            {
                if (used[j]) continue;
                used[j] = true;
                Walk(row + 1, sum + cost[row, j]);
                used[j] = false;
            }
        }
        Walk(0, 0);
        return best;
    }

    private static double[,] Transpose(double[,] a)
    {
        var t = new double[a.GetLength(1), a.GetLength(0)];
        for (int i = 0; i < a.GetLength(0); i++) for (int j = 0; j < a.GetLength(1); j++) t[j, i] = a[i, j];
        return t;
    }

    private static void AssertValid(double[,] cost, (int[] Rows, int[] Columns) a)
    {
        int n = cost.GetLength(0), m = cost.GetLength(1);
        Assert.Equal(Math.Min(n, m), a.Rows.Length);
        Assert.Equal(a.Rows.Length, a.Columns.Length);
        Assert.Equal(a.Rows.OrderBy(r => r), a.Rows); // ascending, as SciPy gives them
        Assert.Equal(a.Rows.Length, a.Rows.Distinct().Count());
        Assert.Equal(a.Columns.Length, a.Columns.Distinct().Count());
        Assert.All(a.Rows, r => Assert.InRange(r, 0, n - 1));
        Assert.All(a.Columns, c => Assert.InRange(c, 0, m - 1));
    }

    [Fact]
    public void Every_small_shape_reaches_the_brute_force_minimum_with_ties_and_negative_costs()
    {
        var random = new Random(34);
        int cases = 0;
        for (int n = 1; n <= 6; n++)
            for (int m = 1; m <= 6; m++)
                for (int trial = 0; trial < 6; trial++)
                {
                    var cost = new double[n, m];
                    for (int i = 0; i < n; i++)
                        for (int j = 0; j < m; j++)
                            cost[i, j] = trial % 3 switch
                            {
                                0 => random.NextDouble(),
                                1 => random.Next(0, 3), // ties: several assignments share the minimum
                                _ => (random.NextDouble() - 0.5) * 1e4,
                            };
                    var a = LinearAssignment.Solve(cost);
                    AssertValid(cost, a);
                    double brute = BruteForce(cost);
                    Assert.True(Math.Abs(Total(cost, a) - brute) <= 1e-9 * Math.Max(1, Math.Abs(brute)),
                        $"{n}x{m} trial {trial}: {Total(cost, a)} against the minimum {brute}");
                    cases++;
                }
        Assert.Equal(6 * 6 * 6, cases);
    }

    [Fact]
    public void Two_hundred_random_matrices_up_to_8x8_reach_the_brute_force_minimum()
    {
        var random = new Random(35);
        for (int trial = 0; trial < 200; trial++)
        {
            int n = random.Next(1, 9), m = random.Next(1, 9);
            if (trial < 8) (n, m) = (8, 8); // the largest shape, every time
            var cost = new double[n, m];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < m; j++)
                    cost[i, j] = trial % 2 == 0 ? random.NextDouble() * 10 - 5 : random.Next(0, 4);
            var a = LinearAssignment.Solve(cost);
            AssertValid(cost, a);
            double brute = BruteForce(cost);
            Assert.True(Math.Abs(Total(cost, a) - brute) <= 1e-9 * Math.Max(1, Math.Abs(brute)),
                $"trial {trial}, {n}x{m}: {Total(cost, a)} against the minimum {brute}");
        }
    }

    /// <summary>SplitMix64 matrices, bit for bit those of <c>tools/fixtures/make_assignment.py</c>.</summary>
    private static IEnumerable<double[,]> SplitMixMatrices(int count, int rows, int cols, ulong seed)
    {
        ulong state = seed;
        for (int k = 0; k < count; k++)
        {
            var cost = new double[rows, cols];
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++)
                {
                    state += 0x9E3779B97F4A7C15;
                    ulong z = state;
                    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
                    z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
                    z ^= z >> 31;
                    cost[i, j] = (z >> 11) * Math.Pow(2, -53) * 5 - 2;
                }
            yield return cost;
        }
    }

    [Fact]
    public void Fifty_random_100x20_matrices_get_SciPys_assignment()
    {
        using var json = JsonDocument.Parse(File.ReadAllText(Fixture("scipy-random-100x20.json")));
        var root = json.RootElement;
        var answers = root.GetProperty("answers").EnumerateArray().ToList();
        Assert.Equal(50, answers.Count);
        int k = 0;
        foreach (var cost in SplitMixMatrices(50, root.GetProperty("rows").GetInt32(), root.GetProperty("cols")
            .GetInt32(), root.GetProperty("seed").GetUInt64()))
        {
            var a = LinearAssignment.Solve(cost);
            AssertValid(cost, a);
            double total = answers[k].GetProperty("total").GetDouble();
            Assert.True(Math.Abs(Total(cost, a) - total) <= 1e-9 * Math.Max(1, Math.Abs(total)),
                $"matrix {k}: {Total(cost, a)} against SciPy's {total}");
            Assert.Equal(answers[k].GetProperty("rows").EnumerateArray().Select(v => v.GetInt32()), a.Rows);
            Assert.Equal(answers[k].GetProperty("cols").EnumerateArray().Select(v => v.GetInt32()), a.Columns);
            k++;
        }
    }

    private static string Fixture(string name)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Segmentation.sln"))) dir = dir.Parent;
        return Path.Combine(dir!.FullName, "tests", "fixtures", "assignment", name);
    }

    [Fact]
    public void SciPys_linear_sum_assignment_gives_the_same_total_and_where_the_minimum_is_unique_the_same_pairs()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Segmentation.sln"))) dir = dir.Parent;
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir!.FullName, "tests", "fixtures",
            "assignment", "scipy.json")));
        int checkedCases = 0;
        foreach (var c in json.RootElement.GetProperty("cases").EnumerateArray())
        {
            var rows = c.GetProperty("cost").EnumerateArray().Select(r => r.EnumerateArray().Select(v => v.GetDouble())
                .ToArray()).ToArray();
            var cost = new double[rows.Length, rows[0].Length];
            for (int i = 0; i < rows.Length; i++) for (int j = 0; j < rows[0].Length; j++) cost[i, j] = rows[i][j];
            var a = LinearAssignment.Solve(cost);
            AssertValid(cost, a);
            string name = c.GetProperty("name").GetString()!;
            double total = c.GetProperty("total").GetDouble();
            Assert.True(Math.Abs(Total(cost, a) - total) <= 1e-9 * Math.Max(1, Math.Abs(total)),
                $"{name}: {Total(cost, a)} against SciPy's {total}");
            if (!name.Contains("ties"))
            {
                Assert.Equal(c.GetProperty("rows").EnumerateArray().Select(v => v.GetInt32()), a.Rows);
                Assert.Equal(c.GetProperty("cols").EnumerateArray().Select(v => v.GetInt32()), a.Columns);
            }
            checkedCases++;
        }
        Assert.Equal(15, checkedCases);
    }

    [Fact]
    public void Forbidden_pairs_are_avoided_and_bad_costs_are_refused_by_position()
    {
        double inf = double.PositiveInfinity;
        var a = LinearAssignment.Solve(new[,] { { 1.0, inf }, { 0.0, 5.0 } }); // the cheap 0 would force the forbidden
        Assert.Equal(new[] { 0, 1 }, a.Columns);
        Assert.Contains("[1, 0] is NaN", Assert.Throws<ArgumentException>(() =>
            LinearAssignment.Solve(new[,] { { 1.0, 2.0 }, { double.NaN, 0.0 } })).Message);
        Assert.Contains("-Infinity", Assert.Throws<ArgumentException>(() =>
            LinearAssignment.Solve(new[,] { { double.NegativeInfinity } })).Message);
        Assert.Contains("no assignment of finite cost", Assert.Throws<ArgumentException>(() =>
            LinearAssignment.Solve(new[,] { { inf, inf }, { 0.0, 1.0 } })).Message);
        var empty = LinearAssignment.Solve(new double[0, 4]);
        Assert.Empty(empty.Rows);
    }
}
