using Segmentation.Data;

namespace Segmentation.Tasks;

/// <summary>
/// The tasks by name: what the data's description says it is (<see cref="DatasetDescription.Task"/>, as records
/// write it: "semantic", "instance", "panoptic") to the task that trains, evaluates and decodes it. Each built-in
/// task is one line here; a task of another kind is one more.
/// </summary>
internal static class TaskRegistry
{
    private static readonly Dictionary<string, Func<DatasetDescription, SegmentationTask>> Tasks =
        new(StringComparer.Ordinal);

    static TaskRegistry()
    {
        Add("semantic", _ => SemanticSegmentation.Instance);
        Add("instance", d => new InstanceSegmentation(Settings(d), panoptic: false));
        Add("panoptic", d => new InstanceSegmentation(Settings(d), panoptic: true));
    }

    /// <summary>Registers the task of data whose kind is <paramref name="name"/>; a name is registered once.</summary>
    public static void Add(string name, Func<DatasetDescription, SegmentationTask> create)
    {
        lock (Tasks)
        {
            if (!Tasks.TryAdd(name, create))
                throw new InvalidOperationException($"A task named '{name}' is registered already.");
        }
    }

    /// <summary>The names registered, in order.</summary>
    public static IReadOnlyList<string> Names
    {
        get { lock (Tasks) return Tasks.Keys.OrderBy(k => k, StringComparer.Ordinal).ToList(); }
    }

    /// <summary>The name of the kind of data <paramref name="d"/> describes.</summary>
    public static string NameOf(DatasetDescription d) => d.Task.ToString().ToLowerInvariant();

    /// <summary>The task of data described by <paramref name="d"/>.</summary>
    public static SegmentationTask For(DatasetDescription d)
    {
        Func<DatasetDescription, SegmentationTask>? create;
        lock (Tasks) Tasks.TryGetValue(NameOf(d), out create);
        return create?.Invoke(d) ?? throw new OptionsException($"No task is registered for {NameOf(d)} data "
            + $"(registered: {string.Join(", ", Names)}).");
    }

    private static InstanceSettings Settings(DatasetDescription d) => d.Instances ?? throw new DataException(
        $"The data is {NameOf(d)} data but its description holds no instance settings.");
}
