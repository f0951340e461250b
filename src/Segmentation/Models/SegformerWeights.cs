using System.Text.RegularExpressions;
using Segmentation.Models.Decoders;
using Segmentation.Models.Encoders;
using static TorchSharp.torch;

namespace Segmentation.Models;

/// <summary>
/// SegFormer state dicts in any of the layouts they are published in, as Hugging Face's keys (the model's own):
/// <list type="bullet">
/// <item>Hugging Face's (<c>segformer.encoder.block.0.0.attention.self.query.weight</c>, <c>decode_head.*</c>);</item>
/// <item>the original one of NVlabs/SegFormer, which mmsegmentation 0.x's SegFormer checkpoints and
/// segmentation_models.pytorch's <c>mit_b*</c> encoders keep: <c>patch_embed1..4</c>, <c>block1..4</c>,
/// <c>norm1..4</c>, a fused <c>attn.kv</c> (keys then values, split here), <c>decode_head.linear_c1..4</c>,
/// <c>linear_fuse.conv</c>/<c>.bn</c>, <c>linear_pred</c>; the encoder under <c>backbone.</c> (a segmentation
/// checkpoint), <c>encoder.</c> (smp) or nothing (the ImageNet-trained <c>mit_b*.pth</c>).</item>
/// </list>
/// What no SegFormer segmentation model has is dropped by name: an ImageNet classifier (<c>head.*</c>,
/// <c>classifier.*</c>) and mmsegmentation's unused <c>decode_head.conv_seg.*</c>. Any other key is an error.
/// </summary>
internal static class SegformerWeights
{
    /// <summary>The prefix of the encoder's keys.</summary>
    public const string Encoder = "segformer.encoder.";

    private static readonly (Regex Pattern, Func<Match, string> Key)[] Original =
    {
        (new(@"^patch_embed(\d)\.(proj|norm)\.(.+)$"), m => $"{Encoder}patch_embeddings.{Stage(m)}."
            + $"{(m.Groups[2].Value == "norm" ? "layer_norm" : "proj")}.{m.Groups[3].Value}"),
        (new(@"^block(\d)\.(\d+)\.(norm1|norm2|attn\.q|attn\.proj|attn\.sr|attn\.norm|mlp\.fc1|mlp\.fc2"
            + @"|mlp\.dwconv\.dwconv)\.(.+)$"),
            m => $"{Encoder}block.{Stage(m)}.{m.Groups[2].Value}.{Layer(m.Groups[3].Value)}.{m.Groups[4].Value}"),
        (new(@"^norm(\d)\.(.+)$"), m => $"{Encoder}layer_norm.{Stage(m)}.{m.Groups[2].Value}"),
        (new(@"^decode_head\.linear_c(\d)\.proj\.(.+)$"), m => $"decode_head.linear_c.{Stage(m)}.proj."
            + m.Groups[2].Value),
        (new(@"^decode_head\.linear_fuse\.conv\.weight$"), _ => "decode_head.linear_fuse.weight"),
        (new(@"^decode_head\.linear_fuse\.bn\.(.+)$"), m => $"decode_head.batch_norm.{m.Groups[1].Value}"),
        (new(@"^decode_head\.linear_pred\.(.+)$"), m => $"decode_head.classifier.{m.Groups[1].Value}"),
    };

    private static readonly Regex FusedKv = new(@"^block(\d)\.(\d+)\.attn\.kv\.(weight|bias)$");
    private static readonly Regex Dropped = new(@"^(head|classifier|decode_head\.conv_seg)\.");
    private static readonly Regex AnyDecoder = new(@"^(decode_head|decoder|segmentation_head|auxiliary_head)\.");

