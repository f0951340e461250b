namespace Segmentation.Tests.Models;

/// <summary>State-dict keys and shapes written by the reference libraries (<c>tools/interop/fpn_convnext_reference.py
/// --keys tests/fixtures/keys</c>): one "key HxWx..." line each.</summary>
internal static class KeyFixtures
{
    public static List<string> Read(string name)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Segmentation.sln"))) dir = dir.Parent;
        var path = Path.Combine(dir?.FullName ?? throw new InvalidOperationException("The tests run outside the "
            + "repository."), "tests", "fixtures", "keys", name);
        return File.ReadAllLines(path).Where(l => l.Length > 0).ToList();
    }

    /// <summary>"key shape" lines of a state dict, the keys that start with <paramref name="prefix"/>
    /// (dropped).</summary>
    public static List<string> Lines(IEnumerable<KeyValuePair<string, TorchSharp.torch.Tensor>> state, string prefix) =>
        state.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal))
            .Select(kv => $"{kv.Key[prefix.Length..]} {string.Join("x", kv.Value.shape)}").ToList();
}
