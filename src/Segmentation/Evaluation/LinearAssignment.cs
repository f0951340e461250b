namespace Segmentation.Evaluation;

/// <summary>
/// The minimum-cost assignment of rows to columns (the Hungarian method as shortest augmenting paths with potentials,
/// Kuhn-Munkres in Jonker and Volgenant's form, O(n^2 m)): what SciPy's <c>linear_sum_assignment</c> computes, and
/// what MaskFormer and Mask2Former match queries to objects with. Exact: the total is the minimum over all
/// assignments (tests compare with brute force and with SciPy's results on fixtures).
/// </summary>
public static class LinearAssignment
{
    /// <summary>
    /// Assigns each row to a distinct column (or each column to a distinct row, when there are more rows) so that the
    /// total cost is least. Returns the pairs as SciPy does: <c>Rows</c> ascending, <c>Columns[k]</c> the column of
    /// <c>Rows[k]</c>, min(rows, columns) pairs. A cost of +infinity forbids a pair; NaN and -infinity are refused, as
    /// is a matrix with no assignment of finite cost.
    /// </summary>
    public static (int[] Rows, int[] Columns) Solve(double[,] cost)
    {
        int n = cost.GetLength(0), m = cost.GetLength(1);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
                if (double.IsNaN(cost[i, j]) || double.IsNegativeInfinity(cost[i, j]))
                    throw new ArgumentException($"Assignment cost [{i}, {j}] is "
                        + $"{cost[i, j].ToString(System.Globalization.CultureInfo.InvariantCulture)}; costs must be "
                        + $"numbers "
                        + "or +infinity (a forbidden pair).", nameof(cost));
        if (n == 0 || m == 0) return (Array.Empty<int>(), Array.Empty<int>());
        if (n <= m) return (Enumerable.Range(0, n).ToArray(), Assign(n, m, (i, j) => cost[i, j]));
        var byColumn = Assign(m, n, (i, j) => cost[j, i]); // transposed: each column gets a row
        var pairs = Enumerable.Range(0, m).Select(c => (Row: byColumn[c], Column: c)).OrderBy(p => p.Row).ToArray();
        return (pairs.Select(p => p.Row).ToArray(), pairs.Select(p => p.Column).ToArray());
    }

    /// <summary>Shortest augmenting paths for n &lt;= m: the column of each row.</summary>
    private static int[] Assign(int n, int m, Func<int, int, double> a)
    {
        // 1-based: row 0 and column 0 are the path's root
        var u = new double[n + 1];
        var v = new double[m + 1];
        var rowOf = new int[m + 1];    // the row assigned to each column (0: none)
        var way = new int[m + 1];      // the previous column on the shortest path
        var minv = new double[m + 1];
        var used = new bool[m + 1];
        for (int i = 1; i <= n; i++)
        {
            rowOf[0] = i;
            int j0 = 0;
            Array.Fill(minv, double.PositiveInfinity);
            Array.Clear(used);
            do
            {
                used[j0] = true;
                int i0 = rowOf[j0], j1 = -1;
                double delta = double.PositiveInfinity;
                for (int j = 1; j <= m; j++)
                {
                    if (used[j]) continue;
                    double reduced = a(i0 - 1, j - 1) - u[i0] - v[j];
                    if (reduced < minv[j]) { minv[j] = reduced; way[j] = j0; }
                    if (minv[j] < delta) { delta = minv[j]; j1 = j; }
                }
                if (j1 < 0)
                    throw new ArgumentException($"The cost matrix ({n} x {m}) has no assignment of finite cost: row "
                        + $"{i - 1} can reach no free column.", "cost");
                for (int j = 0; j <= m; j++)
                {
                    if (used[j]) { u[rowOf[j]] += delta; v[j] -= delta; }
                    else minv[j] -= delta;
                }
                j0 = j1;
            }
            while (rowOf[j0] != 0);
            do { int j1 = way[j0]; rowOf[j0] = rowOf[j1]; j0 = j1; } while (j0 != 0);
        }
        var columnOf = new int[n];
        for (int j = 1; j <= m; j++) if (rowOf[j] != 0) columnOf[rowOf[j] - 1] = j - 1;
        return columnOf;
    }
}
