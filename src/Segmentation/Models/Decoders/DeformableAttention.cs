using Segmentation.Models.Export;
using Segmentation.Models.Layers;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Models.Decoders;

/// <summary>
/// The sampling at the heart of multi-scale deformable attention (Zhu et al. 2021, Deformable DETR), transformers'
/// <c>multi_scale_deformable_attention</c>: for each query, head, level and point, a bilinear sample (zeros outside) of
/// that level's values at the query's reference point plus a predicted offset (in pixels of the level), weighted by a
/// softmax over the head's levels and points, summed. Inputs: the reference points N x Q x 2 in grid coordinates (x
/// then
/// y, -1 to 1 across the maps: <see cref="ReferencePointsOp"/>), the offsets N x Q x (heads levels points 2), the
/// weights' logits N x Q x (heads levels points), and each level's values N x C x H x W (channel h d + j is head h's
/// j-th). Output N x Q x C. It computes in float32 whatever the model's precision (as <see cref="GridSample"/>), is
/// checked against float64 (route 1 gathers the neighbours itself), and exports as ONNX <c>Softmax</c>, one
/// <c>GridSample</c> per level and the weighted sum.
/// </summary>
internal sealed class DeformableSampling : MultiInputLeaf
{
    private readonly int heads, levels, points;

    public DeformableSampling(int heads, int levels, int points) : base(nameof(DeformableSampling))
        => (this.heads, this.levels, this.points) = (heads, levels, points);

    /// <summary>Samples; <paramref name="values"/> holds one map per level, coarsest or finest first as the offsets
    /// were laid out.</summary>
    public Tensor forward(Tensor reference, Tensor offsets, Tensor logits, params Tensor[] values)
    {
        if (values.Length != levels)
            throw new ArgumentException($"Deformable sampling over {levels} levels got {values.Length} maps.");
        var inputs = new[] { reference, offsets, logits }.Concat(values).ToArray();
        using var _ = StepProfile.Time("forward: decoder: deformable sampling");
        Tensor output;
        if (inputs.All(x => x.dtype == ScalarType.Float32)) output = Apply(Route, inputs);
        else
        {
            using var scope = NewDisposeScope();
            output = Apply(Route, inputs.Select(x => x.to(ScalarType.Float32)).ToArray()).to(values[0].dtype)
                .MoveToOuterDisposeScope();
        }
        return Record(inputs, output, (g, names, _) => ExportOnnx(g, names));
    }

    private Tensor Apply(int route, IReadOnlyList<Tensor> inputs)
    {
        using var scope = NewDisposeScope();
        var (reference, offsets, logits) = (inputs[0], inputs[1], inputs[2]);
        long n = reference.shape[0], q = reference.shape[1], c = inputs[3].shape[1], d = c / heads;
        var weights = logits.reshape(n, q, heads, levels * points).softmax(-1).transpose(1, 2)
            .reshape(n * heads, 1, q, levels * points);
        var shifts = offsets.reshape(n, q, heads, levels, points, 2);
        var origin = reference.reshape(n, q, 1, 1, 2);
        var sampled = new Tensor[levels];
        for (int l = 0; l < levels; l++)
        {
            var v = inputs[3 + l];
            long h = v.shape[2], w = v.shape[3];
            // an offset of one pixel of this level is 2 / size in grid coordinates
            var perPixel = tensor(new double[] { 2.0 / w, 2.0 / h }, v.dtype, v.device);
            var grid = origin.add(shifts.select(3, l).mul(perPixel), Scalars.One) // N x Q x heads x points x 2
                .transpose(1, 2).reshape(n * heads, q, points, 2);
            var map = v.reshape(n * heads, d, h, w);
            sampled[l] = route == 0 ? F.grid_sample(map, grid, GridSampleMode.Bilinear, GridSamplePaddingMode.Zeros,
                align_corners: false) : GridSample.Gathered(map, grid); // N heads x d x Q x points
        }
        var all = stack(sampled, -2).flatten(-2); // N heads x d x Q x (levels points)
        return all.mul(weights).sum(-1).reshape(n, c, q).transpose(1, 2).MoveToOuterDisposeScope();
    }

