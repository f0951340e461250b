using Segmentation.Models.Export;
using Segmentation.Models.Layers;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Segmentation.Models.Encoders;

/// <summary>
/// The data movements of the Swin Transformer as ops (<see cref="Op"/>): padding to a multiple, the shifted-window
/// partition and its inverse, the shifted windows' attention mask and patch merging's 2x2 gather. Each works on maps N
/// x C
/// x H x W whatever their height and width (the ONNX nodes read the sizes when the graph runs), has a second route that
/// gathers by explicit indices, and is registered for the op conformance test.
/// </summary>
internal static class SwinWindows
{
    /// <summary>Registers a representative of each op (window 4, shift 2) for the conformance test.</summary>
    internal static void Register()
    {
        Ops.Add(new PadToMultipleOp(4));
        Ops.Add(new WindowPartitionOp(4, 2));
        Ops.Add(new WindowMergeOp(4, 2));
        Ops.Add(new WindowMaskOp(4, 2));
        Ops.Add(new WindowMaskOp(4, 0));
        Ops.Add(PatchMergeGatherOp.Instance);
    }

    /// <summary>The amount that pads <paramref name="size"/> to a multiple of <paramref name="multiple"/>.</summary>
    internal static long PadFor(long size, long multiple) => (multiple - size % multiple) % multiple;

    /// <summary>The sizes <paramref name="sizes"/> (1-D int64) padded up to multiples of <paramref
    /// name="multiple"/>.</summary>
    internal static string PaddedSizes(OnnxGraph g, string sizes, long multiple, out string pads)
    {
        var m = g.Int64s("multiple", multiple);
        pads = g.Node("Mod", new[] { g.Node("Sub", new[] { m, g.Node("Mod", new[] { sizes, m }) }), m });
        return g.Node("Add", new[] { sizes, pads });
    }

    /// <summary>A cyclic shift by <paramref name="shift"/> along <paramref name="axis"/> (torch.roll): the last
    /// <paramref name="shift"/> entries (the first -shift, when negative) moved to the front.</summary>
    internal static string Roll(OnnxGraph g, string x, long shift, long axis)
    {
        if (shift == 0) return x;
        var axes = g.Int64s("axis", axis);
        var tail = g.Node("Slice", new[] { x, g.Int64s("start", -shift), g.Int64s("end", long.MaxValue), axes });
        var head = g.Node("Slice", new[] { x, g.Int64s("start", 0), g.Int64s("end", -shift), axes });
        return g.Node("Concat", new[] { tail, head }, OnnxGraph.Int("axis", axis));
    }

    /// <summary>A 0-D int64 constant.</summary>
    internal static string Scalar(OnnxGraph g, string hint, long value) =>
        g.Node("Squeeze", new[] { g.Int64s(hint, value) });

    /// <summary>For each padded and shifted position along one axis of size <paramref name="size"/>, the index of the
    /// band it lies in: 0 before the last window, 1 in the last window but before the last <paramref name="shift"/>
    /// positions, 2 in those (Swin's three slices).</summary>
    internal static long[] Bands(long size, int window, int shift)
    {
        var bands = new long[size];
        for (long i = 0; i < size; i++) bands[i] = (i >= size - window ? 1 : 0)
            + (shift > 0 && i >= size - shift ? 1 : 0);
        return bands;
    }

    /// <summary>A random map for a check: N x C x H x W.</summary>
    internal static Tensor Map(params long[] shape)
    {
        var generator = new Generator(7);
        return randn(shape, ScalarType.Float64, generator: generator);
    }
}

/// <summary>Pads a map with zeros at the bottom and right to multiples of a size (Swin pads the image to the patch
/// size, the tokens to the window and odd maps before merging).</summary>
internal sealed class PadToMultipleOp : Op
{
    private readonly int multiple;

