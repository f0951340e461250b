using Segmentation.Models.Encoders;
using Segmentation.Models.Layers;
using Segmentation.Models.Parts;
using static TorchSharp.torch;
using ModuleList = TorchSharp.Modules.ModuleList<TorchSharp.torch.nn.Module>;

namespace Segmentation.Models.Decoders;

/// <summary>Options of SegFormer's all-MLP decode head (registered as <c>segformer-mlp</c>).</summary>
public sealed record SegformerDecoderOptions : IPartOptions
{
    /// <summary>Width every stage is projected to (256 for B0 and B1, 768 for B2 to B5).</summary>
    public int HiddenSize { get; init; } = 256;

    /// <summary>Dropout before the classifier (transformers' <c>classifier_dropout_prob</c>).</summary>
    public double ClassifierDropout { get; init; } = 0.1;

    /// <inheritdoc />
    public void Validate()
    {
        if (HiddenSize < 1 || HiddenSize > 65536)
            throw new OptionsException($"SegFormer decoder HiddenSize is {HiddenSize}; it must be from 1 to 65536.");
        if (double.IsNaN(ClassifierDropout) || ClassifierDropout < 0 || ClassifierDropout >= 1)
            throw new OptionsException($"SegFormer decoder ClassifierDropout is {ClassifierDropout}; it must be in "
                + $"[0, 1).");
    }
}

/// <summary>
/// SegFormer's all-MLP decode head, with Hugging Face's keys (<c>decode_head.linear_c.{i}.proj</c>,
/// <c>decode_head.linear_fuse</c>, <c>decode_head.batch_norm</c>, <c>decode_head.classifier</c>): each stage projected
/// to
/// one width by a linear layer, resized bilinearly to the stride-4 map, concatenated in reverse order, fused by a 1x1
/// convolution without bias, batch norm, ReLU, dropout, and classified. Its output is the logits at stride 4; the
/// <c>resize</c> head brings them to the input's size.
/// </summary>
internal sealed class SegformerDecoder : Decoder
{
#pragma warning disable IDE1006 // Hugging Face's names
    private readonly ModuleList linear_c;
    private readonly Convolution linear_fuse;
    private readonly BatchNorm batch_norm;
    private readonly Activation activation = Activation.Relu(inPlace: false);
    private readonly Layers.Dropout dropout;
    private readonly Convolution classifier;
#pragma warning restore IDE1006
    private readonly long classes;
    private readonly int outStride;

    /// <summary>One projection per encoder stage (the Mix Transformer gives strides 4 to 32).</summary>
    public SegformerDecoder(IReadOnlyList<EncoderStage> stages, int classes, SegformerDecoderOptions o)
        : base(nameof(SegformerDecoder))
    {
        linear_c = new ModuleList(stages.Select(s => (nn.Module)new StageProjection(s.Channels, o.HiddenSize))
            .ToArray());
        linear_fuse = new Convolution((long)o.HiddenSize * stages.Count, o.HiddenSize, 1, bias: false);
        batch_norm = new BatchNorm(o.HiddenSize);
        dropout = new Layers.Dropout(o.ClassifierDropout);
        classifier = new Convolution(o.HiddenSize, classes, 1);
        this.classes = classes;
        outStride = stages[0].Stride;
        RegisterComponents();
        MixTransformer.InitialiseAsTransformers(this);
    }

    /// <summary>The logits' classes (the classifier is part of Hugging Face's decode head).</summary>
    public override long OutChannels => classes;

    /// <summary>The first stage's stride (4 on a Mix Transformer).</summary>
    public override int OutStride => outStride;

    /// <summary>Hugging Face's layout: <c>decode_head.*</c>.</summary>
    public override IEnumerable<(string Name, nn.Module Module)> StateDictModules()
        => new[] { ("decode_head", (nn.Module)this) };

    /// <inheritdoc />
    public override Tensor forward(Tensor[] features)
    {
        var first = features[1];
        var projected = new Tensor[linear_c.Count];
        for (int i = 0; i < linear_c.Count; i++)
            projected[i] = LayerOps.ResizeLike(((StageProjection)linear_c[i]).forward(features[i + 1]), first);
        var fused =
            activation.forward(batch_norm.forward(linear_fuse.forward(LayerOps.Concat(projected.Reverse().ToArray()))));
        return classifier.forward(dropout.forward(fused));
    }

    /// <summary>One stage's map to the common width (<c>proj</c>), as tokens and back.</summary>
    private sealed class StageProjection : nn.Module
    {
#pragma warning disable IDE1006 // Hugging Face's names
        private readonly Layers.Linear proj;
#pragma warning restore IDE1006

        public StageProjection(long channels, long hidden) : base(nameof(StageProjection))
        {
            proj = new Layers.Linear(channels, hidden);
            RegisterComponents();
        }

        public Tensor forward(Tensor map) => LayerOps.ToMap(proj.forward(LayerOps.ToTokens(map)), map);
    }
}