    private string ExportOnnx(OnnxGraph g, string[] names)
    {
        var (reference, offsets, logits) = (names[0], names[1], names[2]);
        var nq = g.ShapeSlice(reference, 0, 2);
        var q = g.ShapeSlice(reference, 1, 2);
        var weights = g.Node("Softmax", new[] { g.Node("Reshape", new[] { logits, g.Node("Concat", new[] { nq,
            g.Int64s("hlp", heads, (long)levels * points) }, OnnxGraph.Int("axis", 0)) }) }, OnnxGraph.Int("axis", -1));
        var weightsT = g.Node("Reshape", new[] { g.Node("Transpose", new[] { weights }, OnnxGraph.Ints("perm", 0, 2, 1,
            3)), g.Node("Concat", new[] { g.Int64s("m1", -1, 1), q, g.Int64s("lp", (long)levels * points) },
            OnnxGraph.Int("axis", 0)) });
        var shifts = g.Node("Reshape", new[] { offsets, g.Node("Concat", new[] { nq, g.Int64s("hlp2", heads, levels,
            points, 2) }, OnnxGraph.Int("axis", 0)) });
        var origin = g.Node("Reshape", new[] { reference, g.Node("Concat", new[] { nq, g.Int64s("o", 1, 1, 2) },
            OnnxGraph.Int("axis", 0)) });
        var sampled = new string[levels];
        for (int l = 0; l < levels; l++)
        {
            var v = names[3 + l];
            var hw = g.ShapeSlice(v, 2, 4);
            var wh = g.Node("Concat", new[] { g.ShapeSlice(v, 3, 4), g.ShapeSlice(v, 2, 3) },
                OnnxGraph.Int("axis", 0));
            var perPixel = g.Node("Div", new[] { g.Constant("two", tensor(new float[] { 2, 2 })),
                g.Node("Cast", new[] { wh }, OnnxGraph.Int("to", 1)) });
            var shift = g.Node("Gather", new[] { shifts, g.Node("Squeeze", new[] { g.Int64s("level", l) }) },
                OnnxGraph.Int("axis", 3));
            var grid = g.Node("Add", new[] { origin, g.Node("Mul", new[] { shift, perPixel }) });
            var gridT = g.Node("Reshape", new[] { g.Node("Transpose", new[] { grid }, OnnxGraph.Ints("perm", 0, 2, 1, 3,
                4)), g.Node("Concat", new[] { g.Int64s("m1", -1), q, g.Int64s("p2", points, 2) },
                OnnxGraph.Int("axis", 0)) });
            var channels = g.ShapeSlice(v, 1, 2);
            var d = g.Node("Div", new[] { channels, g.Int64s("heads", heads) });
            var map = g.Node("Reshape", new[] { v, g.Node("Concat", new[] { g.Int64s("m1", -1), d, hw },
                OnnxGraph.Int("axis", 0)) });
            sampled[l] = g.Node("Unsqueeze", new[] { g.GridSample(map, gridT), g.Int64s("axes", 3) });
        }
        var all = g.Node("Reshape", new[] { g.Node("Concat", sampled, OnnxGraph.Int("axis", 3)),
            g.Int64s("flat", 0, 0, 0, (long)levels * points) });
        var sum = g.Node("ReduceSum", new[] { g.Node("Mul", new[] { all, weightsT }), g.Int64s("axes", -1) },
            OnnxGraph.Int("keepdims", 0)); // N heads x d x Q
        var c = g.ShapeSlice(names[3], 1, 2);
        var byChannel = g.Node("Reshape", new[] { sum, g.Node("Concat", new[] { g.ShapeSlice(reference, 0,
            1), c, q }, OnnxGraph.Int("axis", 0)) });
        return g.Node("Transpose", new[] { byChannel }, OnnxGraph.Ints("perm", 0, 2, 1));
    }

    public override LayerSummary Summarise(string path, Tensor[] inputs, Tensor output) =>
        new(path, "DeformableSampling", output.shape[1..], 0, 4L * inputs[1].numel() / inputs[1].shape[0] / 2
            * (inputs[3].shape[1] / heads));

    public override IReadOnlyList<Tensor> Parameters => Array.Empty<Tensor>();

    public override Tensor Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> parameters,
        bool training) => Apply(route, inputs);
}