    public PadToMultipleOp(int multiple) : base($"PadToMultiple{multiple}") => this.multiple = multiple;

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        long h = x.shape[2], w = x.shape[3], ph = SwinWindows.PadFor(h, multiple), pw = SwinWindows.PadFor(w, multiple);
        if (ph == 0 && pw == 0) return x;
        if (route == 0) return F.pad(x, new[] { 0, pw, 0, ph });
        using var scope = NewDisposeScope();
        var wide = cat(new[] { x, zeros(new[] { x.shape[0], x.shape[1], h, pw }, x.dtype, x.device) }, 3);
        return cat(new[] { wide, zeros(new[] { x.shape[0], x.shape[1], ph, w + pw }, x.dtype, x.device) }, 2)
            .MoveToOuterDisposeScope();
    }

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs)
    {
        SwinWindows.PaddedSizes(g, g.ShapeSlice(inputs[0], 2, 4), multiple, out var pads);
        var all = g.Node("Concat", new[] { g.Int64s("zeros", 0, 0, 0, 0, 0, 0), pads }, OnnxGraph.Int("axis", 0));
        return g.Node("Pad", new[] { inputs[0], all });
    }

    internal override IReadOnlyList<Tensor[]> CheckInputs() => new[]
    {
        new[] { SwinWindows.Map(2, 3, 9, 13) }, new[] { SwinWindows.Map(1, 2, 8, 4) },
    };
}

/// <summary>
/// Swin's shifted-window partition of a map whose height and width are multiples of the window: to N x H x W x C,
/// rolled by -shift along both axes, cut into windows, N·nW x window² x C (window after window, row by row within
/// each, as transformers' <c>window_partition</c>).
/// </summary>
internal sealed class WindowPartitionOp : Op
{
    private readonly int window, shift;

    public WindowPartitionOp(int window, int shift) : base($"WindowPartition{window}Shift{shift}")
        => (this.window, this.shift) = (window, shift);

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        using var scope = NewDisposeScope();
        var hw = x.permute(0, 2, 3, 1);
        if (route == 1)
            return hw.reshape(n, h * w, c).index_select(1, Index(h, w, window, shift, x.device))
                .reshape(-1, window * window, c).MoveToOuterDisposeScope();
        if (shift > 0) hw = hw.roll(new long[] { -shift, -shift }, new long[] { 1, 2 });
        return hw.reshape(n, h / window, window, w / window, window, c).permute(0, 1, 3, 2, 4, 5)
            .reshape(-1, window * window, c).MoveToOuterDisposeScope();
    }

    /// <summary>For each output position (window by window, row by row), the flat index of its source pixel.</summary>
    internal static Tensor Index(long h, long w, int window, int shift, Device device) =>
        tensor(Order(h, w, window, shift), device: device);

    /// <summary>The flat source index of each position of the windows, window by window and row by row within
    /// each, after a roll by -<paramref name="shift"/>.</summary>
    internal static long[] Order(long h, long w, int window, int shift)
    {
        var index = new long[h * w];
        int k = 0;
        for (long a = 0; a < h / window; a++)
            for (long b = 0; b < w / window; b++)
                for (long i = 0; i < window; i++)
                    for (long j = 0; j < window; j++)
                        index[k++] = (a * window + i + shift) % h * w + (b * window + j + shift) % w;
        return index;
    }

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs)
    {
        var hw = g.Node("Transpose", new[] { inputs[0] }, OnnxGraph.Ints("perm", 0, 2, 3, 1));
        var rolled = SwinWindows.Roll(g, SwinWindows.Roll(g, hw, -shift, 1), -shift, 2);
        var counts = g.Node("Div", new[] { g.ShapeSlice(rolled, 1, 3), g.Int64s("window", window) });
        var w1 = g.Int64s("window", window);
        var shape = g.Node("Concat", new[]
        {
            g.ShapeSlice(rolled, 0, 1), g.Node("Slice", new[] { counts, g.Int64s("s", 0),
                g.Int64s("e", 1) }), w1, g.Node("Slice", new[] { counts, g.Int64s("s", 1), g.Int64s("e", 2) }), w1,
            g.ShapeSlice(rolled, 3, 4),
        }, OnnxGraph.Int("axis", 0));
        var six = g.Node("Transpose", new[] { g.Node("Reshape", new[] { rolled, shape }) },
            OnnxGraph.Ints("perm", 0, 1, 3, 2, 4, 5));
        var flat = g.Node("Concat", new[] { g.Int64s("windows", -1, (long)window * window),
            g.ShapeSlice(rolled, 3, 4) }, OnnxGraph.Int("axis", 0));
        return g.Node("Reshape", new[] { six, flat });
    }

    internal override IReadOnlyList<Tensor[]> CheckInputs() => new[]
    {
        new[] { SwinWindows.Map(2, 3, 8, 12) }, new[] { SwinWindows.Map(1, 5, 4, 4) },
    };
}

