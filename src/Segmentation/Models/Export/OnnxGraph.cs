using Google.Protobuf;
using Onnx;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Segmentation.Models.Export;

/// <summary>
/// Builds an ONNX graph (ONNX's protobuf schema, through OnnxSharp) as an <see cref="OnnxTrace"/> runs the model: the
/// leaf layers and operations call it, and this class knows the ONNX operators: convolution, batch, group and layer
/// norm, linear, attention, activations, pooling, resize, the pad that aligns an upsampled map with its skip (computed
/// from the shapes at run time, so any input size works, odd ones too), token reshapes, concatenation and addition.
/// Eval mode: dropout is the identity and batch norm uses its running statistics. Weights are stored as float32
/// initializers named by their state-dict keys.
/// </summary>
internal sealed class OnnxGraph
{
    private readonly Dictionary<string, int> counters = new();

    /// <summary>Creates a graph recorded by <paramref name="trace"/>.</summary>
    public OnnxGraph(OnnxTrace trace) => Trace = trace;

    /// <summary>The trace that records into this graph (it knows each tensor's value name).</summary>
    public OnnxTrace Trace { get; }

    /// <summary>The graph built so far.</summary>
    public GraphProto Graph { get; } = new();

    private string Fresh(string hint)
    {
        counters[hint] = counters.GetValueOrDefault(hint) + 1;
        return $"{hint}_{counters[hint]}";
    }

    private readonly HashSet<string> initializers = new(StringComparer.Ordinal);