/// <summary>
/// The reference point of every position of several maps, as one token sequence: the maps' pixel centres, level
/// after level and row by row, as x and y grid coordinates (-1 to 1 across a map: (2 i + 1) / size - 1), N x (sum of
/// H W) x 2, in float32. transformers' <c>get_reference_points</c> with no padding (valid ratios 1), in grid
/// coordinates. Depends only on the maps' shapes.
/// </summary>
internal sealed class ReferencePointsOp : Op
{
    private readonly int levels;

    public ReferencePointsOp(int levels) : base($"ReferencePoints{levels}") => this.levels = levels;

    internal override int RouteCount => 1;

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs)
    {
        long n = inputs[0].shape[0];
        var values = new List<float>();
        foreach (var map in inputs)
        {
            long h = map.shape[2], w = map.shape[3];
            for (long i = 0; i < h; i++)
                for (long j = 0; j < w; j++)
                {
                    values.Add((float)((2.0 * j + 1) / w - 1));
                    values.Add((float)((2.0 * i + 1) / h - 1));
                }
        }
        using var points = tensor(values.ToArray()).reshape(1, -1, 2);
        var type = inputs[0].dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        return points.to(type, inputs[0].device).expand(n, -1, 2).contiguous();
    }

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs)
    {
        var parts = new List<string>();
        foreach (var map in inputs)
        {
            string Centres(long axis) // (2 i + 1) / size - 1 for i < size
            {
                var size = g.ShapeSlice(map, axis, axis + 1);
                var sizeF = g.Node("Cast", new[] { size }, OnnxGraph.Int("to", 1));
                var i = g.Node("Cast", new[] { g.Node("Range", new[] { g.Node("Squeeze", new[] { g.Int64s("zero", 0) }),
                    g.Node("Squeeze", new[] { size }), g.Node("Squeeze", new[] { g.Int64s("one", 1) }) }) },
                    OnnxGraph.Int("to", 1));
                var odd = g.Node("Add", new[] { g.Node("Mul", new[] { i, g.Constant("two", tensor(2f)) }),
                    g.Constant("one", tensor(1f)) });
                return g.Node("Sub", new[] { g.Node("Div", new[] { odd, sizeF }), g.Constant("one", tensor(1f)) });
            }
            var hw = g.ShapeSlice(map, 2, 4);
            var ys = g.Node("Expand", new[] { g.Node("Unsqueeze", new[] { Centres(2), g.Int64s("axes", 1) }), hw });
            var xs = g.Node("Expand", new[] { g.Node("Unsqueeze", new[] { Centres(3), g.Int64s("axes", 0) }), hw });
            var pair = g.Node("Concat", new[] { g.Node("Unsqueeze", new[] { xs, g.Int64s("axes", 2) }),
                g.Node("Unsqueeze", new[] { ys, g.Int64s("axes", 2) }) }, OnnxGraph.Int("axis", 2));
            parts.Add(g.Node("Reshape", new[] { pair, g.Int64s("pairs", -1, 2) }));
        }
        var all = g.Node("Unsqueeze", new[] { g.Node("Concat", parts.ToArray(), OnnxGraph.Int("axis", 0)),
            g.Int64s("axes", 0) });
        var shape = g.Node("Concat", new[] { g.ShapeSlice(inputs[0], 0, 1), g.Int64s("rest", 1, 1) },
            OnnxGraph.Int("axis", 0));
        return g.Node("Tile", new[] { all, shape });
    }

    internal override IReadOnlyList<Tensor[]> CheckInputs() => new[]
    {
        new[] { zeros(2, 1, 2, 3, dtype: ScalarType.Float64), zeros(2, 1, 5, 4, dtype: ScalarType.Float64),
            zeros(2, 1, 1, 1, dtype: ScalarType.Float64) },
    };
}

/// <summary>
/// DETR's sine position embedding of a map's positions (transformers' <c>Mask2FormerSinePositionEmbedding</c> with
/// normalize=True, no padding mask): for F features, y = (row + 1) / (H + 1e-6) 2π and x likewise, each divided by
/// 10000^(2 floor(k / 2) / F) for feature k, sine for even k and cosine for odd; the F features of y, then the F of x:
/// N x 2F x H x W, in float32. Depends only on the map's shape.
/// </summary>
internal sealed class SinePositionOp : Op
{
    private readonly int features;