/// <summary>
/// The inverse of <see cref="WindowPartitionOp"/> for a map like the second input (N x ? x H x W, H and W any): the
/// windows back to the map padded to the window, rolled by +shift, cropped to H x W, as N x C x H x W.
/// </summary>
internal sealed class WindowMergeOp : Op
{
    private readonly int window, shift;

    public WindowMergeOp(int window, int shift) : base($"WindowMerge{window}Shift{shift}")
        => (this.window, this.shift) = (window, shift);

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs)
    {
        var (windows, like) = (inputs[0], inputs[1]);
        long n = like.shape[0], h = like.shape[2], w = like.shape[3], c = windows.shape[2];
        long hp = h + SwinWindows.PadFor(h, window), wp = w + SwinWindows.PadFor(w, window);
        using var scope = NewDisposeScope();
        Tensor map;
        if (route == 1)
        {
            // scatter back: the partition's index says where each window position came from
            var source = WindowPartitionOp.Index(hp, wp, window, shift, windows.device);
            var inverse = empty_like(source).index_put_(arange(hp * wp, device: windows.device), source);
            map = windows.reshape(n, hp * wp, c).index_select(1, inverse).reshape(n, hp, wp, c);
        }
        else
        {
            map = windows.reshape(n, hp / window, wp / window, window, window, c).permute(0, 1, 3, 2, 4, 5)
                .reshape(n, hp, wp, c);
            if (shift > 0) map = map.roll(new long[] { shift, shift }, new long[] { 1, 2 });
        }
        return map.slice(1, 0, h, 1).slice(2, 0, w, 1).permute(0, 3, 1, 2).MoveToOuterDisposeScope();
    }

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs)
    {
        var (windows, like) = (inputs[0], inputs[1]);
        var sizes = g.ShapeSlice(like, 2, 4);
        var padded = SwinWindows.PaddedSizes(g, sizes, window, out _);
        var counts = g.Node("Div", new[] { padded, g.Int64s("window", window) });
        var n = g.ShapeSlice(like, 0, 1);
        var c = g.ShapeSlice(windows, 2, 3);
        var six = g.Node("Reshape", new[] { windows, g.Node("Concat", new[] { n, counts,
            g.Int64s("window", window, window), c }, OnnxGraph.Int("axis", 0)) });
        var map = g.Node("Reshape",
            new[] { g.Node("Transpose", new[] { six }, OnnxGraph.Ints("perm", 0, 1, 3, 2, 4, 5)),
            g.Node("Concat", new[] { n, padded, c }, OnnxGraph.Int("axis", 0)) });
        var rolled = SwinWindows.Roll(g, SwinWindows.Roll(g, map, shift, 1), shift, 2);
        var cropped = g.Node("Slice", new[] { rolled, g.Int64s("start", 0, 0), sizes, g.Int64s("axes", 1, 2) });
        return g.Node("Transpose", new[] { cropped }, OnnxGraph.Ints("perm", 0, 3, 1, 2));
    }

    internal override IReadOnlyList<Tensor[]> CheckInputs() => new[]
    {
        new[] { SwinWindows.Map(2 * 6, 16, 3), SwinWindows.Map(2, 1, 7, 12) },
        new[] { SwinWindows.Map(1, 16, 5), SwinWindows.Map(1, 1, 4, 4) },
    };
}