    /// <summary>Adds a float32 initializer holding <paramref name="t"/>; a layer that runs more than once (a shared
    /// predictor applied to every prediction) names the same weights again, and they are written once.</summary>
    public string Initializer(string name, Tensor t)
    {
        if (!initializers.Add(name)) return name;
        using var cpu = t.detach().to(ScalarType.Float32).cpu().contiguous();
        var proto = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float,
            RawData = ByteString.CopyFrom(cpu.bytes) };
        proto.Dims.AddRange(cpu.shape);
        Graph.Initializer.Add(proto);
        return name;
    }

    /// <summary>Adds a float32 constant initializer with a fresh name from <paramref name="hint"/>.</summary>
    public string Constant(string hint, Tensor t) => Initializer(Fresh(hint), t);

    /// <summary>Adds an int64 constant initializer.</summary>
    public string Int64s(string hint, params long[] values)
    {
        var proto = new TensorProto { Name = Fresh(hint), DataType = (int)TensorProto.Types.DataType.Int64 };
        proto.Dims.Add(values.Length);
        proto.Int64Data.AddRange(values);
        Graph.Initializer.Add(proto);
        return proto.Name;
    }

    /// <summary>Adds a node; returns its (single) output's name.</summary>
    public string Node(string op, string[] inputs, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = Fresh(op) };
        node.Input.AddRange(inputs);
        node.Output.Add(node.Name + "_out");
        node.Attribute.AddRange(attributes);
        Graph.Node.Add(node);
        return node.Output[0];
    }

    /// <summary>Gives the value <paramref name="value"/> the name <paramref name="name"/> (an Identity node), e.g. a
    /// graph output's.</summary>
    public void Rename(string value, string name)
    {
        var node = new NodeProto { OpType = "Identity", Name = Fresh("Identity") };
        node.Input.Add(value);
        node.Output.Add(name);
        Graph.Node.Add(node);
    }

    /// <summary>An integer-list attribute.</summary>
    public static AttributeProto Ints(string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    /// <summary>An integer attribute.</summary>
    public static AttributeProto Int(string name, long value)
        => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    /// <summary>A float attribute.</summary>
    public static AttributeProto Float(string name, float value)
        => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    /// <summary>A string attribute.</summary>
    public static AttributeProto String(string name, string value)
        => new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    /// <summary>A convolution (or transposed convolution) with its weights.</summary>
    internal string Convolution(string x, string path, Tensor weight, Tensor? bias, int kernel,
        Layers.ConvolutionGeometry geometry)
    {
        var inputs = new List<string> { x, Initializer(path + ".weight", weight) };
        if (bias is not null) inputs.Add(Initializer(path + ".bias", bias));
        int stride = geometry.Stride, padding = geometry.Padding;
        var attributes = new List<AttributeProto> { Ints("kernel_shape", kernel, kernel),
            Ints("strides", stride, stride) };
        if (padding != 0) attributes.Add(Ints("pads", padding, padding, padding, padding));
        if (geometry.Groups != 1) attributes.Add(Int("group", geometry.Groups));
        if (geometry.Dilation != 1) attributes.Add(Ints("dilations", geometry.Dilation, geometry.Dilation));
        return Node(geometry.Transposed ? "ConvTranspose" : "Conv", inputs.ToArray(), attributes.ToArray());
    }

    /// <summary>Batch norm with its running statistics.</summary>
    public string BatchNorm(string x, string path, Tensor weight, Tensor bias, Tensor mean, Tensor variance,
        double epsilon) =>
        Node("BatchNormalization",
            new[]
            {
                x, Initializer(path + ".weight", weight), Initializer(path + ".bias", bias),
                Initializer(path + ".running_mean", mean), Initializer(path + ".running_var", variance),
            },
            Float("epsilon", (float)epsilon));

    /// <summary>Layer norm over the last axis (opset 17's LayerNormalization).</summary>
    public string LayerNorm(string x, string path, Tensor weight, Tensor bias, double epsilon) =>
        Node("LayerNormalization", new[] { x, Initializer(path + ".weight", weight),
            Initializer(path + ".bias", bias) },
            Int("axis", -1), Float("epsilon", (float)epsilon));

    /// <summary>x Wᵀ + b over the last axis; the weight is stored as the state dict has it (out x in) and transposed in
    /// the graph.</summary>
    public string Linear(string x, string path, Tensor weight, Tensor? bias)
    {
        var transposed = Node("Transpose", new[] { Initializer(path + ".weight", weight) }, Ints("perm", 1, 0));
        var y = Node("MatMul", new[] { x, transposed });
        return bias is null ? y : Node("Add", new[] { y, Initializer(path + ".bias", bias) });
    }

    /// <summary>The exact GELU, 0.5 x (1 + erf(x / √2)) (opset 17 has no Gelu).</summary>
    public string Gelu(string x)
    {
        var erf = Node("Erf", new[] { Node("Div", new[] { x, Scalar("sqrt2", MathF.Sqrt(2)) }) });
        var onePlus = Node("Add", new[] { erf, Scalar("one", 1) });
        return Node("Mul", new[] { Node("Mul", new[] { x, onePlus }), Scalar("half", 0.5f) });
    }

    /// <summary>softmax(Q Kᵀ / √d [+ M]) V over the last two axes of N x heads x L x d inputs, M an additive mask that
    /// broadcasts to N x heads x L x S.</summary>
    public string Attention(string query, string key, string value, long headDim, string? mask = null)
    {
        var scores = Node("MatMul", new[] { query, Node("Transpose", new[] { key }, Ints("perm", 0, 1, 3, 2)) });
        var scaled = Node("Mul", new[] { scores, Scalar("scale", (float)(1 / Math.Sqrt(headDim))) });
        if (mask is not null) scaled = Node("Add", new[] { scaled, mask });
        return Node("MatMul", new[] { Node("Softmax", new[] { scaled }, Int("axis", -1)), value });
    }

    /// <summary>0 where <paramref name="blocked"/> is false, -∞ where it is true (a Where node).</summary>
    public string AttentionBias(string blocked) =>
        Node("Where", new[] { blocked, Scalar("minus_infinity", float.NegativeInfinity), Scalar("zero", 0) });

    /// <summary>Bilinear sampling at an N x Ho x Wo x 2 grid, zeros outside, <c>align_corners=0</c> (opset 16's
    /// GridSample).</summary>
    public string GridSample(string x, string grid) => Node("GridSample", new[] { x, grid },
        String("mode", "bilinear"), String("padding_mode", "zeros"), Int("align_corners", 0));

    /// <summary>A float32 scalar constant.</summary>
    private string Scalar(string hint, float value)
    {
        var proto = new TensorProto { Name = Fresh(hint), DataType = (int)TensorProto.Types.DataType.Float };
        proto.FloatData.Add(value);
        Graph.Initializer.Add(proto);
        return proto.Name;
    }

    /// <summary>Elements <paramref name="start"/> to <paramref name="end"/> of a value's shape.</summary>
    public string ShapeSlice(string x, long start, long end) =>
        Node("Slice", new[] { Node("Shape", new[] { x }), Int64s("start", start), Int64s("end", end) });

    /// <summary>The shape of <paramref name="x"/> (N x C x ...) with <paramref name="like"/>'s height and width, read
    /// from both when the graph runs: the sizes of a resize, or of a reshape back to a map.</summary>
    public string SizesLike(string x, string like) =>
        Node("Concat", new[] { ShapeSlice(x, 0, 2), ShapeSlice(like, 2, 4) }, Int("axis", 0));

    /// <summary>Bilinear resize of <paramref name="x"/> to <paramref name="like"/>'s height and width (PyTorch's
    /// align_corners=False).</summary>
    public string ResizeLike(string x, string like) =>
        Node("Resize", new[] { x, "", "", SizesLike(x, like) }, String("mode", "linear"),
            String("coordinate_transformation_mode", "pytorch_half_pixel"));

    /// <summary>N x C x H x W to N x HW x C.</summary>
    public string ToTokens(string x) =>
        Node("Transpose", new[] { Node("Reshape", new[] { x, Int64s("shape", 0, 0, -1) }) }, Ints("perm", 0, 2, 1));

    /// <summary>N x HW x C to N x C x H x W, with H and W from <paramref name="like"/>.</summary>
    public string ToMap(string tokens, string like)
    {
        var channelsFirst = Node("Transpose", new[] { tokens }, Ints("perm", 0, 2, 1));
        return Node("Reshape", new[] { channelsFirst, SizesLike(channelsFirst, like) });
    }

    /// <summary>N x L x (heads d) to N x heads x L x d.</summary>
    public string SplitHeads(string tokens, long heads, long headDim) =>
        Node("Transpose", new[] { Node("Reshape", new[] { tokens, Int64s("shape", 0, 0, heads, headDim) }) },
            Ints("perm", 0, 2, 1, 3));

    /// <summary>N x heads x L x d to N x L x (heads d).</summary>
    public string MergeHeads(string x, long width) =>
        Node("Reshape", new[] { Node("Transpose", new[] { x }, Ints("perm", 0, 2, 1, 3)),
            Int64s("shape", 0, 0, width) });

    /// <summary>Group norm as ONNX 17 can say it: instance norm over [N, groups, rest], then the per-channel
    /// affine.</summary>
    public string GroupNorm(string x, string path, long groups, double epsilon, Tensor weight, Tensor bias)
    {
        long c = weight.shape[0];
        var grouped = Node("Reshape", new[] { x, Int64s("groups", 0, groups, -1) });
        using var scope = NewDisposeScope();
        var normalised = Node("InstanceNormalization",
            new[] { grouped, Initializer(Fresh(path + ".ones"), ones(groups)),
                Initializer(Fresh(path + ".zeros"), zeros(groups)) }, Float("epsilon", (float)epsilon));
        var back = Node("Reshape", new[] { normalised, Node("Shape", new[] { x }) });
        var scaled = Node("Mul", new[] { back, Initializer(path + ".weight", weight.reshape(c, 1, 1)) });
        return Node("Add", new[] { scaled, Initializer(path + ".bias", bias.reshape(c, 1, 1)) });
    }

    /// <summary>ReLU.</summary>
    public string Relu(string x) => Node("Relu", new[] { x });

    /// <summary>Max pooling, floor mode.</summary>
    public string MaxPool(string x, int kernel, int stride, int padding) =>
        padding == 0
            ? Node("MaxPool", new[] { x }, Ints("kernel_shape", kernel, kernel), Ints("strides", stride, stride))
            : Node("MaxPool", new[] { x }, Ints("kernel_shape", kernel, kernel), Ints("strides", stride, stride),
            Ints("pads", padding, padding, padding, padding));

    /// <summary>Upsampling by 2: bilinear with aligned corners, or PyTorch's nearest (asymmetric, floor).</summary>
    public string Upsample2(string x, bool bilinear)
    {
        var scales = Initializer(Fresh("scales"), tensor(new float[] { 1, 1, 2, 2 }));
        return bilinear
            ? Node("Resize", new[] { x, "", scales }, String("mode", "linear"),
            String("coordinate_transformation_mode", "align_corners"))
            : Node("Resize", new[] { x, "", scales }, String("mode", "nearest"),
            String("coordinate_transformation_mode", "asymmetric"), String("nearest_mode", "floor"));
    }

    /// <summary>
    /// Pads (or crops, where negative) <paramref name="x"/> to <paramref name="like"/>'s height and width, half before
    /// and the rest after, as <c>Decoder.Align</c> does; the amounts come from both shapes when the graph runs.
    /// </summary>
    public string AlignTo(string x, string like)
    {
        var difference = Node("Sub", new[] { ShapeSlice(like, 2, 4), ShapeSlice(x, 2, 4) });
        var before = Node("Div", new[] { difference, Int64s("two", 2, 2) });
        var after = Node("Sub", new[] { difference, before });
        var zeros2 = Int64s("zeros", 0, 0);
        var pads = Node("Concat", new[] { zeros2, before, zeros2, after }, Int("axis", 0));
        return Node("Pad", new[] { x, pads });
    }

    /// <summary>Concatenation along the channels.</summary>
    public string Concat(params string[] values) => Node("Concat", values, Int("axis", 1));

    /// <summary>Element-wise sum.</summary>
    public string Add(string a, string b) => Node("Add", new[] { a, b });
}