    private static int Stage(Match m) => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)
        - 1;

    private static string Layer(string original) => original switch
    {
        "norm1" => "layer_norm_1",
        "norm2" => "layer_norm_2",
        "attn.q" => "attention.self.query",
        "attn.proj" => "attention.output.dense",
        "attn.sr" => "attention.self.sr",
        "attn.norm" => "attention.self.layer_norm",
        "mlp.fc1" => "mlp.dense1",
        "mlp.fc2" => "mlp.dense2",
        _ => original, // mlp.dwconv.dwconv
    };

    /// <summary>
    /// <paramref name="source"/> (read from <paramref name="path"/>) with Hugging Face's keys; the fused key-value
    /// projections split in two. Keys of neither layout are an error that names them; with <paramref
    /// name="encoderOnly"/>, any decoder's keys (<c>decode_head.</c>, <c>decoder.</c>, <c>segmentation_head.</c>,
    /// <c>auxiliary_head.</c>) are dropped instead, for a whole model whose encoder alone is wanted.
    /// </summary>
    public static Dictionary<string, Tensor> ToHuggingFace(IReadOnlyDictionary<string, Tensor> source, string path,
        bool encoderOnly = false)
    {
        var result = new Dictionary<string, Tensor>();
        var unknown = new List<string>();
        foreach (var (fullKey, value) in source)
        {
            var key = Unprefixed(fullKey);
            if (Dropped.IsMatch(key) || (encoderOnly && AnyDecoder.IsMatch(key))) continue;
            if (key.StartsWith(Encoder, StringComparison.Ordinal) || key.StartsWith("decode_head.linear_c.",
                    StringComparison.Ordinal) || key.StartsWith("decode_head.linear_fuse.weight",
                        StringComparison.Ordinal)
                || key.StartsWith("decode_head.batch_norm.", StringComparison.Ordinal)
                || key.StartsWith("decode_head.classifier.", StringComparison.Ordinal))
            {
                result[key] = value; // Hugging Face's already
                continue;
            }
            if (FusedKv.Match(key) is { Success: true } kv && kv.Groups[1].Value is ['1' or '2' or '3' or '4'])
            {
                // keys then values, each as wide as the stage (NVlabs: kv(x).reshape(B, N, 2, heads, C / heads))
                if (value.shape.Length == 0 || value.shape[0] % 2 != 0)
                    throw new SegmentationException($"{path}: {fullKey} has shape [{string.Join(", ", value.shape)}]; "
                        + $"a fused key-value projection has an even number of rows (keys, then values).");
                long half = value.shape[0] / 2;
                var prefix = $"{Encoder}block.{Stage(kv)}.{kv.Groups[2].Value}.attention.self.";
                result[prefix + "key." + kv.Groups[3].Value] = value.narrow(0, 0, half);
                result[prefix + "value." + kv.Groups[3].Value] = value.narrow(0, half, half);
                continue;
            }
            var mapped = Original.Select(o => (o.Key, Match: o.Pattern.Match(key)))
                .FirstOrDefault(x => x.Match.Success);
            if (mapped.Match is null || mapped.Match.Groups[1].Value is ['0' or '5' or '6' or '7' or '8' or '9'])
                unknown.Add(fullKey); // no match, or a stage other than 1 to 4
            else result[mapped.Key(mapped.Match)] = value;
        }
        if (unknown.Count > 0)
            throw new SegmentationException($"{path}: {unknown.Count} key(s) are none of a SegFormer's (Hugging Face's "
                + $"segformer.encoder.*/decode_head.*, or the original patch_embed1..4, block1..4, norm1..4, "
                + $"decode_head.linear_c1..4/linear_fuse/linear_pred): {string.Join(", ", unknown.Take(5))}"
                + $"{(unknown.Count > 5 ? ", ..." : "")}.");
        if (!result.Keys.Any(k => k.StartsWith(Encoder, StringComparison.Ordinal)))
            throw new SegmentationException($"{path}: holds no Mix Transformer encoder weights.");
        return result;
    }

    /// <summary>The key without a wrapper's prefix: <c>module.</c> (DataParallel), <c>backbone.</c> (mmsegmentation),
    /// <c>encoder.</c> (smp); an original encoder key gets nothing more, a Hugging Face one is whole.</summary>
    private static string Unprefixed(string key)
    {
        if (key.StartsWith("module.", StringComparison.Ordinal)) key = key["module.".Length..];
        foreach (var prefix in new[] { "backbone.", "encoder." })
            if (key.StartsWith(prefix, StringComparison.Ordinal)) return key[prefix.Length..];
        return key;
    }

    /// <summary>The encoder's weights alone, keyed as the encoder's own state dict (no <c>segformer.encoder.</c>
    /// prefix).</summary>
    public static Dictionary<string, Tensor> EncoderOnly(IReadOnlyDictionary<string, Tensor> weights) =>
        weights.Where(kv => kv.Key.StartsWith(Encoder, StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key[Encoder.Length..], kv => kv.Value);

    /// <summary>Whether <paramref name="weights"/> (Hugging Face's keys) hold a decode head.</summary>
    public static bool HasDecodeHead(IReadOnlyDictionary<string, Tensor> weights) =>
        weights.ContainsKey("decode_head.classifier.weight");

    /// <summary>
    /// The Mix Transformer variant whose widths and depths <paramref name="weights"/> (Hugging Face's keys) have, and
    /// the input channels of its first patch embedding; an error naming <paramref name="path"/> when they are none of
    /// B0 to B5.
    /// </summary>
    public static (string Variant, int InChannels) Variant(IReadOnlyDictionary<string, Tensor> weights, string path)
    {
        var hidden = new int[4];
        var depths = new int[4];
        for (int i = 0; i < 4; i++)
        {
            var proj = $"{Encoder}patch_embeddings.{i}.proj.weight";
            if (!weights.TryGetValue(proj, out var w) || w.shape.Length != 4)
                throw new SegmentationException($"{path}: no 4-d {proj} (or the original patch_embed{i + 1}.proj"
                    + $".weight).");
            hidden[i] = (int)w.shape[0];
            var stage = $"{Encoder}block.{i}.";
            depths[i] = weights.Keys.Where(k => k.StartsWith(stage, StringComparison.Ordinal))
                .Select(k => k[stage.Length..].Split('.')[0]).Distinct().Count();
        }
        var variant = MixTransformer.Variants.FirstOrDefault(v => MixTransformer.Variant(v).Hidden.SequenceEqual(hidden)
            && MixTransformer.Variant(v).Depths.SequenceEqual(depths))
            ?? throw new SegmentationException($"{path}: a Mix Transformer with hidden sizes "
                + $"[{string.Join(", ", hidden)}] and depths [{string.Join(", ", depths)}], which is none of MiT-B0 to "
                + $"B5.");
        return (variant, (int)weights[$"{Encoder}patch_embeddings.0.proj.weight"].shape[1]);
    }

    /// <summary>
    /// The model a whole SegFormer state dict (Hugging Face's keys, with its decode head) describes: the variant, the
    /// decode head's width and the classes from the tensors' shapes.
    /// </summary>
    public static ModelDescription Describe(IReadOnlyDictionary<string, Tensor> weights, string path)
    {
        var (variant, inChannels) = Variant(weights, path);
        if (!HasDecodeHead(weights))
            throw new SegmentationException($"{path}: a Mix Transformer encoder without a decode head (an ImageNet "
                + $"checkpoint such as mit_b0.pth or nvidia/{variant}); start a model from it with segment train "
                + $"--arch segformer --encoder {variant} --encoder-weights {path}.");
        if (!weights.TryGetValue("decode_head.linear_c.0.proj.weight", out var first) || first.shape.Length != 2)
            throw new SegmentationException($"{path}: no 2-d decode_head.linear_c.0.proj.weight (or the original "
                + $"decode_head.linear_c1.proj.weight).");
        return new ModelDescription
        {
            Architecture = "segformer", InChannels = inChannels,
            Classes = (int)weights["decode_head.classifier.weight"].shape[0],
            Encoder = new ModelPart(variant),
            Decoder = ModelPart.Of("segformer-mlp", new SegformerDecoderOptions { HiddenSize = (int)first.shape[0] }),
            Head = new ModelPart("resize"),
        }.Resolve();
    }

    /// <summary>The weights file of a Hugging Face model folder (<c>model.safetensors</c>, else
    /// <c>pytorch_model.bin</c>); an error naming the folder when it has neither.</summary>
    public static string FileIn(string folder) =>
        new[] { "model.safetensors", "pytorch_model.bin" }.Select(f => Path.Combine(folder, f))
            .FirstOrDefault(File.Exists)
            ?? throw new SegmentationException($"{folder}: neither model.safetensors nor pytorch_model.bin is there.");
}