/// <summary>
/// The additive mask of Swin's shifted windows for a padded map (N x ? x Hp x Wp): within a window, a position may
/// attend to another of the same band pair (see <see cref="SwinWindows.Bands"/>) and gets -100 for the others, as
/// transformers' <c>get_attn_mask</c>; N·nW x window⁴ (each window's window² x window² flattened, for <see
/// cref="RelativePositionBias"/>), in the map's type. Without a shift every value is 0. The result does not depend on
/// the map's values, only on its shape.
/// </summary>
internal sealed class WindowMaskOp : Op
{
    private readonly int window, shift;

    public WindowMaskOp(int window, int shift) : base($"WindowMask{window}Shift{shift}")
        => (this.window, this.shift) = (window, shift);

    private (long Hp, long Wp, ScalarType Type, string Device, Tensor Mask)? cached;
    private readonly object gate = new();

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        long n = x.shape[0], hp = x.shape[2], wp = x.shape[3], l = (long)window * window;
        var rows = SwinWindows.Bands(hp, window, shift);
        var columns = SwinWindows.Bands(wp, window, shift);
        if (route == 0)
        {
            // every step asks for the same mask: made once per size from the bands (no per-step scalars), then
            // repeated over the batch
            lock (gate)
            {
                var key = (hp, wp, x.dtype, x.device.ToString());
                if (cached is not { } c || (c.Hp, c.Wp, c.Type, c.Device) != key)
                {
                    cached?.Mask.Dispose();
                    var one = Ids(rows, columns, hp, wp);
                    var values = new float[one.Length / l * l * l];
                    for (long k = 0; k < one.Length / l; k++)
                        for (long p = 0; p < l; p++)
                            for (long q = 0; q < l; q++)
                                values[(k * l + p) * l + q] = one[k * l + p] == one[k * l + q] ? 0 : -100;
                    using var cpu = tensor(values).reshape(-1, l, l);
                    var mask = cpu.to(x.dtype, x.device).DetachFromDisposeScope();
                    cached = (hp, wp, x.dtype, x.device.ToString(), mask);
                }
                return cached.Value.Mask.repeat(n, 1, 1).reshape(-1, l * l);
            }
        }
        using var scope = NewDisposeScope();
        var region = tensor(rows, device: x.device).unsqueeze(1) * 3 + tensor(columns, device: x.device).unsqueeze(0);
        var windows = region.reshape(hp / window, window, wp / window, window).permute(0, 2, 1, 3).reshape(-1, l);
        var blocked = windows.unsqueeze(1).ne(windows.unsqueeze(2));
        var result = zeros(blocked.shape, x.dtype, x.device).masked_fill(blocked, -100.0);
        return result.repeat(n, 1, 1).reshape(-1, l * l).MoveToOuterDisposeScope();
    }

    /// <summary>The band pair of each position, window by window and row by row within each.</summary>
    private long[] Ids(long[] rows, long[] columns, long hp, long wp) => WindowPartitionOp.Order(hp, wp, window, 0)
        .Select(source => rows[source / wp] * 3 + columns[source % wp]).ToArray();

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs)
    {
        var x = inputs[0];
        string Bands(long axis)
        {
            var size = g.ShapeSlice(x, axis, axis + 1);
            var positions = g.Node("Range", new[] { SwinWindows.Scalar(g, "zero", 0), g.Node("Squeeze",
                new[] { size }), SwinWindows.Scalar(g, "one", 1) });
            string From(long back) => g.Node("Cast", new[] { g.Node("GreaterOrEqual", new[] { positions,
                g.Node("Sub", new[] { size, g.Int64s("back", back) }) }) }, OnnxGraph.Int("to", 7));
            return shift > 0 ? g.Node("Add", new[] { From(window), From(shift) }) : From(window);
        }
        var region = g.Node("Add", new[]
        {
            g.Node("Mul", new[] { g.Node("Unsqueeze", new[] { Bands(2), g.Int64s("axes", 1) }), g.Int64s("three", 3) }),
            g.Node("Unsqueeze", new[] { Bands(3), g.Int64s("axes", 0) }),
        });
        var counts = g.Node("Div", new[] { g.ShapeSlice(x, 2, 4), g.Int64s("window", window) });
        var four = g.Node("Concat", new[] { g.Node("Slice", new[] { counts, g.Int64s("s", 0), g.Int64s("e", 1) }),
            g.Int64s("window", window), g.Node("Slice", new[] { counts, g.Int64s("s", 1), g.Int64s("e", 2) }),
            g.Int64s("window", window) }, OnnxGraph.Int("axis", 0));
        var windows = g.Node("Reshape", new[] { g.Node("Transpose", new[] { g.Node("Reshape", new[] { region, four }) },
            OnnxGraph.Ints("perm", 0, 2, 1, 3)), g.Int64s("windows", -1, (long)window * window) });
        var differ = g.Node("Not", new[] { g.Node("Equal", new[] { g.Node("Unsqueeze", new[] { windows,
            g.Int64s("axes", 1) }), g.Node("Unsqueeze", new[] { windows, g.Int64s("axes", 2) }) }) });
        var hundreds = g.Node("Mul", new[] { g.Node("Cast", new[] { differ }, OnnxGraph.Int("to", 7)),
            g.Int64s("minus100", -100) });
        var tiles = g.Node("Concat", new[] { g.ShapeSlice(x, 0, 1), g.Int64s("ones", 1, 1) },
            OnnxGraph.Int("axis", 0));
        var repeated = g.Node("Tile", new[] { hundreds, tiles });
        return g.Node("Cast", new[] { g.Node("Reshape", new[] { repeated, g.Int64s("flat", -1,
            (long)window * window * window * window) }) }, OnnxGraph.Int("to", 1));
    }

    internal override IReadOnlyList<Tensor[]> CheckInputs() => new[]
    {
        new[] { SwinWindows.Map(2, 1, 8, 12) }, new[] { SwinWindows.Map(1, 1, 4, 4) },
    };
}