    public SinePositionOp(int features) : base($"SinePosition{features}") => this.features = features;

    /// <summary>10000^(2 floor(k / 2) / F), as transformers computes it in float32.</summary>
    private float[] Divisors() => Enumerable.Range(0, features)
        .Select(k => MathF.Pow(10000f, 2 * (k / 2) / (float)features)).ToArray();

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        long n = x.shape[0], h = x.shape[2], w = x.shape[3];
        var type = x.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var divisors = Divisors();
        float[] Axis(long size) // size x F
        {
            var values = new float[size * features];
            for (long i = 0; i < size; i++)
            {
                float position = (i + 1) / (size + 1e-6f) * (2 * MathF.PI);
                for (int k = 0; k < features; k++)
                {
                    float a = position / divisors[k];
                    values[i * features + k] = k % 2 == 0 ? MathF.Sin(a) : MathF.Cos(a);
                }
            }
            return values;
        }
        using var scope = NewDisposeScope();
        var ys = tensor(Axis(h)).reshape(h, features).t().unsqueeze(-1).expand(features, h, w);
        var xs = tensor(Axis(w)).reshape(w, features).t().unsqueeze(1).expand(features, h, w);
        return cat(new[] { ys, xs }, 0).unsqueeze(0).expand(n, 2 * features, h, w).to(type, x.device).contiguous()
            .MoveToOuterDisposeScope();
    }

    internal override int RouteCount => 1;

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs)
    {
        var x = inputs[0];
        var divisors = g.Constant("divisors", tensor(Divisors()));
        var even = g.Constant("even", tensor(Enumerable.Range(0, features).Select(k => k % 2 == 0 ? 1f : 0f)
            .ToArray()));
        var odd = g.Constant("odd", tensor(Enumerable.Range(0, features).Select(k => k % 2 == 1 ? 1f : 0f).ToArray()));
        string Axis(long axis) // F x size
        {
            var size = g.ShapeSlice(x, axis, axis + 1);
            var sizeF = g.Node("Cast", new[] { size }, OnnxGraph.Int("to", 1));
            var i = g.Node("Cast", new[] { g.Node("Range", new[] { g.Node("Squeeze", new[] { g.Int64s("one", 1) }),
                g.Node("Squeeze", new[] { g.Node("Add", new[] { size, g.Int64s("one", 1) }) }),
                g.Node("Squeeze", new[] { g.Int64s("one", 1) }) }) }, OnnxGraph.Int("to", 1));
            var position = g.Node("Mul", new[] { g.Node("Div", new[] { i, g.Node("Add", new[] { sizeF,
                g.Constant("eps", tensor(1e-6f)) }) }), g.Constant("tau", tensor(2 * MathF.PI)) });
            var angles = g.Node("Div", new[] { g.Node("Unsqueeze", new[] { position, g.Int64s("axes", 1) }),
                divisors });
            var waves = g.Node("Add", new[] { g.Node("Mul", new[] { g.Node("Sin", new[] { angles }), even }),
                g.Node("Mul", new[] { g.Node("Cos", new[] { angles }), odd }) });
            return g.Node("Transpose", new[] { waves }, OnnxGraph.Ints("perm", 1, 0));
        }
        var hw = g.ShapeSlice(x, 2, 4);
        var full = g.Node("Concat", new[] { g.Int64s("f", features), hw }, OnnxGraph.Int("axis", 0));
        var ys = g.Node("Expand", new[] { g.Node("Unsqueeze", new[] { Axis(2), g.Int64s("axes", 2) }), full });
        var xs = g.Node("Expand", new[] { g.Node("Unsqueeze", new[] { Axis(3), g.Int64s("axes", 1) }), full });
        var one = g.Node("Unsqueeze", new[] { g.Node("Concat", new[] { ys, xs }, OnnxGraph.Int("axis", 0)),
            g.Int64s("axes", 0) });
        var shape = g.Node("Concat", new[] { g.ShapeSlice(x, 0, 1), g.Int64s("f2", 2L * features), hw },
            OnnxGraph.Int("axis", 0));
        return g.Node("Expand", new[] { one, shape });
    }

    internal override IReadOnlyList<Tensor[]> CheckInputs() => new[]
    {
        new[] { zeros(2, 3, 5, 7, dtype: ScalarType.Float64) }, new[] { zeros(1, 1, 1, 2, dtype: ScalarType.Float64) },
    };
}

