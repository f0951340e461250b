namespace Segmentation.Evaluation;

/// <summary>
/// One image as panoptic segments, the form <see cref="InstanceScorer"/> takes: every thing object a segment, every
/// stuff class present one segment, void pixels in none.
/// </summary>
/// <param name="Ids">A segment per pixel (0: none).</param>
/// <param name="Classes">The class of segment i at [i - 1] (-1 for numbers no segment uses).</param>
public sealed record PanopticSegments(int[] Ids, int[] Classes)
{
    /// <summary>
    /// Segments of an image from its objects (<paramref name="objects"/>, 0: none, with <paramref name="objectClass"/>
    /// giving each object's class) and a class per pixel (<paramref name="classes"/>): pixels of a stuff class form
    /// that class's segment; other pixels of no object (thing pixels left over, the boundary class, the ignore label)
    /// belong to none.
    /// </summary>
    public static PanopticSegments Build(ReadOnlySpan<int> objects, Func<int, int> objectClass,
        ReadOnlySpan<byte> classes, IReadOnlyList<bool> things)
    {
        int maxObject = 0;
        foreach (int o in objects) maxObject = Math.Max(maxObject, o);
        var ids = new int[objects.Length];
        var segmentClass = Enumerable.Repeat(-1, maxObject + things.Count).ToArray();
        for (int i = 0; i < objects.Length; i++)
        {
            int o = objects[i], c = classes[i];
            if (o > 0)
            {
                ids[i] = o;
                if (segmentClass[o - 1] < 0) segmentClass[o - 1] = objectClass(o);
            }
            else if (c < things.Count && !things[c])
            {
                ids[i] = maxObject + 1 + c;
                segmentClass[maxObject + c] = c;
            }
        }
        return new PanopticSegments(ids, segmentClass);
    }
}