/// <summary>
/// Patch merging's gather: a map with even height and width to N x 4C x H/2 x W/2, the channel blocks the pixels at
/// (0, 0), (1, 0), (0, 1) and (1, 1) of each 2x2 cell (row, column), transformers' order.
/// </summary>
internal sealed class PatchMergeGatherOp : Op
{
    public static PatchMergeGatherOp Instance { get; } = new();

    private PatchMergeGatherOp() : base("PatchMergeGather") { }

    private static readonly (long Row, long Column)[] Order = { (0, 0), (1, 0), (0, 1), (1, 1) };

    internal override Tensor Compute(int route, IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        long n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        if (route == 0)
            return cat(Order.Select(o => x.slice(2, o.Row, h, 2).slice(3, o.Column, w, 2)).ToArray(), 1);
        using var scope = NewDisposeScope();
        return x.reshape(n, c, h / 2, 2, w / 2, 2).permute(0, 5, 3, 1, 2, 4).reshape(n, 4 * c, h / 2, w / 2)
            .MoveToOuterDisposeScope();
    }

    internal override string ExportOnnx(OnnxGraph g, IReadOnlyList<string> inputs) =>
        g.Node("Concat", Order.Select(o => g.Node("Slice", new[] { inputs[0], g.Int64s("start", o.Row, o.Column),
            g.Int64s("end", long.MaxValue, long.MaxValue), g.Int64s("axes", 2, 3), g.Int64s("steps", 2, 2) }))
            .ToArray(), OnnxGraph.Int("axis", 1));

    internal override IReadOnlyList<Tensor[]> CheckInputs() => new[]
    {
        new[] { SwinWindows.Map(2, 3, 6, 8) }, new[] { SwinWindows.Map(1, 5, 2, 2) },
    };
}