/// <summary>
/// One level's map from a token sequence of several levels (N x sum(H W) x C, level after level as <see
/// cref="LayerOps.Concat"/> of their tokens laid them out): the tokens of level <c>k</c>, as N x C x H x W with the
/// size of the k-th of the maps given after the tokens.
/// </summary>
internal sealed class LevelMapOp : Op
{
    private readonly int level, levels;

    public LevelMapOp(int level, int levels) : base($"LevelMap{level}Of{levels}") => (this.level, this.levels) =
        (level, levels);

    internal override int RouteCount => 1;

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs)
    {
        var tokens = inputs[0];
        long start = 0;
        for (int k = 0; k < level; k++) start += inputs[1 + k].shape[2] * inputs[1 + k].shape[3];
        var like = inputs[1 + level];
        long h = like.shape[2], w = like.shape[3];
        return tokens.narrow(1, start, h * w).transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w);
    }

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs)
    {
        string Area(string map) => g.Node("ReduceProd", new[] { g.ShapeSlice(map, 2, 4) },
            OnnxGraph.Int("keepdims", 1));
        var start = g.Int64s("zero", 0);
        for (int k = 0; k < level; k++) start = g.Node("Add", new[] { start, Area(inputs[1 + k]) });
        var end = g.Node("Add", new[] { start, Area(inputs[1 + level]) });
        var slice = g.Node("Slice", new[] { inputs[0], start, end, g.Int64s("axis", 1) });
        return g.ToMap(slice, inputs[1 + level]);
    }

    internal override IReadOnlyList<Tensor[]> CheckInputs()
    {
        var maps = new[] { zeros(2, 1, 2, 3, dtype: ScalarType.Float64), zeros(2, 1, 4, 1, dtype: ScalarType.Float64),
            zeros(2, 1, 1, 2, dtype: ScalarType.Float64) };
        var tokens = randn(new long[] { 2, 12, 5 }, ScalarType.Float64, generator: new Generator(9));
        return new[] { new[] { tokens }.Concat(maps.Take(levels)).ToArray() };
    }
}

/// <summary>
/// The position tokens of the levels with each level's learned embedding added (transformers' <c>level_embed</c>, a
/// levels x C parameter of the pixel decoder): N x sum(H W) x C from the levels' position maps N x C x H x W. A leaf of
/// several inputs with a parameter, checked against float64 and exported as Transpose, Add and Concat.
/// </summary>
internal sealed class LevelEmbedding : MultiInputLeaf
{
    private readonly Parameter weight;

    public LevelEmbedding(int levels, int channels) : base(nameof(LevelEmbedding))
    {
        weight = new Parameter(zeros(levels, channels));
        register_parameter("weight", weight);
        using var _ = no_grad();
        nn.init.normal_(weight);
    }

    /// <summary>The embeddings, levels x C.</summary>
    public Parameter Weight => weight;

    public Tensor forward(params Tensor[] positions) => Record(positions, Apply(Route, positions, weight),
        (g, names, path) =>
        {
            var rows = names.Select((p, l) => g.Node("Add", new[] { g.ToTokens(p),
                g.Initializer($"{path}.level{l}", weight.detach()[l]) })).ToArray();
            return g.Node("Concat", rows, OnnxGraph.Int("axis", 1));
        });

    private static Tensor Apply(int route, IReadOnlyList<Tensor> positions, Tensor weight)
    {
        using var scope = NewDisposeScope();
        var rows = positions.Select((p, l) =>
        {
            var tokens = p.flatten(2).transpose(1, 2);
            var row = weight.select(0, l).to(tokens.dtype);
            return route == 0 ? tokens.add(row, Scalars.One) : tokens + row.expand(tokens.shape).contiguous();
        }).ToArray();
        return cat(rows, 1).MoveToOuterDisposeScope();
    }

    public override LayerSummary Summarise(string path, Tensor[] inputs, Tensor output) =>
        new(path, "LevelEmbedding", output.shape[1..], weight.numel(), 0);

    public override IReadOnlyList<Tensor> Parameters => new Tensor[] { weight };

    public override Tensor Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> parameters,
        bool training) => Apply(route, inputs, parameters[0]);
}
