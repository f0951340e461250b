using Segmentation.Models.Encoders;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Training;

/// <summary>
/// SegFormer written straight on TorchSharp's own layers (<c>nn.Conv2d</c>, <c>nn.Linear</c>, <c>nn.LayerNorm</c>,
/// <c>nn.BatchNorm2d</c>, <c>scaled_dot_product_attention</c>), with none of ours (no leaves, no check, no tracing, no
/// precision): the yardstick <see cref="TrainingBenchmark"/> times the Mix Transformer models against. The same layers,
/// shapes and parameter count as ours, stochastic depth and the classifier's dropout included.
/// </summary>
internal sealed class StraightSegformer : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<nn.Module<Tensor, Tensor>> embeddings = new(), embeddingNorms = new(), norms = new(),
        projections = new();
    private readonly ModuleList<ModuleList<Layer>> layers = new();
    private readonly nn.Module<Tensor, Tensor> fuse, batchNorm, classifier;

    public StraightSegformer(string variant, int inChannels, int classes, double dropPathRate = 0.1)
        : base(nameof(StraightSegformer))
    {
        var (hidden, depths, width) = MixTransformer.Variant(variant);
        int total = depths.Sum(), index = 0;
        for (int i = 0; i < 4; i++)
        {
            int patch = MixTransformer.Patches[i];
            long cin = i == 0 ? inChannels : hidden[i - 1];
            embeddings.Add(nn.Conv2d(cin, hidden[i], patch, MixTransformer.Strides[i], patch / 2));
            embeddingNorms.Add(nn.LayerNorm(hidden[i]));
            var stage = new ModuleList<Layer>();
            for (int j = 0; j < depths[i]; j++, index++)
            {
                double dropPath = total > 1 ? dropPathRate * index / (total - 1) : 0;
                stage.Add(new Layer(hidden[i], MixTransformer.Heads[i], MixTransformer.Reductions[i], dropPath));
            }
            layers.Add(stage);
            norms.Add(nn.LayerNorm(hidden[i]));
            projections.Add(nn.Linear(hidden[i], width));
        }
        fuse = nn.Conv2d(4L * width, width, 1, bias: false);
        batchNorm = nn.BatchNorm2d(width);
        classifier = nn.Conv2d(width, classes, 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        var features = new List<Tensor>();
        var x = input;
        for (int i = 0; i < 4; i++)
        {
            var map = embeddings[i].forward(x);
            long h = map.shape[2], w = map.shape[3];
            var tokens = embeddingNorms[i].forward(map.flatten(2).transpose(1, 2));
            foreach (var layer in layers[i]) tokens = layer.Run(tokens, h, w, MixTransformer.Heads[i]);
            x = norms[i].forward(tokens).transpose(1, 2).reshape(tokens.shape[0], -1, h, w);
            features.Add(x);
        }
        var size = new[] { features[0].shape[2], features[0].shape[3] };
        var maps = features.Select((f, i) =>
        {
            var p = projections[i].forward(f.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(f.shape[0], -1,
                f.shape[2], f.shape[3]);
            return F.interpolate(p, size, mode: InterpolationMode.Bilinear, align_corners: false);
        }).Reverse().ToArray();
        var fused = F.relu(batchNorm.forward(fuse.forward(cat(maps, 1))));
        var logits = classifier.forward(F.dropout(fused, 0.1, training));
        return F.interpolate(logits, new[] { input.shape[2], input.shape[3] }, mode: InterpolationMode.Bilinear,
            align_corners: false);
    }

    /// <summary>One transformer layer: efficient self-attention and Mix-FFN, pre-norm, with stochastic depth.</summary>
    private sealed class Layer : nn.Module
    {
        private readonly nn.Module<Tensor, Tensor> norm1, norm2, query, key, value, dense, dense1, dense2, dwconv;
        private readonly nn.Module<Tensor, Tensor>? sr, srNorm;
        private readonly double dropPath;

        public Layer(long hidden, int heads, int reduction, double dropPath) : base(nameof(Layer))
        {
            norm1 = nn.LayerNorm(hidden); norm2 = nn.LayerNorm(hidden);
            query = nn.Linear(hidden, hidden); key = nn.Linear(hidden, hidden); value = nn.Linear(hidden,
                hidden); dense = nn.Linear(hidden, hidden);
            if (reduction > 1) { sr = nn.Conv2d(hidden, hidden, reduction, reduction); srNorm = nn.LayerNorm(hidden); }
            dense1 = nn.Linear(hidden, 4 * hidden); dense2 = nn.Linear(4 * hidden, hidden);
            dwconv = nn.Conv2d(4 * hidden, 4 * hidden, 3, 1, 1, groups: 4 * hidden);
            this.dropPath = dropPath;
            RegisterComponents();
        }

        private Tensor Drop(Tensor x)
        {
            if (!training || dropPath == 0) return x;
            var mask = (rand(new long[] { x.shape[0], 1, 1 }, x.dtype, x.device) + (1 - dropPath)).floor_();
            return x / (1 - dropPath) * mask;
        }

        private static Tensor Split(Tensor t, int heads) => t.reshape(t.shape[0], t.shape[1], heads, -1)
            .transpose(1, 2);

        public Tensor Run(Tensor x, long h, long w, int heads)
        {
            var t = norm1.forward(x);
            var kv = t;
            if (sr is not null)
                kv = srNorm!.forward(sr.forward(t.transpose(1, 2).reshape(t.shape[0], -1, h, w)).flatten(2)
                    .transpose(1, 2));
            var attended = F.scaled_dot_product_attention(Split(query.forward(t), heads),
                Split(key.forward(kv), heads), Split(value.forward(kv), heads));
            x = x + Drop(dense.forward(attended.transpose(1, 2).reshape(x.shape)));
            var m = dense1.forward(norm2.forward(x));
            m = dwconv.forward(m.transpose(1, 2).reshape(m.shape[0], -1, h, w)).flatten(2).transpose(1, 2);
            return x + Drop(dense2.forward(F.gelu(m)));
        }
    }
}
