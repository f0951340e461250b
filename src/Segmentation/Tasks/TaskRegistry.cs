using Segmentation.Data;
using Segmentation.Models;

namespace Segmentation.Tasks;

/// <summary>
/// The tasks by name: what the data's description says it is (<see cref="DatasetDescription.Task"/>, as records
/// write it: "semantic", "instance", "panoptic") to the task that trains, evaluates and decodes it. Each built-in
/// task is one line here; a task of another kind is one more.
/// </summary>
internal static class TaskRegistry
{
    private static readonly Dictionary<(string Name, bool Queries), Func<DatasetDescription, SegmentationTask>> Tasks =
        new();

    static TaskRegistry()
    {
        Add("semantic", _ => SemanticSegmentation.Instance);
        Add("instance", d => new InstanceSegmentation(Settings(d), panoptic: false));
        Add("panoptic", d => new InstanceSegmentation(Settings(d), panoptic: true));
        Add("instance", d => new MaskClassificationTask(d, panoptic: false), forQueries: true);
        Add("panoptic", d => new MaskClassificationTask(d, panoptic: true), forQueries: true);
    }

    /// <summary>Registers the task of data whose kind is <paramref name="name"/>, for models that give class logits
    /// per pixel or, with <paramref name="forQueries"/>, for mask classifiers (per-query class and mask logits); a name
    /// is registered once for each. A mask classifier whose data kind has no task of its own takes the per-pixel one
    /// (its semantic scores are class logits per pixel).</summary>
    public static void Add(string name, Func<DatasetDescription, SegmentationTask> create, bool forQueries = false)
    {
        lock (Tasks)
        {
            if (!Tasks.TryAdd((name, forQueries), create))
                throw new InvalidOperationException($"A task named "
                    + $"'{name}'{(forQueries ? " for mask classifiers" : "")}"
                    + " is registered already.");
        }
    }

    /// <summary>The names registered, in order.</summary>
    public static IReadOnlyList<string> Names
    {
        get { lock (Tasks) return Tasks.Keys.Select(k => k.Name).Distinct().OrderBy(k => k, StringComparer.Ordinal)
            .ToList(); }
    }

    /// <summary>The name of the kind of data <paramref name="d"/> describes.</summary>
    public static string NameOf(DatasetDescription d) => d.Task.ToString().ToLowerInvariant();

    /// <summary>The task of data described by <paramref name="d"/>, for a model that gives outputs of the kinds
    /// <paramref name="gives"/> (null: class logits per pixel).</summary>
    public static SegmentationTask For(DatasetDescription d, IEnumerable<OutputKind>? gives = null)
    {
        bool queries = gives?.Contains(OutputKind.QueryClassLogits) ?? false;
        Func<DatasetDescription, SegmentationTask>? create;
        lock (Tasks)
        {
            if (!queries || !Tasks.TryGetValue((NameOf(d), true), out create))
                Tasks.TryGetValue((NameOf(d), false), out create);
        }
        return create?.Invoke(d) ?? throw new OptionsException($"No task is registered for {NameOf(d)} data "
            + $"(registered: {string.Join(", ", Names)}).");
    }

    /// <summary>The task of data described by <paramref name="d"/> for <paramref name="model"/>.</summary>
    public static SegmentationTask For(DatasetDescription d, ModelDescription model) =>
        For(d, ModelRegistry.OutputKinds(model));

    private static InstanceSettings Settings(DatasetDescription d) => d.Instances ?? throw new DataException(
        $"The data is {NameOf(d)} data but its description holds no instance settings.");
}
