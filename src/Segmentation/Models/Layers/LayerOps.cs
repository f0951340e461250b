using Segmentation.Models.Export;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Models.Layers;

/// <summary>
/// The operations a block may apply between its layers (concatenation, addition, ReLU, alignment, resizing, token
/// reshapes). Each computes with libtorch and, while a model is being exported, records its ONNX nodes, so a block
/// written with <see cref="Layer"/>s and these exports without an <c>ExportOnnx</c> of its own. A tensor made by any
/// other operation cannot be exported: the exporter names the layer that received it.
/// </summary>
public static class LayerOps
{
    /// <summary>Concatenation along the channels (dimension 1).</summary>
    public static Tensor Concat(params Tensor[] tensors)
    {
        var y = cat(tensors, 1);
        OnnxTrace.Current?.Op(y, g => g.Concat(tensors.Select(t => g.Trace.NameOf(t, "LayerOps.Concat"))
            .ToArray()));
        return y;
    }

    /// <summary>Element-wise sum; <paramref name="inPlace"/> adds <paramref name="b"/> into <paramref
    /// name="a"/>.</summary>
    public static Tensor Add(Tensor a, Tensor b, bool inPlace = false)
    {
        string? an = null, bn = null;
        if (OnnxTrace.Current is { } t) (an, bn) = (t.NameOf(a, "LayerOps.Add"), t.NameOf(b, "LayerOps.Add"));
        var y = inPlace ? a.add_(b, Scalars.One) : a.add(b, Scalars.One); // no temporary alpha: Scalars
        OnnxTrace.Current?.Op(y, g => g.Add(an!, bn!));
        return y;
    }

    /// <summary>max(x, 0).</summary>
    public static Tensor Relu(Tensor x, bool inPlace = false)
    {
        var name = OnnxTrace.Current?.NameOf(x, "LayerOps.Relu");
        var y = F.relu(x, inPlace);
        OnnxTrace.Current?.Op(y, g => g.Relu(name!));
        return y;
    }

    /// <summary>
    /// Pads (or crops, where negative) <paramref name="x"/> to the height and width of <paramref name="like"/>,
    /// centred: half before, the rest after. In an export the amounts come from both shapes when the graph runs.
    /// </summary>
    public static Tensor AlignTo(Tensor x, Tensor like)
    {
        long dy = like.shape[2] - x.shape[2], dx = like.shape[3] - x.shape[3];
        // Already aligned: the map itself (no copy, no view), as the decoders always did.
        var y = dy == 0 && dx == 0 ? x : F.pad(x, new[] { dx / 2, dx - dx / 2, dy / 2, dy - dy / 2 });
        OnnxTrace.Current?.Op(y, g => g.AlignTo(g.Trace.NameOf(x, "LayerOps.AlignTo"),
            g.Trace.NameOf(like, "LayerOps.AlignTo")));
        return y;
    }

    /// <summary>Bilinear resize to the height and width of <paramref name="like"/> (corners not aligned, as PyTorch's
    /// default).</summary>
    public static Tensor ResizeLike(Tensor x, Tensor like)
    {
        var y = F.interpolate(x, new[] { like.shape[2], like.shape[3] }, mode: InterpolationMode.Bilinear,
            align_corners: false);
        OnnxTrace.Current?.Op(y, g => g.ResizeLike(g.Trace.NameOf(x, "LayerOps.ResizeLike"),
            g.Trace.NameOf(like, "LayerOps.ResizeLike")));
        return y;
    }

    /// <summary>N x C x H x W to the tokens N x HW x C a transformer block takes.</summary>
    public static Tensor ToTokens(Tensor x)
    {
        var y = x.flatten(2).transpose(1, 2);
        OnnxTrace.Current?.Op(y, g => g.ToTokens(g.Trace.NameOf(x, "LayerOps.ToTokens")));
        return y;
    }

    /// <summary>Tokens N x HW x C back to a map N x C x H x W with the height and width of <paramref
    /// name="like"/>.</summary>
    public static Tensor ToMap(Tensor tokens, Tensor like)
    {
        var y = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], like.shape[2], like.shape[3]);
        OnnxTrace.Current?.Op(y, g => g.ToMap(g.Trace.NameOf(tokens, "LayerOps.ToMap"),
            g.Trace.NameOf(like, "LayerOps.ToMap")));
        return y;
    }

    /// <summary>Tokens N x L x (heads d) to N x heads x L x d, for <see cref="Attention"/>.</summary>
    public static Tensor SplitHeads(Tensor tokens, int heads)
    {
        long n = tokens.shape[0], l = tokens.shape[1], d = tokens.shape[2] / heads;
        var y = tokens.reshape(n, l, heads, d).transpose(1, 2);
        OnnxTrace.Current?.Op(y, g => g.SplitHeads(g.Trace.NameOf(tokens, "LayerOps.SplitHeads"), heads,
            d));
        return y;
    }

    /// <summary>A boolean mask, true where a query may not see a key (Hugging Face's Mask2Former convention), as the
    /// additive mask <see cref="Attention"/> takes: -∞ there, 0 elsewhere, as float32.</summary>
    public static Tensor AttentionBias(Tensor blocked)
    {
        if (blocked.dtype != ScalarType.Bool)
            throw new ArgumentException($"AttentionBias takes a boolean mask; got {blocked.dtype}.");
        var y = zeros(blocked.shape, ScalarType.Float32, blocked.device).masked_fill(blocked, float.NegativeInfinity);
        OnnxTrace.Current?.Op(y, g => g.AttentionBias(g.Trace.NameOf(blocked, "LayerOps.AttentionBias")));
        return y;
    }

    /// <summary>N x heads x L x d back to tokens N x L x (heads d).</summary>
    public static Tensor MergeHeads(Tensor x)
    {
        long n = x.shape[0], heads = x.shape[1], l = x.shape[2], d = x.shape[3];
        var y = x.transpose(1, 2).reshape(n, l, heads * d);
        OnnxTrace.Current?.Op(y, g => g.MergeHeads(g.Trace.NameOf(x, "LayerOps.MergeHeads"), heads * d));
        return y;
    }
}