/// <summary>
/// Swin's relative position bias, added to an additive attention mask: a learned table of (2 window - 1)² x heads
/// values, one per relative offset and head, read out by a fixed index (window² x window²) into 1 x heads x window² x
/// window² and added to the mask (N' x window⁴, each window's window² x window² flattened), giving N' x heads x window²
/// x window². The table and index are transformers'
/// <c>relative_position_bias_table</c> and <c>relative_position_index</c> (the attention block names them so). Computes
/// in float32 (an attention mask of -100 and a bias); checked against float64, route 1 reading the table by a one-hot
/// product; exported as an Add of the gathered bias as a constant.
/// </summary>
internal sealed class RelativePositionBias : Layer, ICheckedComputation
{
#pragma warning disable IDE1006 // state-dict names
    private readonly Parameter table;
    private readonly Tensor index;
#pragma warning restore IDE1006
    private readonly int window;

    public RelativePositionBias(int window, int heads) : base(nameof(RelativePositionBias))
    {
        this.window = window;
        table = new Parameter(zeros((2 * window - 1) * (2 * window - 1), heads));
        index = RelativeIndex(window);
        register_parameter("table", table);
        register_buffer("index", index);
        using var _ = no_grad();
        nn.init.normal_(table, 0, 0.02);
    }

    /// <summary>The table, (2 window - 1)² x heads.</summary>
    public Parameter Table => table;

    /// <summary>The index, window² x window² (int64).</summary>
    public Tensor Index => index;

    /// <summary>transformers' index: for positions p and q of a window, (dy + w - 1)(2w - 1) + dx + w - 1 with (dy, dx)
    /// = p - q.</summary>
    internal static Tensor RelativeIndex(int window)
    {
        long l = (long)window * window;
        var values = new long[l * l];
        for (long p = 0; p < l; p++)
            for (long q = 0; q < l; q++)
                values[p * l + q] = (p / window - q / window + window - 1) * (2 * window - 1)
                    + p % window - q % window + window - 1;
        return tensor(values).reshape(l, l);
    }

    private static Tensor Apply(int route, Tensor mask, Tensor table, Tensor index)
    {
        long l = index.shape[0];
        using var scope = NewDisposeScope();
        var flat = index.reshape(-1).to(table.device);
        var rows = route == 0 ? table.index_select(0, flat)
            : F.one_hot(flat, table.shape[0]).to(table.dtype).matmul(table);
        var bias = rows.reshape(l, l, -1).permute(2, 0, 1).unsqueeze(0);
        // no temporary alpha: Scalars
        return mask.reshape(-1, 1, l, l).add(bias, Scalars.One).MoveToOuterDisposeScope();
    }

    protected override Tensor Compute(Tensor input)
    {
        if (input.dtype == ScalarType.Float32) return Apply(Route, input, table, index);
        using var scope = NewDisposeScope();
        return Apply(Route, input.to(ScalarType.Float32), table, index).MoveToOuterDisposeScope();
    }

    internal override string ExportOnnx(OnnxGraph g, string input, string path)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long l = index.shape[0];
        var bias = Apply(0, zeros(1, l * l), table, index);
        var mask = g.Node("Reshape", new[] { input, g.Int64s("mask", -1, 1, l, l) });
        return g.Node("Add", new[] { mask, g.Initializer(path + ".bias", bias) });
    }

    internal override LayerSummary Summarise(string path, Tensor input, Tensor output) =>
        ShapeRow(path, "RelativePositionBias", output);

    internal override ICheckedComputation Checkable => this;
    IReadOnlyList<Tensor> ICheckedComputation.Parameters => new Tensor[] { table };
    string ICheckedComputation.Hyperparameters => $"window {window}";

    Tensor ICheckedComputation.Apply(int route, IReadOnlyList<Tensor> inputs, IReadOnlyList<Tensor> p, bool training)
        => Apply(route, inputs[0], p[0], index);
}
