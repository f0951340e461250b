namespace Segmentation.Models.Layers;

/// <summary>Normalisation after each convolution of a block.</summary>
public enum NormLayer
{
    /// <summary>Batch normalisation (<see cref="BatchNorm"/>).</summary>
    Batch,
    /// <summary>Group normalisation with up to 32 groups, for small batches (<see cref="GroupNorm"/>).</summary>
    Group,
    /// <summary>None; the convolutions get a bias instead.</summary>
    None,
}

/// <summary>Builds the layer a <see cref="NormLayer"/> names.</summary>
internal static class NormLayers
{
    /// <summary>The normalisation layer for <paramref name="channels"/>, or null for <see
    /// cref="NormLayer.None"/>.</summary>
    public static Layer? Create(NormLayer norm, long channels) => norm switch
    {
        NormLayer.Batch => new BatchNorm(channels),
        NormLayer.Group => new GroupNorm(GroupNorm.GroupsFor(channels), channels),
        _ => null,
    };
}
