using Google.Protobuf;
using Onnx;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Segmentation.Models.Export;

/// <summary>A module that writes its own eval-mode computation into an ONNX graph, beside its <c>forward</c>.</summary>
internal interface IOnnxExportable
{
    /// <summary>Adds the nodes that compute this module on <paramref name="input"/>; returns the output's name.</summary>
    /// <param name="g">The graph being built.</param>
    /// <param name="input">The name of the input value.</param>
    /// <param name="path">The module's state-dict prefix (initializers are named after the state-dict keys).</param>
    string ExportOnnx(OnnxGraph g, string input, string path);
}

/// <summary>
/// Builds an ONNX graph (ONNX's protobuf schema, through OnnxSharp) from the model's own modules: each block says what
/// it computes (<see cref="IOnnxExportable"/>), and this class knows the ONNX operators: convolution, batch norm, group
/// norm, ReLU, pooling, resize, the pad that aligns an upsampled map with its skip (computed from the shapes at run
/// time, so any input size works, odd ones too), concatenation and addition. Eval mode: dropout is the identity and
/// batch norm uses its running statistics. Weights are stored as float32 initializers named by their state-dict keys.
/// </summary>
internal sealed class OnnxGraph
{
    private readonly Dictionary<string, int> counters = new();

    /// <summary>The graph built so far.</summary>
    public GraphProto Graph { get; } = new();

    private string Fresh(string hint)
    {
        counters[hint] = counters.GetValueOrDefault(hint) + 1;
        return $"{hint}_{counters[hint]}";
    }

    /// <summary>Adds a float32 initializer holding <paramref name="t"/>.</summary>
    public string Initializer(string name, Tensor t)
    {
        using var cpu = t.detach().to(ScalarType.Float32).cpu().contiguous();
        var proto = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(cpu.bytes) };
        proto.Dims.AddRange(cpu.shape);
        Graph.Initializer.Add(proto);
        return name;
    }

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

    /// <summary>Gives the value <paramref name="value"/> the name <paramref name="name"/> (an Identity node), e.g. a graph output's.</summary>
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
    public static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    /// <summary>A float attribute.</summary>
    public static AttributeProto Float(string name, float value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    /// <summary>A string attribute.</summary>
    public static AttributeProto String(string name, string value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    /// <summary>Any module of the model: our blocks export themselves, TorchSharp's layers are mapped here.</summary>
    public string Module(nn.Module module, string x, string path) => module switch
    {
        IOnnxExportable e => e.ExportOnnx(this, x, path),
        Sequential s => s.named_children().Aggregate(x, (value, child) => Module(child.module, value, $"{path}.{child.name}")),
        BatchNorm2d bn => BatchNorm(bn, x, path),
        ReLU => Relu(x),
        Identity or Dropout2d or Dropout => x,
        _ => throw new NotSupportedException($"{path}: {module.GetType().Name} has no ONNX export."),
    };

    /// <summary>A convolution (or transposed convolution) with its weights.</summary>
    public string Convolution(string x, string path, Tensor weight, Tensor? bias, int kernel, int stride, int padding, bool transposed)
    {
        var inputs = new List<string> { x, Initializer(path + ".weight", weight) };
        if (bias is not null) inputs.Add(Initializer(path + ".bias", bias));
        var attributes = new List<AttributeProto> { Ints("kernel_shape", kernel, kernel), Ints("strides", stride, stride) };
        if (padding != 0) attributes.Add(Ints("pads", padding, padding, padding, padding));
        return Node(transposed ? "ConvTranspose" : "Conv", inputs.ToArray(), attributes.ToArray());
    }

    /// <summary>Batch norm with its running statistics.</summary>
    public string BatchNorm(BatchNorm2d bn, string x, string path)
    {
        long c = bn.num_features;
        using var scope = NewDisposeScope();
        var weight = bn.weight is { } w ? (Tensor)w : ones(c);
        var bias = bn.bias is { } b ? (Tensor)b : zeros(c);
        var mean = bn.running_mean ?? zeros(c);
        var variance = bn.running_var ?? ones(c);
        return Node("BatchNormalization",
            new[] { x, Initializer(path + ".weight", weight), Initializer(path + ".bias", bias), Initializer(path + ".running_mean", mean), Initializer(path + ".running_var", variance) },
            Float("epsilon", (float)bn.eps));
    }

    /// <summary>Group norm as ONNX 17 can say it: instance norm over [N, groups, rest], then the per-channel affine.</summary>
    public string GroupNorm(string x, string path, long groups, double epsilon, Tensor weight, Tensor bias)
    {
        long c = weight.shape[0];
        var grouped = Node("Reshape", new[] { x, Int64s("groups", 0, groups, -1) });
        using var scope = NewDisposeScope();
        var normalised = Node("InstanceNormalization", new[] { grouped, Initializer(Fresh(path + ".ones"), ones(groups)), Initializer(Fresh(path + ".zeros"), zeros(groups)) }, Float("epsilon", (float)epsilon));
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
            : Node("MaxPool", new[] { x }, Ints("kernel_shape", kernel, kernel), Ints("strides", stride, stride), Ints("pads", padding, padding, padding, padding));

    /// <summary>Upsampling by 2: bilinear with aligned corners, or PyTorch's nearest (asymmetric, floor).</summary>
    public string Upsample2(string x, bool bilinear)
    {
        var scales = Initializer(Fresh("scales"), tensor(new float[] { 1, 1, 2, 2 }));
        return bilinear
            ? Node("Resize", new[] { x, "", scales }, String("mode", "linear"), String("coordinate_transformation_mode", "align_corners"))
            : Node("Resize", new[] { x, "", scales }, String("mode", "nearest"), String("coordinate_transformation_mode", "asymmetric"), String("nearest_mode", "floor"));
    }

    /// <summary>
    /// Pads (or crops, where negative) <paramref name="x"/> to <paramref name="like"/>'s height and width, half before
    /// and the rest after, as <c>Decoder.Align</c> does; the amounts come from both shapes when the graph runs.
    /// </summary>
    public string AlignTo(string x, string like)
    {
        string Hw(string v) => Node("Slice", new[] { Node("Shape", new[] { v }), Int64s("start", 2), Int64s("end", 4) });
        var difference = Node("Sub", new[] { Hw(like), Hw(x) });
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
