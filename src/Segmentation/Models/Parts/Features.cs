using static TorchSharp.torch;

namespace Segmentation.Models.Parts;

/// <summary>One feature map a part hands on: its name, channels and stride (input size / its size).</summary>
/// <param name="Name">Its name among the part's maps (<c>input</c>, <c>stage1</c>, ..., <c>decoded</c>).</param>
/// <param name="Channels">Channels of the map.</param>
/// <param name="Stride">How many input pixels one of its pixels spans per side: 1, 2, 4, ...</param>
public sealed record FeatureMap(string Name, int Channels, int Stride);

/// <summary>
/// The maps one forward pass of a part gave, by position, by name and by stride, as the part declared them
/// (<see cref="Encoder.Maps"/>, <see cref="Decoder.Maps"/>).
/// </summary>
public sealed class Features
{
    private readonly Tensor[] tensors;

    /// <summary>Pairs the declared maps with the tensors of one pass (as many of each).</summary>
    public Features(IReadOnlyList<FeatureMap> maps, Tensor[] tensors)
    {
        if (maps.Count != tensors.Length)
            throw new ArgumentException($"A part declared {maps.Count} feature map(s) ("
                + $"{string.Join(", ", maps.Select(m => m.Name))}) and gave {tensors.Length}.");
        Maps = maps;
        this.tensors = tensors;
    }

    /// <summary>What each map is, in order.</summary>
    public IReadOnlyList<FeatureMap> Maps { get; }

    /// <summary>How many maps there are.</summary>
    public int Count => tensors.Length;

    /// <summary>The maps in order (an encoder's: the input first, then growing strides).</summary>
    public Tensor[] All => tensors;

    /// <summary>A map by position.</summary>
    public Tensor this[int index] => tensors[index];

    /// <summary>A map by name; a missing name is an error that lists those there are.</summary>
    public Tensor this[string name]
    {
        get
        {
            for (int i = 0; i < Maps.Count; i++) if (Maps[i].Name == name) return tensors[i];
            throw new KeyNotFoundException($"No feature map '{name}'; there are: "
                + $"{string.Join(", ", Maps.Select(m => $"{m.Name} (stride {m.Stride})"))}.");
        }
    }

    /// <summary>The last map of <paramref name="stride"/> (an encoder's input and its first stage may share stride
    /// 1: the stage is the one a decoder wants), or null.</summary>
    public Tensor? AtStride(int stride)
    {
        for (int i = Maps.Count - 1; i >= 0; i--) if (Maps[i].Stride == stride) return tensors[i];
        return null;
    }
}

/// <summary>
/// What a <see cref="Head"/> receives: the input batch (its size), every map of the encoder (the input first) and
/// every map of the decoder (<see cref="Decoded"/>, the first, is the one most heads classify).
/// </summary>
public sealed class HeadInput(Tensor input, Features encoder, Features decoder)
{
    /// <summary>The model's input, N x C x H x W (heads resize their outputs to its height and width).</summary>
    public Tensor Input { get; } = input;

    /// <summary>The encoder's maps, the input first.</summary>
    public Features Encoder { get; } = encoder;

    /// <summary>The decoder's maps.</summary>
    public Features Decoder { get; } = decoder;

    /// <summary>The decoder's first map.</summary>
    public Tensor Decoded => Decoder[0];
}
